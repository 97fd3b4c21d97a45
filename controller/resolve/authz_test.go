package resolve

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/agent/proxy/authz"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// The two policies, resolved by the controller and decided by the
// agent's code: what the user wrote is what the destination enforces.
func TestAuthzExamplesEndToEnd(t *testing.T) {
	in, err := loadCase("testdata/authz-examples.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := Resolve(in)
	checkAgentAccepts(t, out)
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	id := func(ns, sa string) spiffeid.ID { return spiffeid.RequireFromSegments(td, "ns", ns, "sa", sa) }
	for node, pod := range map[string]string{"lab-node-1": "shop/cart-0", "lab-node-2": "shop/cart-1"} {
		tab, err := authz.Compile(out.Nodes[node], td)
		if err != nil {
			t.Fatal(err)
		}
		w := tab.For(pod)
		if w == nil {
			t.Fatalf("%s: no policy selects %s", node, pod)
		}
		ctx := context.Background()
		req := func(peer spiffeid.ID, port uint32, method, path string) authz.Decision {
			return w.Request(ctx, peer, port, &authz.Request{Method: method, Path: path})
		}
		if d := req(id("shop", "frontend"), 8080, "POST", "/admin/x"); d.Allowed || d.Policy != "shop/cart-no-admin-writes" {
			t.Errorf("%s: POST /admin/x from frontend: %+v", node, d)
		}
		if d := req(id("shop", "frontend"), 8080, "GET", "/admin/x"); !d.Allowed || d.Policy != "shop/cart-callers" {
			t.Errorf("%s: GET /admin/x from frontend: %+v", node, d)
		}
		if d := req(id("shop", "frontend"), 9090, "GET", "/"); d.Allowed {
			t.Errorf("%s: port 9090: %+v", node, d)
		}
		if d := w.Connection(id("shop", "checkout"), 8080); d.Allowed || d.NeedL7 {
			t.Errorf("%s: another account connects: %+v", node, d)
		}
		if d := w.Connection(id("shop", "frontend"), 8080); !d.NeedL7 {
			t.Errorf("%s: frontend's connection is not decided per request: %+v", node, d)
		}
	}
	if tab, _ := authz.Compile(out.Nodes["lab-node-1"], td); tab.For("shop/frontend-0") != nil || tab.For("web/web-0") != nil {
		t.Error("a pod the selectors do not select has policies")
	}
}

// A policy that stops compiling keeps its last accepted generation in
// force, and says so; deleted, it stops applying.
func TestAuthzInvalidUpdateKeepsTheLastAccepted(t *testing.T) {
	in, err := loadCase("testdata/authz-examples.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	first := Resolve(in)
	want := first.Nodes["lab-node-1"].Authz

	in.AuthzInForce = first.AuthzInForce
	bad := &in.AuthorizationPolicies[0]
	bad.Generation = 7
	bad.Spec.Rules[0].Sources[0].ServiceAccount.Name = "nobody"
	second := Resolve(in)
	got := second.Nodes["lab-node-1"].Authz
	if len(got) != len(want) || !equalAuthz(got[0], want[0]) {
		t.Fatalf("in force after an invalid update:\n%v\nwant\n%v", got, want)
	}
	c := second.AuthzStatuses[0].Conditions[0]
	if c.Status != "False" || c.Reason != policyv1a1.ReasonUnknownServiceAccount || c.ObservedGeneration != 7 || !strings.Contains(c.Message, "generation 1 stays in force") {
		t.Fatalf("status = %+v", c)
	}
	// the memory carries on to the round after
	in.AuthzInForce = second.AuthzInForce
	if third := Resolve(in); !equalAuthz(third.Nodes["lab-node-1"].Authz[0], want[0]) {
		t.Fatal("the last accepted generation was forgotten")
	}
	// deleted: gone from every node
	in.AuthorizationPolicies = in.AuthorizationPolicies[1:]
	for n, p := range Resolve(in).Nodes {
		for _, a := range p.Authz {
			if a.Name == "shop/cart-callers" {
				t.Fatalf("node %s still enforces a deleted policy", n)
			}
		}
	}
}

func equalAuthz(a, b *weftv1.AuthzPolicy) bool { return a.String() == b.String() }

// Without this controller's memory (a restart, another replica), the
// accepted spec recorded in status.inForce stays in force, even when a
// ServiceAccount it names is gone.
func TestAuthzInvalidUpdateKeepsTheRecordedSpec(t *testing.T) {
	in, err := loadCase("testdata/authz-examples.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	first := Resolve(in)
	want := first.Nodes["lab-node-1"].Authz
	if st := first.AuthzStatuses[0]; st.InForce == nil || st.InForce.Generation != 1 {
		t.Fatalf("status to write: %+v", st)
	}
	for i := range in.AuthorizationPolicies {
		in.AuthorizationPolicies[i].Status.InForce = first.AuthzStatuses[i].InForce
	}
	p := &in.AuthorizationPolicies[0]
	p.Generation = 2
	p.Spec.Rules = []policyv1a1.AuthorizationRule{{Sources: []policyv1a1.AuthorizationSource{{Type: "Group"}}}}
	in.ServiceAccounts = in.ServiceAccounts[1:] // shop/frontend is gone too
	out := Resolve(in)
	if got := out.Nodes["lab-node-1"].Authz; len(got) != len(want) || !equalAuthz(got[0], want[0]) {
		t.Fatalf("in force:\n%v\nwant\n%v", got, want)
	}
	st := out.AuthzStatuses[0]
	if st.InForce == nil || st.InForce.Generation != 1 || st.Conditions[0].Reason != policyv1a1.ReasonInvalidSource ||
		!strings.Contains(st.Conditions[0].Message, "generation 1 stays in force") {
		t.Fatalf("status: %+v", st)
	}
	// a record newer than the policy (not ours) is not trusted
	p.Status.InForce.Generation = 5
	if got := Resolve(in).Nodes["lab-node-1"].Authz; len(got) != 1 || got[0].Name != "shop/cart-no-admin-writes" {
		t.Fatalf("a record from a later generation was used: %v", got)
	}
}

// FuzzCompileAuthz compiles arbitrary AuthorizationPolicies (YAML or JSON;
// the seeds are the golden cases' policies): CompileAuthz never panics,
// and what it accepts the agent compiles and can decide with.
func FuzzCompileAuthz(f *testing.F) {
	for _, c := range []string{"authz-examples", "authz-sources", "authz-invalid"} {
		b, err := expandCase("testdata/" + c + ".in.yaml")
		if err != nil {
			f.Fatal(err)
		}
		for _, doc := range docSep.Split(string(b), -1) {
			if strings.Contains(doc, "kind: AuthorizationPolicy") {
				f.Add([]byte(doc))
			}
		}
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	f.Fuzz(func(t *testing.T, data []byte) {
		var p policyv1a1.AuthorizationPolicy
		if yaml.Unmarshal(data, &p) != nil {
			return
		}
		p.Namespace = "shop"
		c, cond := CompileAuthz(&p, td, func(ns, name string) bool { return name != "nobody" })
		if c == nil {
			if cond.Status != "False" || cond.Reason == "" || cond.Message == "" {
				t.Fatalf("refused without saying why: %+v", cond)
			}
			return
		}
		if cond.Status != "True" {
			t.Fatalf("accepted with %+v", cond)
		}
		a := c.Policy
		a.Workloads = []string{"shop/cart-0"}
		pol := &weftv1.NodePolicy{TrustDomain: "cluster.local", Authz: []*weftv1.AuthzPolicy{a},
			Workloads: []*weftv1.Workload{{Namespace: "shop", Name: "cart-0", Identity: "spiffe://cluster.local/ns/shop/sa/cart"}}}
		if err := pol.Validate(); err != nil {
			t.Fatalf("the agent NACKs an accepted policy: %v", err)
		}
		tab, err := authz.Compile(pol, td)
		if err != nil {
			t.Fatalf("the agent does not compile an accepted policy: %v", err)
		}
		w := tab.For("shop/cart-0")
		peer := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/frontend")
		w.Connection(peer, 8080)
		w.Request(context.Background(), peer, 8080, &authz.Request{Method: "POST", Path: "/admin"})
	})
}

// Authorization policies' regular expressions share a bounded part of the
// node budget: the ones that would go over are not accepted, and no node
// policy goes over the budget the agent enforces.
func TestAuthzRegexBudget(t *testing.T) {
	in, err := loadCase("testdata/authz-examples.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	in.AuthorizationPolicies = nil
	size, err := weftv1.RegexProgramSize("/p0000/[a-z]{1,20}")
	if err != nil {
		t.Fatal(err)
	}
	perPolicy := weftv1.DefaultLimits.MaxRouteRegexProgramSize / size
	n := AuthzRegexBudget/(perPolicy*size) + 2
	for i := range n {
		var matches []gwv1.HTTPRouteMatch
		for j := range perPolicy {
			matches = append(matches, gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{
				Type: ptrTo(gwv1.PathMatchRegularExpression), Value: ptrTo(fmt.Sprintf("/p%02d%02d/[a-z]{1,20}", i, j))}})
		}
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, policyv1a1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: fmt.Sprintf("p%02d", i), Generation: 1, UID: types.UID(fmt.Sprint(i))},
			Spec: policyv1a1.AuthorizationPolicySpec{
				TargetRefs: []policyv1a1.PolicyTargetReferenceWithLabelSelectors{{Kind: "Pod", Selector: &metav1.LabelSelector{}}},
				Action:     policyv1a1.ActionDeny, EnforcementLevel: policyv1a1.LevelApplication,
				Rules: rulesOf(matches),
			},
		})
	}
	out := Resolve(in)
	checkAgentAccepts(t, out)
	accepted := 0
	for _, s := range out.AuthzStatuses {
		if s.Conditions[0].Status == metav1.ConditionTrue {
			accepted++
		} else if !strings.Contains(s.Conditions[0].Message, "share") {
			t.Errorf("%s: %+v", s.Name, s.Conditions[0])
		}
	}
	if accepted == 0 || accepted == n {
		t.Fatalf("%d of %d accepted; want the budget to cut some", accepted, n)
	}
	if last := out.AuthzStatuses[n-1].Conditions[0]; last.Status != metav1.ConditionFalse {
		t.Fatalf("the last policy by name was accepted: %+v", last)
	}
}

func ptrTo[T any](v T) *T { return &v }

// rulesOf puts matches into rules of at most 8.
func rulesOf(matches []gwv1.HTTPRouteMatch) []policyv1a1.AuthorizationRule {
	var rules []policyv1a1.AuthorizationRule
	for len(matches) > 0 {
		k := min(8, len(matches))
		rules = append(rules, policyv1a1.AuthorizationRule{HTTPMatches: matches[:k]})
		matches = matches[k:]
	}
	return rules
}

// Two statuses of a policy compare as equality.Semantic.DeepEqual does,
// whether their specs share memory or not.
func TestSameAuthzStatus(t *testing.T) {
	spec := policyv1a1.AuthorizationPolicySpec{Action: policyv1a1.ActionAllow,
		TargetRefs: []policyv1a1.PolicyTargetReferenceWithLabelSelectors{{Kind: "Pod", Selector: &metav1.LabelSelector{}}},
		Rules:      []policyv1a1.AuthorizationRule{{Sources: []policyv1a1.AuthorizationSource{{Type: policyv1a1.SourceServiceAccount}}}}}
	status := func(spec policyv1a1.AuthorizationPolicySpec) *AuthzStatus {
		return &AuthzStatus{Namespace: "ns", Name: "p", Generation: 2, Conditions: []metav1.Condition{{Type: "Accepted", Status: "True", Reason: "Accepted"}},
			InForce: &policyv1a1.PolicyInForce{Generation: 2, Spec: spec}}
	}
	a := status(spec)
	copied := spec
	copied.TargetRefs = slices.Clone(spec.TargetRefs)
	copied.Rules = slices.Clone(spec.Rules)
	other := copied
	other.Rules = []policyv1a1.AuthorizationRule{{}}
	message := status(spec)
	message.Conditions[0].Message = "changed"
	notInForce := status(spec)
	notInForce.InForce = nil
	for _, tc := range []struct {
		what string
		b    *AuthzStatus
		want bool
	}{
		{"the same memory", status(spec), true},
		{"an equal copy", status(copied), true},
		{"other rules", status(other), false},
		{"another message", message, false},
		{"nothing in force", notInForce, false},
	} {
		if got := SameAuthzStatus(a, tc.b); got != tc.want || got != equality.Semantic.DeepEqual(a, tc.b) {
			t.Errorf("%s: same %v, want %v (as DeepEqual)", tc.what, got, tc.want)
		}
	}
}
