package mesh

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodMTLSStrict(t *testing.T) {
	ns := func(v string) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
		if v != "" {
			n.Annotations = map[string]string{AnnotationMTLS: v}
		}
		return n
	}
	pod := func(v string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart"}}
		if v != "" {
			p.Annotations = map[string]string{AnnotationMTLS: v}
		}
		return p
	}
	for _, tc := range []struct {
		name            string
		ns              *corev1.Namespace
		pod             *corev1.Pod
		strict, invalid bool
	}{
		{"default permissive", ns(""), pod(""), false, false},
		{"unknown namespace", nil, pod(""), false, false},
		{"namespace strict", ns(MTLSStrict), pod(""), true, false},
		{"namespace permissive", ns(MTLSPermissive), pod(""), false, false},
		{"pod strict in permissive namespace", ns(""), pod(MTLSStrict), true, false},
		{"pod permissive overrides namespace strict", ns(MTLSStrict), pod(MTLSPermissive), false, false},
		{"invalid pod value fails safe", ns(""), pod("Strict"), true, true},
		{"invalid namespace value fails safe", ns("yes"), pod(""), true, true},
		{"valid pod value beats invalid namespace", ns("yes"), pod(MTLSPermissive), false, false},
	} {
		strict, err := PodMTLSStrict(tc.ns, tc.pod)
		if strict != tc.strict || (err != nil) != tc.invalid {
			t.Errorf("%s: strict %v err %v, want strict %v invalid %v", tc.name, strict, err, tc.strict, tc.invalid)
		}
	}
}
