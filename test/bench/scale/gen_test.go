package scale

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	"github.com/weft-mesh/weft/controller/resolve"
)

// The generated policies are accepted when Load's service accounts exist
// (and not when they do not), select their Service's pods and no other's,
// and reach the nodes PolicyNodes names.
func TestPolicy(t *testing.T) {
	sc := Scale{Nodes: 7, Namespaces: 3, Services: 20, Endpoints: 4, Routes: 1, Policies: true}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	loaded := func(ns, name string) bool {
		return ns == sc.namespace(5) && slices.Contains([]string{"caller-0", "caller-1"}[:maxCallers], name)
	}
	for callers := 1; callers <= maxCallers; callers++ {
		p, err := policyv1a1.FromUnstructured(sc.Policy(5, callers, 42))
		if err != nil {
			t.Fatal(err)
		}
		if p.Namespace != sc.namespace(5) || p.Annotations[SeqAnnotation] != "42" || len(p.Spec.Rules[0].Sources) != callers {
			t.Fatalf("policy %+v", p)
		}
		c, cond := resolve.CompileAuthz(p, td, loaded)
		if c == nil || cond.Status != metav1.ConditionTrue {
			t.Fatalf("%d callers: not accepted: %+v", callers, cond)
		}
		if c, _ := resolve.CompileAuthz(p, td, func(string, string) bool { return false }); c != nil {
			t.Fatalf("%d callers: accepted with the service accounts missing", callers)
		}
		selects := func(svc, e int) bool {
			set := labels.Set(sc.podObject(svc, e).Labels)
			return slices.ContainsFunc(c.Selectors, func(s labels.Selector) bool { return s.Matches(set) })
		}
		var nodes []string
		for e := range sc.Endpoints {
			if !selects(5, e) || selects(6, e) {
				t.Fatalf("endpoint %d: the policy of Service 5 selects its pod %v, Service 6's %v", e, selects(5, e), selects(6, e))
			}
			_, node, _ := sc.pod(5, e)
			nodes = append(nodes, node)
		}
		if got := sc.PolicyNodes(5); !slices.Equal(got, nodes) {
			t.Fatalf("policy nodes %v, want %v", got, nodes)
		}
	}
}
