package main

import (
	"context"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/api/mesh"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	"github.com/weft-mesh/weft/controller/resolve"
	"github.com/weft-mesh/weft/test/kubetest"
)

// The two policies, exactly as written.
const examples = `
apiVersion: policy.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-callers, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Pod, selector: {matchLabels: {app: cart}}}]
  action: ALLOW
  enforcementLevel: Network
  rules:
  - sources: [{type: ServiceAccount, serviceAccount: {namespace: shop, name: frontend}}]
    networkAttributes: {ports: [8080]}
---
apiVersion: policy.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-no-admin-writes, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Pod, selector: {matchLabels: {app: cart}}}]
  action: DENY
  enforcementLevel: Application
  rules:
  - sources: [{type: ServiceAccount, serviceAccount: {namespace: shop, name: frontend}}]
    httpMatches: [{method: POST, path: {type: PathPrefix, value: /admin}}]
`

// cartPod is the target pod of shopInput.
func cartPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cart-0", Namespace: "shop", Labels: map[string]string{"app": "cart"}},
		Spec:       corev1.PodSpec{NodeName: "n1", ServiceAccountName: "cart"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.5"},
	}
}

func shopInput(t *testing.T) resolve.Input {
	t.Helper()
	in := resolve.Input{
		Namespaces:      []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}}},
		Nodes:           []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}},
		Pods:            []*resolve.Pod{resolve.PodOf(cartPod())},
		ServiceAccounts: []corev1.ServiceAccount{{ObjectMeta: metav1.ObjectMeta{Name: "frontend", Namespace: "shop"}}},
	}
	for _, doc := range strings.Split(examples, "---") {
		var p policyv1a1.AuthorizationPolicy
		if err := yaml.UnmarshalStrict([]byte(doc), &p); err != nil {
			t.Fatal(err)
		}
		in.AuthorizationPolicies = append(in.AuthorizationPolicies, p)
	}
	return in
}

func TestExplainAuthz(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	for _, c := range []struct {
		from, method, path string
		port               uint
		want               string
	}{
		{"frontend.shop", "POST", "/admin/users", 8080, "decision: DENIED: denied by rule 0 of DENY policy shop/cart-no-admin-writes"},
		{"frontend.shop", "GET", "/admin/users", 8080, "decision: ALLOWED: allowed by rule 0 of ALLOW policy shop/cart-callers"},
		{"frontend.shop", "", "", 8080, "decision: PER REQUEST"},
		{"checkout.shop", "", "", 8080, "decision: DENIED: no rule of the workload's ALLOW policies matches: shop/cart-callers"},
		{"spiffe://cluster.local/ns/shop/sa/frontend", "", "", 9090, "decision: DENIED"},
	} {
		q, err := parseAuthzQuery(td, c.from, "cart-0.shop", c.port, c.method, c.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := explainAuthz(&b, shopInput(t), q); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), c.want) || !strings.Contains(b.String(), "policies: shop/cart-callers (ALLOW, Network), shop/cart-no-admin-writes (DENY, Application)") {
			t.Errorf("%s %s %s :%d:\n%s\nwant %q", c.from, c.method, c.path, c.port, b.String(), c.want)
		}
	}
	// the target's mTLS mode: permissive by default, strict from the
	// namespace, with a note for an invalid value
	q, _ := parseAuthzQuery(td, "frontend.shop", "cart-0.shop", 8080, "GET", "/", nil)
	for _, c := range []struct{ ann, want string }{
		{"", "mtls:     permissive"},
		{"strict", "mtls:     strict (plaintext from outside the mesh is refused"},
		{"Strict", `; namespace shop annotation weft.dev/mtls="Strict" is neither`},
	} {
		in := shopInput(t)
		if c.ann != "" {
			in.Namespaces[0].Annotations[mesh.AnnotationMTLS] = c.ann
		}
		var b strings.Builder
		if err := explainAuthz(&b, in, q); err != nil || !strings.Contains(b.String(), c.want) {
			t.Errorf("namespace mtls %q: %v\n%s\nwant %q", c.ann, err, b.String(), c.want)
		}
	}
	// a pod outside the mesh: nothing is enforced
	in := shopInput(t)
	in.Namespaces[0].Annotations = nil
	q, _ = parseAuthzQuery(td, "checkout.shop", "cart-0.shop", 8080, "", "", nil)
	var b strings.Builder
	if err := explainAuthz(&b, in, q); err != nil || !strings.Contains(b.String(), "not in the mesh") {
		t.Errorf("unenrolled: %v\n%s", err, b.String())
	}
}

func TestParseAuthzQueryRefuses(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	for _, c := range [][3]string{{"frontend", "cart-0.shop", "80"}, {"frontend.shop", "cart-0", "80"}, {"frontend.shop", "cart-0.shop", "0"}, {"spiffe://", "cart-0.shop", "80"}} {
		port := uint(80)
		if c[2] == "0" {
			port = 0
		}
		if _, err := parseAuthzQuery(td, c[0], c[1], port, "", "", nil); err == nil {
			t.Errorf("%v accepted", c)
		}
	}
	if _, err := parseAuthzQuery(td, "a.b", "p.n", 80, "GET", "/", []string{"novalue"}); err == nil {
		t.Error("a header without ':' accepted")
	}
}

// TestIntegrationAuthz reads the policies from a real apiserver, as
// weftctl authz does.
func TestIntegrationAuthz(t *testing.T) {
	kc := kubetest.Start(t)
	ctx := context.Background()
	in := shopInput(t)
	if _, err := kc.Client.CoreV1().Namespaces().Create(ctx, &in.Namespaces[0], metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Client.CoreV1().ServiceAccounts("shop").Create(ctx, &in.ServiceAccounts[0], metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := *cartPod()
	pod.Spec.Containers = []corev1.Container{{Name: "c", Image: "x"}}
	created, err := kc.Client.CoreV1().Pods("shop").Create(ctx, &pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = pod.Status
	if _, err := kc.Client.CoreV1().Pods("shop").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	dc, err := dynamic.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	for i := range in.AuthorizationPolicies {
		u, err := policyv1a1.ToUnstructured(&in.AuthorizationPolicies[i])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dc.Resource(policyv1a1.GroupVersionResource).Namespace("shop").Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	q, err := parseAuthzQuery(td, "frontend.shop", "cart-0.shop", 8080, "POST", "/admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := authzInput(ctx, kc.Client, dc, q)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := explainAuthz(&b, got, q); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "decision: DENIED: denied by rule 0 of DENY policy shop/cart-no-admin-writes") {
		t.Fatalf("weftctl authz said:\n%s", b.String())
	}
}

func TestAuthzRow(t *testing.T) {
	p := &policyv1a1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "shop", Generation: 2},
		Status: policyv1a1.PolicyStatus{Conditions: []metav1.Condition{{Type: "Accepted", Status: "False", Reason: "UnknownServiceAccount", Message: "ServiceAccount shop/x does not exist", ObservedGeneration: 2}}}}
	r := authzRow(p)
	if r.accepted != "False/UnknownServiceAccount" || r.message != "ServiceAccount shop/x does not exist" || r.kind != "AuthorizationPolicy" {
		t.Fatalf("%+v", r)
	}
}
