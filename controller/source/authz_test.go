package source

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
