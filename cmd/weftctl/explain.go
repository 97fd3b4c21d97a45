package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/agent/proxy/explain"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// explainQuery is a parsed `weftctl explain` command line.
type explainQuery struct {
	kubeconfig string
	namespace  string
	pod        string
	q          explain.Query
}

// parseExplain reads `--from POD[.NS] URL [-H 'K: V']... [--method M]`;
// flags may come before or after the URL.
func parseExplain(args []string) (explainQuery, error) {
	var e explainQuery
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.StringVar(&e.kubeconfig, "kubeconfig", "", "kubeconfig")
	from := fs.String("from", "", "calling pod: POD or POD.NAMESPACE (default namespace: default)")
	method := fs.String("method", http.MethodGet, "HTTP method")
	var headers headerFlags
	fs.Var(&headers, "H", "request header 'NAME: VALUE' (repeatable)")
	fs.Var(&headers, "header", "request header 'NAME: VALUE' (repeatable)")
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			return e, err
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(rest) != 1 {
		return e, errors.New("give one URL: weftctl explain --from POD[.NS] http://SERVICE[.NS][:PORT]/PATH")
	}
	if *from == "" {
		return e, errors.New("--from POD[.NS] is required: routing depends on the caller's namespace and node")
	}
	e.pod, e.namespace, _ = strings.Cut(*from, ".")
	if e.namespace == "" {
		e.namespace = "default"
	}
	raw := rest[0]
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return e, fmt.Errorf("URL: %w", err)
	}
	if u.Scheme != "http" {
		return e, fmt.Errorf("URL scheme %q: the mesh routes plaintext HTTP from the pod (http://)", u.Scheme)
	}
	h := http.Header{}
	for _, kv := range headers {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return e, fmt.Errorf("header %q: want 'NAME: VALUE'", kv)
		}
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	e.q = explain.Query{CallerNamespace: e.namespace, CallerPod: e.pod, Method: strings.ToUpper(*method), URL: u, Header: h}
	return e, nil
}

// explainCmd explains a request from a pod with the policy in force on the
// pod's node, read from that node's agent.
func explainCmd(args []string, w io.Writer) error {
	e, err := parseExplain(args)
	if err != nil {
		return err
	}
	kc, _, err := clients(e.kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pod, err := kc.CoreV1().Pods(e.namespace).Get(ctx, e.pod, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	if pod.Spec.NodeName == "" {
		return fmt.Errorf("pod %s/%s is not scheduled on a node yet", e.namespace, e.pod)
	}
	e.q.Node = pod.Spec.NodeName
	out, err := agentDump(ctx, kc, e.kubeconfig, pod.Spec.NodeName)
	if err != nil {
		return err
	}
	snap := &weftv1.PolicySnapshot{}
	if err := protojson.Unmarshal(out, snap); err != nil {
		return fmt.Errorf("policy of node %s: %w", pod.Spec.NodeName, err)
	}
	if snap.GetPolicy() == nil {
		return fmt.Errorf("node %s has no policy in force yet", pod.Spec.NodeName)
	}
	fmt.Fprintf(w, "%-9s %d (policy in force on node %s)\n", "version", snap.GetVersion(), pod.Spec.NodeName)
	return explain.Write(w, snap.GetPolicy(), e.q)
}
