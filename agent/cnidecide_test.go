package agent

import (
	"context"
	"errors"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weft-mesh/weft/agent/cni"
	"github.com/weft-mesh/weft/api/mesh"
)

func TestKubeDecider(t *testing.T) {
	ns := func(name string, ann map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}
	}
	pod := func(ns, name, uid string, ann map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID("u-" + uid), Annotations: ann},
			Spec: corev1.PodSpec{NodeName: "n1"}}
	}
	on := map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}
	off := map[string]string{mesh.AnnotationMesh: mesh.MeshDisabled}
	kube := fake.NewClientset(ns("mesh", on), ns("plain", nil),
		pod("mesh", "a", "a", nil), pod("mesh", "out", "out", off), pod("plain", "b", "b", nil))
	d := kubeDecider{kube: kube}
	for _, tc := range []struct {
		ns, name, uid string
		enroll        bool
		code          uint // CNI error code, 0: none
	}{
		{"mesh", "a", "u-a", true, 0},
		{"mesh", "out", "u-out", false, 0},    // opted out
		{"plain", "b", "u-b", false, 0},       // namespace not enrolled
		{"mesh", "a", "u-other", false, 11},   // replaced pod: try again
		{"mesh", "missing", "u-x", false, 11}, // unknown pod: fail closed
	} {
		got, err := d.Decide(context.Background(), cni.Request{Namespace: tc.ns, Name: tc.name, UID: tc.uid})
		var te *types.Error
		switch {
		case tc.code != 0 && (!errors.As(err, &te) || te.Code != tc.code):
			t.Errorf("%s/%s: err %v, want CNI code %d", tc.ns, tc.name, err, tc.code)
		case tc.code == 0 && err != nil:
			t.Errorf("%s/%s: %v", tc.ns, tc.name, err)
		case got.Enroll != tc.enroll:
			t.Errorf("%s/%s: enroll %v, want %v (%s)", tc.ns, tc.name, got.Enroll, tc.enroll, got.Reason)
		}
	}
}
