package ca

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

func pod(ns, name, sa, node string, phase corev1.PodPhase, ann map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec:       corev1.PodSpec{ServiceAccountName: sa, NodeName: node},
		Status:     corev1.PodStatus{Phase: phase},
	}
}

func TestAuthorize(t *testing.T) {
	enrolled := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}}
	plain := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}
	optOut := map[string]string{mesh.AnnotationMesh: mesh.MeshDisabled}
	hostNet := pod("shop", "h", "cart", "n1", corev1.PodRunning, nil)
	hostNet.Spec.HostNetwork = true
	tests := []struct {
		name string
		ns   *corev1.Namespace
		sa   string
		pods []*corev1.Pod
		ok   bool
	}{
		{"pod of sa on node", enrolled, "cart", []*corev1.Pod{pod("shop", "a", "cart", "n1", corev1.PodRunning, nil)}, true},
		{"pending pod counts", enrolled, "cart", []*corev1.Pod{pod("shop", "a", "cart", "n1", corev1.PodPending, nil)}, true},
		{"empty sa is default", enrolled, "default", []*corev1.Pod{pod("shop", "a", "", "n1", corev1.PodRunning, nil)}, true},
		{"no pods", enrolled, "cart", nil, false},
		{"pod on other node", enrolled, "cart", []*corev1.Pod{pod("shop", "a", "cart", "n2", corev1.PodRunning, nil)}, false},
		{"pod of other sa", enrolled, "cart", []*corev1.Pod{pod("shop", "a", "admin", "n1", corev1.PodRunning, nil)}, false},
		{"pod in other ns", enrolled, "cart", []*corev1.Pod{pod("other", "a", "cart", "n1", corev1.PodRunning, nil)}, false},
		{"finished pods", enrolled, "cart", []*corev1.Pod{pod("shop", "a", "cart", "n1", corev1.PodSucceeded, nil), pod("shop", "b", "cart", "n1", corev1.PodFailed, nil)}, false},
		{"opted out", enrolled, "cart", []*corev1.Pod{pod("shop", "a", "cart", "n1", corev1.PodRunning, optOut)}, false},
		{"one opted out one not", enrolled, "cart", []*corev1.Pod{pod("shop", "a", "cart", "n1", corev1.PodRunning, optOut), pod("shop", "b", "cart", "n1", corev1.PodRunning, nil)}, true},
		// The resolver never hands a hostNetwork pod an identity (it shares
		// the node proxy's netns), so the CA must not sign one either.
		{"hostNetwork pod refused", enrolled, "cart", []*corev1.Pod{hostNet}, false},
		{"hostNetwork pod and a meshed one", enrolled, "cart", []*corev1.Pod{hostNet, pod("shop", "b", "cart", "n1", corev1.PodRunning, nil)}, true},
		{"namespace not enrolled", plain, "cart", []*corev1.Pod{pod("shop", "a", "cart", "n1", corev1.PodRunning, nil)}, false},
		{"namespace missing", nil, "cart", []*corev1.Pod{pod("shop", "a", "cart", "n1", corev1.PodRunning, nil)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := authorize("n1", "shop", tt.ns, tt.sa, tt.pods)
			if tt.ok != (err == nil) {
				t.Fatalf("authorize = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrNotAuthorized) {
				t.Fatalf("error %v is not ErrNotAuthorized", err)
			}
		})
	}
}
