package source

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
)

func authzObject() *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "policy.weft.dev/v1alpha1", "kind": "AuthorizationPolicy",
		"metadata": map[string]any{"name": "p", "namespace": "shop", "uid": "u1", "generation": int64(1), "resourceVersion": "1"},
		"spec":     map[string]any{"action": "ALLOW", "enforcementLevel": "Network"},
		"status":   map[string]any{"conditions": []any{map[string]any{"type": "Accepted", "status": "True"}}},
	}}
}

func TestClassifyAuthorizationPolicy(t *testing.T) {
	for name, c := range map[string]struct {
		edit func(*unstructured.Unstructured)
		want change
	}{
		"resourceVersion only": {func(u *unstructured.Unstructured) { u.SetResourceVersion("2") }, changeNone},
		"spec":                 {func(u *unstructured.Unstructured) { u.Object["spec"].(map[string]any)["action"] = "DENY" }, changeResolve},
		"generation":           {func(u *unstructured.Unstructured) { u.SetGeneration(2) }, changeResolve},
		"recreated":            {func(u *unstructured.Unstructured) { u.SetUID("u2") }, changeResolve},
		"status only":          {func(u *unstructured.Unstructured) { u.Object["status"] = map[string]any{} }, changeStatus},
	} {
		o := authzObject()
		n := o.DeepCopy()
		c.edit(n)
		if got := classify(o, n); got != c.want {
			t.Errorf("%s: %v, want %v", name, got, c.want)
		}
	}
}

func TestClassifyServiceAccount(t *testing.T) {
	o := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "a", UID: "1", ResourceVersion: "1"}}
	n := o.DeepCopy()
	n.ResourceVersion = "2"
	n.Secrets = []corev1.ObjectReference{{Name: "tok"}}
	if got := classify(o, n); got != changeNone {
		t.Errorf("an update of a ServiceAccount's content: %v, want none (only its existence is read)", got)
	}
	n.UID = "2"
	if got := classify(o, n); got != changeResolve {
		t.Errorf("a recreated ServiceAccount: %v", got)
	}
}

// listAuthz decodes a policy again only when its resourceVersion changed:
// an unchanged policy is the very same memory round after round (which
// resolution's comparison of statuses relies on to be quick), a changed one
// is read anew, and one that does not decode is left out and logged once.
func TestListAuthzDecodesChangesOnly(t *testing.T) {
	policy := func(name, rv, action string) *unstructured.Unstructured {
		u := authzObject()
		u.SetName(name)
		u.SetUID(types.UID("uid-" + name))
		u.SetResourceVersion(rv)
		u.Object["spec"] = map[string]any{"action": action, "enforcementLevel": "Network",
			"targetRefs": []any{map[string]any{"group": "", "kind": "Pod", "selector": map[string]any{}}}}
		return u
	}
	objs := []any{policy("b", "1", "ALLOW"), policy("a", "1", "ALLOW")}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	w := &authzWatch{}
	list := func() []*policyv1a1.AuthorizationPolicy {
		ps := w.decode(objs, log)
		sortObjects(ps)
		return ps
	}
	first := list()
	if len(first) != 2 || first[0].Name != "a" || first[1].Name != "b" {
		t.Fatalf("listed %+v", first)
	}
	bad := policy("c", "1", "ALLOW")
	bad.Object["spec"].(map[string]any)["targetRefs"] = "not a list"
	objs = []any{policy("b", "2", "DENY"), objs[1], bad}
	second := list()
	list()
	if len(second) != 2 || second[1].Spec.Action != policyv1a1.ActionDeny {
		t.Fatalf("after b changed and c came: %+v", second)
	}
	if &second[0].Spec.TargetRefs[0] != &first[0].Spec.TargetRefs[0] {
		t.Error("an unchanged policy was decoded again")
	}
	if &second[1].Spec.TargetRefs[0] == &first[1].Spec.TargetRefs[0] {
		t.Error("a changed policy was not decoded again")
	}
	if n := strings.Count(logs.String(), "does not decode"); n != 1 {
		t.Errorf("the policy that does not decode was logged %d times, want once:\n%s", n, logs.String())
	}
}
