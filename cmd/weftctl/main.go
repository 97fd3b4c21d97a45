// Command weftctl is the operator's view of the mesh:
//
//	weftctl status [-n NS]     route and AuthorizationPolicy statuses written by weft, agents, enrolled pods
//	weftctl check              preflight of this host's kernel (run on a node)
//	weftctl dump --node NODE   the policy in force on a node (through its agent pod)
//	weftctl authz --from SA.NS --to POD.NS --port P [--method M --path P]
//	                           which AuthorizationPolicy decides a request
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/agent/datapath"
	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/resolve"
)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "status":
		err = status(os.Args[2:], os.Stdout)
	case "check":
		rep := datapath.Preflight("")
		fmt.Print(rep.Format())
		if !rep.OK() {
			os.Exit(1)
		}
	case "dump":
		err = dump(os.Args[2:])
	case "authz":
		err = authzCmd(os.Args[2:], os.Stdout)
	case "explain":
		err = explainCmd(os.Args[2:], os.Stdout)
	case "stat":
		err = statCmd(os.Args[2:], os.Stdout)
	case "dashboard":
		err = dashboardCmd(os.Args[2:], os.Stdout)
	case "-h", "--help", "help":
		usage(os.Stdout)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "weftctl:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  weftctl status [--kubeconfig F] [-n NS]   route and AuthorizationPolicy statuses, agents, enrolled pods
  weftctl check                             preflight this host (kernel, BTF, cgroup v2, BPF hooks)
  weftctl dump --node NODE [--kubeconfig F] policy in force on NODE (JSON, via its agent pod)
  weftctl explain --from POD[.NS] URL [-H 'NAME: VALUE']... [--method M]
                                            where a request from POD would go and why: routes in
                                            precedence order, the deciding rule, filters, backends
                                            with weights, session persistence, endpoints (from the
                                            policy in force on POD's node, with the proxy's code)
  weftctl stat [-n NS] [--route NS/NAME] [--from-namespace NS] [--window 1m] [--watch]
                                            requests per second, success rate, p50/p99 per route and
                                            backend over the last minute, from every agent
  weftctl dashboard [--addr 127.0.0.1:7070] a live canary view in the browser: each backend's share,
                                            success rate and latency, and the route's conditions
  weftctl authz --from SA.NS|SPIFFE-ID --to POD.NS --port P [--method M] [--path P] [--header N:V]
                                            which AuthorizationPolicy decides a caller's connection
                                            or request to a pod, and why (the agent's decision code)
`)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		rules.ExplicitPath = kubeconfig
	}
	rc, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, nil).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	return rc, nil
}

func clients(kubeconfig string) (kubernetes.Interface, gwclient.Interface, error) {
	rc, err := restConfig(kubeconfig)
	if err != nil {
		return nil, nil, err
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	gc, err := gwclient.NewForConfig(rc)
	if err != nil {
		return nil, nil, err
	}
	return kc, gc, nil
}

// row is one parentRef's verdict.
type row struct {
	kind, ns, name, parent, accepted, resolved, message string
}

func status(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (default: KUBECONFIG or ~/.kube/config)")
	ns := fs.String("n", "", "namespace (default: all)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	kc, gc, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rows []row
	hr, err := gc.GatewayV1().HTTPRoutes(*ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list HTTPRoutes: %w", err)
	}
	for _, r := range hr.Items {
		rows = append(rows, parentRows("HTTPRoute", r.ObjectMeta, r.Status.Parents)...)
	}
	gr, err := gc.GatewayV1().GRPCRoutes(*ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list GRPCRoutes: %w", err)
	}
	for _, r := range gr.Items {
		rows = append(rows, parentRows("GRPCRoute", r.ObjectMeta, r.Status.Parents)...)
	}
	if tr, err := gc.GatewayV1().TCPRoutes(*ns).List(ctx, metav1.ListOptions{}); err == nil {
		for _, r := range tr.Items {
			rows = append(rows, parentRows("TCPRoute", r.ObjectMeta, r.Status.Parents)...)
		}
	}
	rows = append(rows, authzRows(ctx, *kubeconfig, *ns)...)
	printRoutes(w, rows)

	agents, err := kc.CoreV1().Pods(mesh.SystemNamespace).List(ctx, metav1.ListOptions{LabelSelector: mesh.LabelPartOf + "=" + mesh.PartOf})
	if err != nil {
		return fmt.Errorf("list weft pods: %w", err)
	}
	pods, err := kc.CoreV1().Pods(*ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	enrolled := map[string]int{}
	for _, p := range pods.Items {
		for _, c := range p.Status.Conditions {
			if c.Type == mesh.ConditionEnrolled && c.Status == corev1.ConditionTrue {
				enrolled[p.Spec.NodeName]++
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nWEFT POD\tNODE\tREADY\tENROLLED PODS ON NODE")
	for _, p := range agents.Items {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\n", p.Name, p.Spec.NodeName, podReady(&p), enrolled[p.Spec.NodeName])
	}
	return tw.Flush()
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func parentRows(kind string, m metav1.ObjectMeta, parents []gwv1.RouteParentStatus) []row {
	var out []row
	for _, p := range parents {
		if p.ControllerName != resolve.ControllerName && p.ControllerName != mesh.GatewayControllerName {
			continue
		}
		r := row{kind: kind, ns: m.Namespace, name: m.Name, parent: parentName(m.Namespace, p.ParentRef)}
		var msgs []string
		for _, c := range p.Conditions {
			v := string(c.Status)
			if c.ObservedGeneration != m.Generation {
				v += " (stale)"
			}
			switch c.Type {
			case string(gwv1.RouteConditionAccepted):
				r.accepted = v + "/" + c.Reason
			case string(gwv1.RouteConditionResolvedRefs):
				r.resolved = v + "/" + c.Reason
			}
			if c.Status != metav1.ConditionTrue && c.Message != "" {
				msgs = append(msgs, c.Message)
			}
		}
		r.message = strings.Join(msgs, "; ")
		out = append(out, r)
	}
	if len(out) == 0 {
		out = append(out, row{kind: kind, ns: m.Namespace, name: m.Name, parent: "-", accepted: "no status from weft", resolved: "-"})
	}
	return out
}

func parentName(routeNS string, ref gwv1.ParentReference) string {
	ns := routeNS
	if ref.Namespace != nil {
		ns = string(*ref.Namespace)
	}
	s := "svc/" + ns + "/" + string(ref.Name)
	if ref.Kind == nil || *ref.Kind == "Gateway" {
		s = "gw/" + ns + "/" + string(ref.Name)
	}
	if ref.Port != nil {
		s += fmt.Sprintf(":%d", *ref.Port)
	}
	if ref.SectionName != nil {
		s += "#" + string(*ref.SectionName)
	}
	return s
}

func printRoutes(w io.Writer, rows []row) {
	sort.Slice(rows, func(i, j int) bool {
		a, b := rows[i], rows[j]
		return a.kind+a.ns+a.name+a.parent < b.kind+b.ns+b.name+b.parent
	})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tPARENT\tACCEPTED\tRESOLVEDREFS\tWHY")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.kind, r.ns, r.name, r.parent, r.accepted, r.resolved, r.message)
	}
	tw.Flush()
}

// dump prints a node's policy by running `weft-agent dump` in that node's
// agent pod (nothing about the policy is served on the network).
func dump(args []string) error {
	fs := flag.NewFlagSet("dump", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	node := fs.String("node", "", "node name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *node == "" {
		return errors.New("--node is required")
	}
	kc, _, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := agentDump(ctx, kc, *kubeconfig, *node)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

// agentDump returns `weft-agent dump` of the agent pod on node: the policy
// in force there, as JSON.
func agentDump(ctx context.Context, kc kubernetes.Interface, kubeconfig, node string) ([]byte, error) {
	pods, err := kc.CoreV1().Pods(mesh.SystemNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: mesh.LabelName + "=" + mesh.AgentName, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return nil, fmt.Errorf("find agent on %s: %w", node, err)
	}
	if len(pods.Items) == 0 {
		return nil, fmt.Errorf("no weft-agent pod on node %s", node)
	}
	kargs := []string{"exec", "-n", mesh.SystemNamespace, pods.Items[0].Name, "-c", "agent", "--", "weft-agent", "dump", "--node", node}
	if kubeconfig != "" {
		kargs = append([]string{"--kubeconfig", kubeconfig}, kargs...)
	}
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, "kubectl", kargs...)
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		return nil, fmt.Errorf("weft-agent dump on %s: %w: %s", node, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
