package source

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// TestStripSlimsPods: the cached pod keeps its metadata and every field
// podChanged compares (what resolution reads), not its containers,
// volumes or container statuses.
func TestStripSlimsPods(t *testing.T) {
	now := metav1.Now()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u", Labels: map[string]string{"app": "a"}, DeletionTimestamp: &now,
			Annotations:   map[string]string{mesh.AnnotationMTLS: "strict", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}},
		Spec: corev1.PodSpec{NodeName: "n", ServiceAccountName: "sa", HostNetwork: true,
			Containers: []corev1.Container{{Name: "c", Image: "i", Env: []corev1.EnvVar{{Name: "A", Value: "B"}}}},
			Volumes:    []corev1.Volume{{Name: "v"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}},
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now, Message: "m"}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "c"}}},
	}
	before := p.DeepCopy()
	got, err := strip(p)
	if err != nil {
		t.Fatal(err)
	}
	s := got.(*corev1.Pod)
	if podChanged(before, s) {
		t.Fatal("the slim pod differs from the pod in what resolution reads")
	}
	if len(s.Spec.Containers)+len(s.Spec.Volumes)+len(s.Status.ContainerStatuses) != 0 || s.ManagedFields != nil ||
		s.Annotations["kubectl.kubernetes.io/last-applied-configuration"] != "" || s.Status.Conditions[0].Message != "" {
		t.Fatalf("slim pod keeps %+v", s)
	}
	if s.UID != "u" || s.Labels["app"] != "a" || s.DeletionTimestamp == nil {
		t.Fatalf("metadata lost: %+v", s.ObjectMeta)
	}
}
