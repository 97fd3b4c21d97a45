package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/test/kubetest"
)

// authzPolicy is an AuthorizationPolicy of the app namespace from YAML.
func authzPolicy(t *testing.T, name, spec string) *unstructured.Unstructured {
	t.Helper()
	var u unstructured.Unstructured
	doc := fmt.Sprintf("apiVersion: policy.weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: %s, namespace: %s}\nspec:\n%s", name, appNS, spec)
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatal(err)
	}
	return &u
}

// waitAuthzCondition waits for the policy's Accepted condition, for the
// policy's current generation, with status want and reason.
func waitAuthzCondition(t *testing.T, ctx context.Context, dyn dynamic.Interface, name string, want metav1.ConditionStatus, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	eventually(t, "AuthorizationPolicy "+name+" "+reason, func() (bool, string) {
		u, err := dyn.Resource(policyv1a1.GroupVersionResource).Namespace(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		p, err := policyv1a1.FromUnstructured(u)
		if err != nil {
			return false, err.Error()
		}
		for _, c := range p.Status.Conditions {
			if c.Type == policyv1a1.ConditionAccepted {
				got = c
				return c.ObservedGeneration == p.Generation && c.Status == want && c.Reason == reason, fmt.Sprintf("%+v", c)
			}
		}
		return false, fmt.Sprintf("no Accepted condition: %+v", p.Status)
	})
	return got
}

func authzOf(p *weftv1.NodePolicy, name string) *weftv1.AuthzPolicy {
	for _, a := range p.GetAuthz() {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

// TestIntegrationAuthorizationPolicy applies AuthorizationPolicies to a real
// apiserver with Weft's CRD: the schema refuses what it can, the controller
// writes Accepted (or why not), pushes accepted policies to the nodes of
// the pods they select within about a second, keeps the last accepted
// generation when an update does not compile, and stops pushing a
// deleted policy.
func TestIntegrationAuthorizationPolicy(t *testing.T) {
	kc := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fixture(t, ctx, kc.Client)
	for _, sa := range []string{"client", "echo-v1", "echo-v2"} {
		if _, err := kc.Client.CoreV1().ServiceAccounts(appNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dyn, err := dynamic.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	res := dyn.Resource(policyv1a1.GroupVersionResource).Namespace(appNS)

	// the schema refuses what it can tell from the object alone
	for name, spec := range map[string]string{
		"http-at-network-level": "  targetRefs: [{group: \"\", kind: Pod, selector: {}}]\n  action: DENY\n  enforcementLevel: Network\n  rules: [{httpMatches: [{method: POST}]}]\n",
		"service-target":        "  targetRefs: [{group: \"\", kind: Service, selector: {}}]\n  action: ALLOW\n  enforcementLevel: Network\n",
		"unknown-action":        "  targetRefs: [{group: \"\", kind: Pod, selector: {}}]\n  action: AUDIT\n  enforcementLevel: Network\n",
		"spiffe-without-id":     "  targetRefs: [{group: \"\", kind: Pod, selector: {}}]\n  action: ALLOW\n  enforcementLevel: Network\n  rules: [{sources: [{type: SPIFFE}]}]\n",
		"port-zero":             "  targetRefs: [{group: \"\", kind: Pod, selector: {}}]\n  action: ALLOW\n  enforcementLevel: Network\n  rules: [{networkAttributes: {ports: [0]}}]\n",
	} {
		if _, err := res.Create(ctx, authzPolicy(t, name, spec), metav1.CreateOptions{}); err == nil {
			t.Errorf("%s: the apiserver accepted it", name)
		}
	}

	c, stop, done := startController(t, ctx, Config{
		Kube: kc.Config, GRPCAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", Debounce: 50 * time.Millisecond,
		Authenticator: tokens{"tok-1": "node-1", "tok-2": "node-2"}, Logger: testLogger(t),
	})
	a := subscribe(t, ctx, c.GRPCAddr().String(), "tok-1", "node-1")
	a.next(t, "first snapshot", func(*weftv1.PolicySnapshot) bool { return true })

	// the two policies, for echo-v1 (on node-1)
	start := time.Now()
	for name, spec := range map[string]string{
		"echo-callers": `  targetRefs: [{group: "", kind: Pod, selector: {matchLabels: {app: echo-v1}}}]
  action: ALLOW
  enforcementLevel: Network
  rules:
  - sources: [{type: ServiceAccount, serviceAccount: {namespace: app, name: client}}]
    networkAttributes: {ports: [8080]}
`,
		"echo-no-admin-writes": `  targetRefs: [{group: "", kind: Pod, selector: {matchLabels: {app: echo-v1}}}]
  action: DENY
  enforcementLevel: Application
  rules:
  - sources: [{type: ServiceAccount, serviceAccount: {namespace: app, name: client}}]
    httpMatches: [{method: POST, path: {type: PathPrefix, value: /admin}}]
`,
	} {
		if _, err := res.Create(ctx, authzPolicy(t, name, spec), metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	s := a.next(t, "the policies pushed", func(s *weftv1.PolicySnapshot) bool {
		return authzOf(s.Policy, "app/echo-callers") != nil && authzOf(s.Policy, "app/echo-no-admin-writes") != nil
	})
	t.Logf("policies in node-1's push %v after the apply", time.Since(start))
	ec := authzOf(s.Policy, "app/echo-callers")
	if fmt.Sprint(ec.Workloads) != "[app/echo-v1]" || ec.Rules[0].Sources[0].Identity != "spiffe://cluster.local/ns/app/sa/client" || fmt.Sprint(ec.Rules[0].Ports) != "[8080]" {
		t.Fatalf("echo-callers pushed as %v", ec)
	}
	if d := authzOf(s.Policy, "app/echo-no-admin-writes"); !d.Application || d.Action != weftv1.AuthzAction_AUTHZ_ACTION_DENY || d.Rules[0].Http[0].Method != "POST" {
		t.Fatalf("echo-no-admin-writes pushed as %v", d)
	}
	if err := s.Policy.Validate(); err != nil {
		t.Fatalf("the agent would NACK the push: %v", err)
	}
	waitAuthzCondition(t, ctx, dyn, "echo-callers", metav1.ConditionTrue, policyv1a1.ReasonAccepted)
	waitAuthzCondition(t, ctx, dyn, "echo-no-admin-writes", metav1.ConditionTrue, policyv1a1.ReasonAccepted)

	// what only the controller can tell
	for name, tc := range map[string]struct{ spec, reason string }{
		"unknown-account": {"  targetRefs: [{group: \"\", kind: Pod, selector: {}}]\n  action: ALLOW\n  enforcementLevel: Network\n  rules: [{sources: [{type: ServiceAccount, serviceAccount: {name: nobody}}]}]\n", policyv1a1.ReasonUnknownServiceAccount},
		"bad-selector":    {"  targetRefs: [{group: \"\", kind: Pod, selector: {matchExpressions: [{key: app, operator: Within, values: [x]}]}}]\n  action: ALLOW\n  enforcementLevel: Network\n", policyv1a1.ReasonInvalidSelector},
		"query-params":    {"  targetRefs: [{group: \"\", kind: Pod, selector: {}}]\n  action: DENY\n  enforcementLevel: Application\n  rules: [{httpMatches: [{queryParams: [{name: debug, value: \"1\"}]}]}]\n", policyv1a1.ReasonUnsupportedValue},
	} {
		if _, err := res.Create(ctx, authzPolicy(t, name, tc.spec), metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		waitAuthzCondition(t, ctx, dyn, name, metav1.ConditionFalse, tc.reason)
	}

	// an update that does not compile: Accepted=False, the last accepted
	// generation stays in force on the node
	u, err := res.Get(ctx, "echo-callers", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	rules[0].(map[string]any)["sources"].([]any)[0].(map[string]any)["serviceAccount"].(map[string]any)["name"] = "nobody"
	unstructured.SetNestedSlice(u.Object, rules, "spec", "rules")
	if _, err := res.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cond := waitAuthzCondition(t, ctx, dyn, "echo-callers", metav1.ConditionFalse, policyv1a1.ReasonUnknownServiceAccount)
	if !strings.Contains(cond.Message, "generation 1 stays in force") {
		t.Errorf("message %q does not say what stays in force", cond.Message)
	}
	// a node that connects now gets what is in force
	b := subscribe(t, ctx, c.GRPCAddr().String(), "tok-1", "node-1")
	cur := authzOf(b.next(t, "a fresh snapshot", func(*weftv1.PolicySnapshot) bool { return true }).Policy, "app/echo-callers")
	if cur == nil || cur.Rules[0].Sources[0].Identity != "spiffe://cluster.local/ns/app/sa/client" {
		t.Fatalf("in force after an invalid update: %v", cur)
	}
	eventually(t, "status.inForce of echo-callers", func() (bool, string) {
		u, err := res.Get(ctx, "echo-callers", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		p, err := policyv1a1.FromUnstructured(u)
		if err != nil {
			return false, err.Error()
		}
		return p.Status.InForce != nil && p.Status.InForce.Generation == 1 && p.Generation == 2, fmt.Sprintf("generation %d, inForce %+v", p.Generation, p.Status.InForce)
	})

	// a new controller (no memory of generation 1) keeps it in force from
	// the status
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil // for the cleanup
	c, _, _ = startController(t, ctx, Config{
		Kube: kc.Config, GRPCAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", Debounce: 50 * time.Millisecond,
		Authenticator: tokens{"tok-1": "node-1", "tok-2": "node-2"}, Logger: testLogger(t),
	})
	a = subscribe(t, ctx, c.GRPCAddr().String(), "tok-1", "node-1")
	cur = authzOf(a.next(t, "the new controller's snapshot", func(s *weftv1.PolicySnapshot) bool { return authzOf(s.Policy, "app/echo-no-admin-writes") != nil }).Policy, "app/echo-callers")
	if cur == nil || cur.Rules[0].Sources[0].Identity != "spiffe://cluster.local/ns/app/sa/client" {
		t.Fatalf("in force after a controller restart: %v", cur)
	}

	// deleted: gone from the node's push
	start = time.Now()
	if err := res.Delete(ctx, "echo-no-admin-writes", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	a.next(t, "the deleted policy gone", func(s *weftv1.PolicySnapshot) bool { return authzOf(s.Policy, "app/echo-no-admin-writes") == nil })
	t.Logf("deleted policy out of node-1's push %v after the delete", time.Since(start))

	// statuses settle: what was written reads back equal, nothing is
	// rewritten in a loop
	time.Sleep(time.Second)
	before := c.Stats().StatusWrites
	time.Sleep(time.Second)
	if after := c.Stats().StatusWrites; after != before {
		t.Errorf("%d status writes in a second with nothing changing", after-before)
	}
}
