package source

import (
	"fmt"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/resolve"
)

// TestStripSlimsPods: the informer stores a pod as a *resolve.Pod that
// keeps its metadata (less managedFields and the last-applied annotation)
// and every field podChanged compares (what resolution reads); an object
// stripped already passes through as it is.
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
	before := resolve.PodOf(p.DeepCopy())
	got, err := strip(p)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := got.(*resolve.Pod)
	if !ok {
		t.Fatalf("a pod is stored as a %T", got)
	}
	if podChanged(before, s) {
		t.Fatal("the slim pod differs from the pod in what resolution reads")
	}
	if s.ManagedFields != nil || s.Annotations["kubectl.kubernetes.io/last-applied-configuration"] != "" {
		t.Fatalf("slim pod keeps %+v", s.ObjectMeta)
	}
	if s.UID != "u" || s.Labels["app"] != "a" || s.DeletionTimestamp == nil || s.Annotations[mesh.AnnotationMTLS] != "strict" {
		t.Fatalf("metadata lost: %+v", s.ObjectMeta)
	}
	if again, err := strip(s); err != nil || again != any(s) {
		t.Fatalf("a stripped pod was transformed again: %T, %v", again, err)
	}
}

// TestDeletedTombstones: a tombstone passes through the transform with
// the store's (slim) pod, one of a pod not transformed yet gets it
// slimmed, and the delete handler records either as a pod's delete.
func TestDeletedTombstones(t *testing.T) {
	slim := &resolve.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a"}}
	got, err := strip(cache.DeletedFinalStateUnknown{Key: "ns/a", Obj: slim})
	if d, ok := got.(cache.DeletedFinalStateUnknown); err != nil || !ok || d.Key != "ns/a" || d.Obj != any(slim) {
		t.Fatalf("tombstone of a slim pod: %#v, %v", got, err)
	}
	raw := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "b"}, Spec: corev1.PodSpec{NodeName: "n"}}
	got, err = strip(cache.DeletedFinalStateUnknown{Key: "ns/b", Obj: raw})
	d, ok := got.(cache.DeletedFinalStateUnknown)
	if p, isSlim := d.Obj.(*resolve.Pod); err != nil || !ok || d.Key != "ns/b" || !isSlim || p.Name != "b" || p.NodeName != "n" {
		t.Fatalf("tombstone of a pod: %#v, %v", got, err)
	}
	s := &Source{}
	s.takeChanges()
	for _, obj := range []any{slim, cache.DeletedFinalStateUnknown{Key: "ns/a", Obj: slim}, d} {
		s.handler().OnDelete(obj)
	}
	if c := s.takeChanges(); !c.Pods || c.Other || s.gens["pods"] != 3 || len(s.stale["pods"].keys) != 2 || s.Stats().Resolve != 3 {
		t.Fatalf("deletes recorded as %+v, generations %v, stale %v, stats %+v", c, s.gens, s.stale["pods"], s.Stats())
	}
}

// TestChanges: what changed since the last take, by kind; the first take
// says Other; events resolution does not read only make copies stale.
func TestChanges(t *testing.T) {
	s := &Source{}
	if c := s.takeChanges(); !c.Other {
		t.Fatalf("first changes %+v, want Other", c)
	}
	slice := func(svc string) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: svc + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc}}}
	}
	s.record(slice("a"), true)
	s.record(cache.DeletedFinalStateUnknown{Obj: slice("b")}, true)
	s.record(&gwv1.HTTPRoute{}, true)
	s.record(&resolve.Pod{}, false)
	c := s.takeChanges()
	if c.Other || c.Pods || !c.Routes || len(c.Slices) != 2 || !c.Slices["ns/a"] || !c.Slices["ns/b"] {
		t.Fatalf("changes %+v", c)
	}
	s.record(&gwv1.HTTPRoute{}, false) // a status write: the copy is stale, nothing to resolve
	if c := s.takeChanges(); c.Routes {
		t.Fatalf("a route's status change: %+v", c)
	}
	if s.gens["pods"] != 1 || s.gens["slices"] != 2 || s.gens["httproutes"] != 2 {
		t.Fatalf("generations %v", s.gens)
	}
	s.record(&resolve.Pod{}, true)
	s.record(&corev1.Service{}, true)
	if c := s.takeChanges(); !c.Pods || !c.Other || c.Routes {
		t.Fatalf("changes %+v", c)
	}
	s.record(nil, true)
	if c := s.takeChanges(); !c.Other {
		t.Fatalf("an unknown change: %+v", c)
	}
	// an AuthorizationPolicy (the dynamic informer's objects): its own
	// kind of change, for a round that resolves authorization alone
	policy := &unstructured.Unstructured{}
	policy.SetKind("AuthorizationPolicy")
	s.record(policy, false)
	if c := s.takeChanges(); c.Authz || c.Other {
		t.Fatalf("a policy's status change: %+v", c)
	}
	s.record(cache.DeletedFinalStateUnknown{Obj: policy}, true)
	if c := s.takeChanges(); !c.Authz || c.Other || c.Pods || c.Routes {
		t.Fatalf("a policy deleted: %+v", c)
	}
	// every event, a status change too, makes the listing of policies
	// stale (resolution reads the status in force)
	if s.gens["authz"] != 2 {
		t.Fatalf("policy listing generation %d after 2 events", s.gens["authz"])
	}

	// a pod moved: it is listed as it was and as it is, for the round to
	// build again only what either touches
	pod := func(ns, node string) *resolve.Pod {
		return &resolve.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "p"}, NodeName: node}
	}
	was, is := pod("a", "n1"), pod("a", "n2")
	s.record(was, true)
	s.record(is, true)
	s.record(pod("b", "n3"), false) // not read by resolution: not listed
	c = s.takeChanges()
	if !c.Pods || !slices.Equal(c.ChangedPods, []*resolve.Pod{was, is}) {
		t.Fatalf("changes %+v", c)
	}
	for i := range maxListedPodChanges + 1 {
		s.record(pod("a", fmt.Sprint(i)), true)
	}
	if c := s.takeChanges(); !c.Pods || c.ChangedPods != nil {
		t.Fatalf("past %d pod events, changes list %d pods", maxListedPodChanges, len(c.ChangedPods))
	}
	s.record(is, true)
	if c := s.takeChanges(); !slices.Equal(c.ChangedPods, []*resolve.Pod{is}) {
		t.Fatalf("the next round's changes %+v", c)
	}
}
