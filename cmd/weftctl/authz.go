package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/agent/proxy/authz"
	"github.com/weft-mesh/weft/api/mesh"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/resolve"
)

// authzQuery is one "may this caller reach this pod" question.
type authzQuery struct {
	from      spiffeid.ID
	namespace string // of the target pod
	pod       string
	port      uint32
	// request, when set, is decided as an HTTP request; else the
	// connection is
	request *authz.Request
}

// authzCmd answers which policy decides a caller -> workload request: it
// reads the target pod, its namespace's AuthorizationPolicies and the
// ServiceAccounts, resolves them with the controller's resolver and decides
// with the agent's authz package, the code that enforces it.
func authzCmd(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("authz", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	from := fs.String("from", "", "caller: SERVICEACCOUNT.NAMESPACE or a SPIFFE ID")
	to := fs.String("to", "", "target pod: POD.NAMESPACE")
	port := fs.Uint("port", 0, "destination port of the pod")
	method := fs.String("method", "", "HTTP method (with --path: decide a request at Application level)")
	path := fs.String("path", "", "HTTP request path and query")
	var headers headerFlags
	fs.Var(&headers, "header", "request header NAME:VALUE (repeatable)")
	trustDomain := fs.String("trust-domain", mesh.DefaultTrustDomain, "the mesh's trust domain")
	if err := fs.Parse(args); err != nil {
		return err
	}
	td, err := mesh.ParseTrustDomain(*trustDomain)
	if err != nil {
		return err
	}
	q, err := parseAuthzQuery(td, *from, *to, *port, *method, *path, headers)
	if err != nil {
		return err
	}
	rc, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, err := authzInput(ctx, kc, dc, q)
	if err != nil {
		return err
	}
	in.Options.TrustDomain = td.Name()
	return explainAuthz(w, in, q)
}

type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ",") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

func parseAuthzQuery(td spiffeid.TrustDomain, from, to string, port uint, method, path string, headers []string) (authzQuery, error) {
	var q authzQuery
	switch {
	case strings.HasPrefix(from, "spiffe://"):
		id, err := spiffeid.FromString(from)
		if err != nil {
			return q, fmt.Errorf("--from: %w", err)
		}
		q.from = id
	default:
		sa, ns, ok := strings.Cut(from, ".")
		if !ok {
			return q, errors.New("--from is SERVICEACCOUNT.NAMESPACE or a SPIFFE ID")
		}
		id, err := mesh.WorkloadID(td, ns, sa)
		if err != nil {
			return q, fmt.Errorf("--from: %w", err)
		}
		q.from = id
	}
	var ok bool
	if q.pod, q.namespace, ok = strings.Cut(to, "."); !ok || q.pod == "" || q.namespace == "" {
		return q, errors.New("--to is POD.NAMESPACE")
	}
	if port < 1 || port > 65535 {
		return q, errors.New("--port is 1-65535")
	}
	q.port = uint32(port)
	if method != "" || path != "" || len(headers) > 0 {
		r := &authz.Request{Method: method, Path: path, Header: http.Header{}}
		if r.Method == "" {
			r.Method = http.MethodGet
		}
		if r.Path == "" {
			r.Path = "/"
		}
		for _, h := range headers {
			k, v, ok := strings.Cut(h, ":")
			if !ok {
				return q, fmt.Errorf("--header %q is not NAME:VALUE", h)
			}
			r.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		}
		q.request = r
	}
	return q, nil
}

// authzInput reads what resolution needs to place the target's policies.
func authzInput(ctx context.Context, kc kubernetes.Interface, dc dynamic.Interface, q authzQuery) (resolve.Input, error) {
	var in resolve.Input
	pod, err := kc.CoreV1().Pods(q.namespace).Get(ctx, q.pod, metav1.GetOptions{})
	if err != nil {
		return in, fmt.Errorf("target pod: %w", err)
	}
	ns, err := kc.CoreV1().Namespaces().Get(ctx, q.namespace, metav1.GetOptions{})
	if err != nil {
		return in, fmt.Errorf("target namespace: %w", err)
	}
	in.Namespaces = []corev1.Namespace{*ns}
	in.Pods = []*resolve.Pod{resolve.PodOf(pod)}
	if pod.Spec.NodeName != "" {
		in.Nodes = []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: pod.Spec.NodeName}}}
	}
	sas, err := kc.CoreV1().ServiceAccounts("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, fmt.Errorf("list service accounts: %w", err)
	}
	in.ServiceAccounts = sas.Items
	list, err := dc.Resource(policyv1a1.GroupVersionResource).Namespace(q.namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return in, fmt.Errorf("list AuthorizationPolicies: %w", err)
	}
	for i := range list.Items {
		p, err := policyv1a1.FromUnstructured(&list.Items[i])
		if err != nil {
			return in, fmt.Errorf("AuthorizationPolicy %s: %w", list.Items[i].GetName(), err)
		}
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, *p)
	}
	return in, nil
}

// explainAuthz resolves in as the controller does and decides q as the
// target's node does.
func explainAuthz(w io.Writer, in resolve.Input, q authzQuery) error {
	out := resolve.Resolve(in)
	target := q.namespace + "/" + q.pod
	fmt.Fprintf(w, "caller:   %s\ntarget:   %s port %d\n", q.from, target, q.port)
	for _, s := range out.AuthzStatuses {
		for _, c := range s.Conditions {
			if c.Type == policyv1a1.ConditionAccepted && c.Status != metav1.ConditionTrue {
				fmt.Fprintf(w, "note:     %s/%s is not accepted (%s: %s); the controller keeps its last accepted generation in force, if it had one, which this check does not see\n", s.Namespace, s.Name, c.Reason, c.Message)
			}
		}
	}
	var node string
	if len(in.Pods) == 1 {
		node = in.Pods[0].NodeName
	}
	np := out.Nodes[node]
	var self *weftv1.Workload
	for _, wl := range np.GetWorkloads() {
		if wl.GetNamespace()+"/"+wl.GetName() == target {
			self = wl
		}
	}
	if self == nil {
		fmt.Fprintln(w, "decision: ALLOWED: the pod is not in the mesh (not enrolled, or no IP yet): Weft enforces nothing for it")
		return nil
	}
	fmt.Fprintf(w, "mtls:     %s\n", mtlsMode(self, out.InvalidMTLS))
	tab, err := authz.Compile(np, spiffeid.RequireTrustDomainFromString(np.GetTrustDomain()))
	if err != nil {
		return fmt.Errorf("the node would refuse this policy: %w", err)
	}
	wl := tab.For(target)
	var names []string
	for _, a := range np.GetAuthz() {
		for _, x := range a.GetWorkloads() {
			if x == target {
				level := "Network"
				if a.GetApplication() {
					level = "Application"
				}
				names = append(names, fmt.Sprintf("%s (%s, %s)", a.GetName(), strings.TrimPrefix(a.GetAction().String(), "AUTHZ_ACTION_"), level))
			}
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(w, "policies: %s\n", strings.Join(names, ", "))
	}
	d := wl.Connection(q.from, q.port)
	switch {
	case d.NeedL7 && q.request == nil:
		fmt.Fprintf(w, "decision: PER REQUEST: %s; give --method, --path or --header to decide one\n", d.Reason)
		return nil
	case d.NeedL7 || (q.request != nil && d.Allowed):
		fmt.Fprintf(w, "request:  %s %s\n", q.request.Method, q.request.Path)
		d = wl.Request(context.Background(), q.from, q.port, q.request)
	}
	verdict := "DENIED"
	if d.Allowed {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(w, "decision: %s: %s\n", verdict, d.Reason)
	return nil
}

// mtlsMode describes a workload's mTLS mode (annotation weft.dev/mtls).
func mtlsMode(wl *weftv1.Workload, invalid []string) string {
	if !wl.GetMtlsStrict() {
		return mesh.MTLSPermissive + " (plaintext from outside the mesh is accepted)"
	}
	mode := mesh.MTLSStrict + " (plaintext from outside the mesh is refused; only the node proxy's inbound and the kubelet reach the pod)"
	prefix := "pod " + wl.GetNamespace() + "/" + wl.GetName() + ": "
	for _, m := range invalid {
		if rest, ok := strings.CutPrefix(m, prefix); ok {
			mode += "; " + rest
		}
	}
	return mode
}

// authzRows are the AuthorizationPolicies' verdicts for weftctl status
// (none when the CRD is not installed).
func authzRows(ctx context.Context, kubeconfig, ns string) []row {
	rc, err := restConfig(kubeconfig)
	if err != nil {
		return nil
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil
	}
	list, err := dc.Resource(policyv1a1.GroupVersionResource).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	var rows []row
	for i := range list.Items {
		p, err := policyv1a1.FromUnstructured(&list.Items[i])
		if err != nil {
			continue
		}
		rows = append(rows, authzRow(p))
	}
	return rows
}

func authzRow(p *policyv1a1.AuthorizationPolicy) row {
	r := row{kind: policyv1a1.Kind, ns: p.Namespace, name: p.Name, parent: "-", accepted: "no status from weft", resolved: "-"}
	for _, c := range p.Status.Conditions {
		if c.Type != policyv1a1.ConditionAccepted {
			continue
		}
		r.accepted = string(c.Status) + "/" + c.Reason
		if c.ObservedGeneration != p.Generation {
			r.accepted = string(c.Status) + " (stale)/" + c.Reason
		}
		if c.Status != metav1.ConditionTrue {
			r.message = c.Message
		}
	}
	return r
}
