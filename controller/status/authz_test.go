package status

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	"github.com/weft-mesh/weft/controller/resolve"
)

// A policy found with the status Weft wants is not compared again while
// neither its object (resourceVersion) nor the wanted status changed, and
// either changing is written.
func TestWriteAuthzSkipsWhatHeld(t *testing.T) {
	p := policyv1a1.AuthorizationPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Generation: 2, ResourceVersion: "5"},
		Spec: policyv1a1.AuthorizationPolicySpec{Action: policyv1a1.ActionAllow, EnforcementLevel: policyv1a1.LevelNetwork,
			TargetRefs: []policyv1a1.PolicyTargetReferenceWithLabelSelectors{{Kind: "Pod", Selector: &metav1.LabelSelector{}}}}}
	u, err := policyv1a1.ToUnstructured(&p)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{policyv1a1.GroupVersionResource: "AuthorizationPolicyList"}, u)
	updates := 0
	dyn.PrependReactor("update", "authorizationpolicies", func(k8stesting.Action) (bool, runtime.Object, error) {
		updates++
		return false, nil, nil
	})
	w, err := New(Config{Client: fake.NewSimpleClientset(), Dynamic: dyn})
	if err != nil {
		t.Fatal(err)
	}
	accepted := resolve.AuthzStatus{Namespace: "ns", Name: "p", Generation: 2,
		Conditions: []metav1.Condition{{Type: policyv1a1.ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 2}},
		InForce:    &policyv1a1.PolicyInForce{Generation: 2, Spec: p.Spec}}
	write := func(what string, obj policyv1a1.AuthorizationPolicy, want resolve.AuthzStatus, wantWrites int) {
		t.Helper()
		updates = 0
		n, err := w.Write(context.Background(), Objects{Mesh: resolve.Input{AuthorizationPolicies: []policyv1a1.AuthorizationPolicy{obj}}},
			Want{Authz: []resolve.AuthzStatus{want}})
		if err != nil || n != wantWrites || updates != wantWrites {
			t.Fatalf("%s: wrote %d (%d updates, %v), want %d", what, n, updates, err, wantWrites)
		}
	}
	has := p
	has.Status = policyv1a1.PolicyStatus{Conditions: accepted.Conditions, InForce: accepted.InForce}
	write("no status yet", p, accepted, 1)
	write("the status wanted", has, accepted, 0)
	if _, ok := w.authzHeld[[2]string{"ns", "p"}]; !ok {
		t.Fatal("a policy found with its status was not held")
	}
	write("the same again", has, accepted, 0)
	other := accepted
	other.InForce = &policyv1a1.PolicyInForce{Generation: 2, Spec: policyv1a1.AuthorizationPolicySpec{Action: policyv1a1.ActionDeny}}
	write("the same object, another status wanted", has, other, 1)
	write("held again", has, accepted, 0)
	changed := has
	changed.ResourceVersion = "6"
	changed.Status.InForce = nil // someone else's write
	write("the object changed", changed, accepted, 1)
}
