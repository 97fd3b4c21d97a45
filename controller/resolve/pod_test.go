package resolve

import (
	"reflect"
	"testing"
	"unsafe"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/weft-mesh/weft/api/mesh"
)

// fullPod has every field PodOf copies set, and some it drops.
func fullPod() *corev1.Pod {
	now := metav1.Now()
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u", Labels: map[string]string{"app": "a"}, DeletionTimestamp: &now,
			Annotations:     map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled, mesh.AnnotationMTLS: mesh.MTLSStrict},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-abc", Controller: &yes}}},
		Spec: corev1.PodSpec{NodeName: "n", ServiceAccountName: "sa", HostNetwork: true,
			Containers: []corev1.Container{{Name: "c", Image: "i"}}, Volumes: []corev1.Volume{{Name: "v"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []corev1.PodIP{{IP: "10.0.0.1"}, {IP: "fd00::1"}},
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
				{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: now, Reason: "r", Message: "m"},
			},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "c"}}},
	}
}

// TestPodOfKeepsWhatIsRead: PodOf copies every field of a pod that
// resolution, the Gateway resolution, the Gateway provisioner and the
// source's podChanged read, and of its conditions only the Ready ones, by
// type and status. A field added to Pod but not to PodOf fails too.
func TestPodOfKeepsWhatIsRead(t *testing.T) {
	p := fullPod()
	got := PodOf(p)
	if !equality.Semantic.DeepEqual(got.ObjectMeta, p.ObjectMeta) {
		t.Errorf("metadata %+v, want %+v", got.ObjectMeta, p.ObjectMeta)
	}
	want := Pod{ObjectMeta: got.ObjectMeta, NodeName: "n", ServiceAccountName: "sa", HostNetwork: true,
		Phase: corev1.PodRunning, PodIP: "10.0.0.1", PodIPs: []string{"10.0.0.1", "fd00::1"},
		Conditions: []PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse}}}
	if !reflect.DeepEqual(*got, want) {
		t.Errorf("PodOf = %+v\nwant %+v", *got, want)
	}
	v := reflect.ValueOf(*got)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Errorf("PodOf of a pod with every field set leaves %s zero", v.Type().Field(i).Name)
		}
	}
}

// TestPodOfReadsAsCorePod: what resolution derives from a Pod is what the
// mesh's predicates derive from the corev1.Pod it was made of.
func TestPodOfReadsAsCorePod(t *testing.T) {
	for _, p := range []*corev1.Pod{fullPod(), {}, {Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{Phase: corev1.PodPending}}} {
		s := PodOf(p)
		if got, want := mesh.PodFieldsEnrolled(true, s.Annotations, s.NodeName, s.HostNetwork, s.Phase), mesh.PodEnrolled(true, p); got != want {
			t.Errorf("%s/%s: enrolled %v, want %v", p.Namespace, p.Name, got, want)
		}
		if got, want := mesh.ServiceAccountOrDefault(s.ServiceAccountName), mesh.PodServiceAccount(p); got != want {
			t.Errorf("%s/%s: service account %q, want %q", p.Namespace, p.Name, got, want)
		}
		gk, gn := mesh.PodWorkload(s)
		wk, wn := mesh.PodWorkload(p)
		if gk != wk || gn != wn {
			t.Errorf("%s/%s: workload %s %s, want %s %s", p.Namespace, p.Name, gk, gn, wk, wn)
		}
	}
}

// TestPodIsSmall: the point of Pod is its size; a corev1.Pod is 1,240
// bytes, most of them empty in the cache.
func TestPodIsSmall(t *testing.T) {
	size, core := unsafe.Sizeof(Pod{}), unsafe.Sizeof(corev1.Pod{})
	t.Logf("resolve.Pod: %d bytes, corev1.Pod: %d", size, core)
	if size >= 400 {
		t.Errorf("resolve.Pod is %d bytes (corev1.Pod: %d); keep it well under", size, core)
	}
}

// TestPodIsAnObject: informers key, copy and inspect cached objects as
// runtime.Objects with metadata.
func TestPodIsAnObject(t *testing.T) {
	p := PodOf(fullPod())
	var obj runtime.Object = p
	if obj.GetObjectKind().GroupVersionKind() != (schema.GroupVersionKind{}) {
		t.Errorf("kind %v", obj.GetObjectKind().GroupVersionKind())
	}
	if m, err := meta.Accessor(obj); err != nil || m.GetName() != "p" {
		t.Errorf("meta.Accessor: %v, %v", m, err)
	}
	if k, err := cache.DeletionHandlingMetaNamespaceKeyFunc(cache.DeletedFinalStateUnknown{Key: "ns/p", Obj: p}); err != nil || k != "ns/p" {
		t.Errorf("tombstone key %q, %v", k, err)
	}
	if k, err := cache.MetaNamespaceKeyFunc(p); err != nil || k != "ns/p" {
		t.Errorf("key %q, %v", k, err)
	}
	c := obj.DeepCopyObject().(*Pod)
	if !reflect.DeepEqual(c, p) {
		t.Fatalf("copy %+v, want %+v", c, p)
	}
	c.Labels["app"], c.PodIPs[0], c.Conditions[0].Status = "b", "x", corev1.ConditionTrue
	if p.Labels["app"] != "a" || p.PodIPs[0] != "10.0.0.1" || p.Conditions[0].Status != corev1.ConditionFalse {
		t.Errorf("the copy shares with the original: %+v", p)
	}
	if (*Pod)(nil).DeepCopy() != nil {
		t.Error("a copy of nil")
	}
}
