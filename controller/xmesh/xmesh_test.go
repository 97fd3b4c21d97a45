package xmesh

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	xv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	"sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"
	"sigs.k8s.io/gateway-api/pkg/features"

	"github.com/weft-mesh/weft/controller/resolve"
)

// The fake clientset only counts writes here; the lab's conformance run reads the
// status from a real apiserver.

var (
	t0 = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(t0.Add(time.Hour))
)

func mesh(name, controller string, gen int64) *xv1a1.XMesh {
	return &xv1a1.XMesh{
		ObjectMeta: metav1.ObjectMeta{Name: name, Generation: gen},
		Spec:       xv1a1.MeshSpec{ControllerName: gwv1.GatewayController(controller)},
	}
}

func TestStatus(t *testing.T) {
	m := mesh("weft", string(resolve.ControllerName), 3)
	m.Status.Conditions = []metav1.Condition{
		{Type: "Accepted", Status: "True", Reason: "Accepted", ObservedGeneration: 2, LastTransitionTime: t0},
		{Type: "Other", Status: "False", Reason: "Someone", LastTransitionTime: t0},
	}
	st := Status(m, []features.FeatureName{features.SupportMeshConsumerRoute, features.SupportMesh, features.SupportMesh}, t1)
	acc := meta.FindStatusCondition(st.Conditions, "Accepted")
	if acc == nil || acc.Status != metav1.ConditionTrue || acc.ObservedGeneration != 3 || !acc.LastTransitionTime.Equal(&t0) {
		t.Errorf("Accepted = %+v; want True at generation 3, transition time kept", acc)
	}
	if meta.FindStatusCondition(st.Conditions, "Other") == nil {
		t.Error("a condition of another type was dropped")
	}
	var names []string
	for _, f := range st.SupportedFeatures {
		names = append(names, string(f.Name))
	}
	if want := []string{"Mesh", "MeshConsumerRoute"}; len(names) != 2 || names[0] != want[0] || names[1] != want[1] {
		t.Errorf("features %v, want %v (sorted, unique)", names, want)
	}

	m.Status.Conditions[0].Status = metav1.ConditionFalse
	st = Status(m, nil, t1)
	if acc := meta.FindStatusCondition(st.Conditions, "Accepted"); !acc.LastTransitionTime.Equal(&t1) {
		t.Errorf("transition time %v after False->True, want %v", acc.LastTransitionTime, t1)
	}
}

func TestSupportedFeaturesCoverEveryMeshExtendedFeature(t *testing.T) {
	have := map[features.FeatureName]bool{}
	for _, f := range SupportedFeatures {
		have[f] = true
	}
	for _, f := range features.MeshExtendedFeatures.UnsortedList() {
		if !have[f.Name] {
			t.Errorf("extended mesh feature %s is not claimed", f.Name)
		}
	}
}

func TestReconcile(t *testing.T) {
	other := mesh("istio", "istio.io/mesh-controller", 1)
	// Created through the client: the fake tracker guesses "xmeshs" for objects given
	// to NewSimpleClientset.
	cs := fake.NewSimpleClientset()
	for _, m := range []*xv1a1.XMesh{mesh("weft", string(resolve.ControllerName), 1), other} {
		if _, err := cs.ExperimentalV1alpha1().XMeshes().Create(context.Background(), m, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	writes := map[string]int{}
	cs.PrependReactor("update", "xmeshes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			writes[a.(k8stesting.UpdateAction).GetObject().(*xv1a1.XMesh).Name]++
		}
		return false, nil, nil
	})
	r, err := New(Config{Client: cs})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := r.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if writes["weft"] != 1 || writes["istio"] != 0 {
		t.Errorf("status writes %v; want one for weft (none when unchanged), none for another controller's mesh", writes)
	}
	got, err := cs.ExperimentalV1alpha1().XMeshes().Get(context.Background(), "weft", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !meta.IsStatusConditionTrue(got.Status.Conditions, "Accepted") || len(got.Status.SupportedFeatures) != len(SupportedFeatures) {
		t.Errorf("status %+v", got.Status)
	}
}

// TestReconcileCreatesTheDefault: with no XMesh of Weft's in the cluster (the install
// manifests carry only the CRD), the controller creates the XMesh weft once and
// publishes its status; another controller's mesh does not count, and one that holds
// the name is reported, not taken over.
func TestReconcileCreatesTheDefault(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewSimpleClientset()
	if _, err := cs.ExperimentalV1alpha1().XMeshes().Create(ctx, mesh("istio", "istio.io/mesh-controller", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Client: cs})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := r.Reconcile(ctx); err != nil || n != 2 {
		t.Fatalf("first reconcile: %d writes, %v; want the create and one status write", n, err)
	}
	got, err := cs.ExperimentalV1alpha1().XMeshes().Get(ctx, DefaultName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("default XMesh not created: %v", err)
	}
	if !Ours(got) || !meta.IsStatusConditionTrue(got.Status.Conditions, "Accepted") {
		t.Errorf("default XMesh %+v", got)
	}
	if n, err := r.Reconcile(ctx); err != nil || n != 0 {
		t.Fatalf("second reconcile: %d writes, %v; want none", n, err)
	}

	taken := fake.NewSimpleClientset()
	if _, err := taken.ExperimentalV1alpha1().XMeshes().Create(ctx, mesh(DefaultName, "example.com/other", 1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r, _ = New(Config{Client: taken})
	if _, err := r.Reconcile(ctx); err == nil || !strings.Contains(err.Error(), "taken") {
		t.Fatalf("name held by another controller: err %v, want one that says so", err)
	}
	if m, _ := taken.ExperimentalV1alpha1().XMeshes().Get(ctx, DefaultName, metav1.GetOptions{}); Ours(m) {
		t.Fatal("another controller's XMesh was taken over")
	}
}

// TestDefaultIsOwned: the default XMesh carries Config.Owner's reference, so the
// garbage collector removes it with the install; when the owner cannot be read the
// mesh is still created (it carries the status) without one.
func TestDefaultIsOwned(t *testing.T) {
	ctx := context.Background()
	ref := metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "weft-controller", UID: "u-1"}
	for _, tc := range []struct {
		name  string
		owner func(context.Context) (metav1.OwnerReference, error)
		want  []metav1.OwnerReference
	}{
		{"owner", func(context.Context) (metav1.OwnerReference, error) { return ref, nil }, []metav1.OwnerReference{ref}},
		{"owner unreadable", func(context.Context) (metav1.OwnerReference, error) {
			return metav1.OwnerReference{}, errors.New("forbidden")
		}, nil},
		{"no owner configured", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := fake.NewSimpleClientset()
			r, err := New(Config{Client: cs, Owner: tc.owner})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			got, err := cs.ExperimentalV1alpha1().XMeshes().Get(ctx, DefaultName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.OwnerReferences, tc.want) {
				t.Errorf("owner references %+v, want %+v", got.OwnerReferences, tc.want)
			}
		})
	}
}
