package status

import (
	"context"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	"sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weft-mesh/weft/controller/resolve"
)

// The fake clientset is used here only to count requests and inject
// conflicts; the integration test in controller/ runs against a real
// apiserver.

func route(name string, parents ...gwv1.RouteParentStatus) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1, ResourceVersion: "1"},
		Spec:       gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{svcRef("a")}}},
		Status:     gwv1.HTTPRouteStatus{RouteStatus: gwv1.RouteStatus{Parents: parents}},
	}
}

func accepted(ref string) resolve.ParentStatus {
	return resolve.ParentStatus{Ref: svcRef(ref), Conditions: []metav1.Condition{
		{Type: "Accepted", Status: "True", Reason: "Accepted", Message: "ok", ObservedGeneration: 1},
		{Type: "ResolvedRefs", Status: "True", Reason: "ResolvedRefs", Message: "ok", ObservedGeneration: 1},
	}}
}

type counter struct {
	updates, gets int
}

func newWriter(t testing.TB, objs ...runtime.Object) (*Writer, *fake.Clientset, *counter) {
	t.Helper()
	cs := fake.NewSimpleClientset(objs...)
	n := &counter{}
	cs.PrependReactor("update", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			n.updates++
		}
		return false, nil, nil
	})
	cs.PrependReactor("get", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		n.gets++
		return false, nil, nil
	})
	w, err := New(Config{Client: cs, Now: func() time.Time { return t1.Time }})
	if err != nil {
		t.Fatal(err)
	}
	return w, cs, n
}

func statuses(parents ...resolve.ParentStatus) []resolve.ObjectStatus {
	return []resolve.ObjectStatus{{Kind: "HTTPRoute", Namespace: "ns", Name: "r", Generation: 1, Parents: parents}}
}

func TestWriteThenNoWrite(t *testing.T) {
	other := gwv1.RouteParentStatus{ParentRef: gwv1.ParentReference{Name: "gw"}, ControllerName: "example.com/gw",
		Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", t0)}}
	stale := gwv1.RouteParentStatus{ParentRef: svcRef("gone"), ControllerName: resolve.ControllerName,
		Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", t0)}}
	r := route("r", other, stale)
	w, cs, n := newWriter(t, r)
	ctx := context.Background()

	wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{r}}}, Want{Mesh: statuses(accepted("a"))})
	if err != nil || wrote != 1 || n.updates != 1 {
		t.Fatalf("first write: wrote %d updates %d err %v", wrote, n.updates, err)
	}
	got, err := cs.GatewayV1().HTTPRoutes("ns").Get(ctx, "r", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ps := got.Status.Parents
	if len(ps) != 2 || ps[0].ControllerName != "example.com/gw" || ps[1].ControllerName != resolve.ControllerName || ps[1].ParentRef.Name != "a" {
		t.Fatalf("parents after write: %+v", ps)
	}
	for _, c := range ps[1].Conditions {
		if !c.LastTransitionTime.Equal(&t1) || c.Status != "True" {
			t.Fatalf("condition %+v", c)
		}
	}

	// The same decision against the written object: no request at all.
	n.updates, n.gets = 0, 0
	for i := 0; i < 5; i++ {
		wrote, err = w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{got}}}, Want{Mesh: statuses(accepted("a"))})
		if err != nil || wrote != 0 {
			t.Fatalf("repeat write: wrote %d err %v", wrote, err)
		}
	}
	if n.updates != 0 || n.gets != 0 {
		t.Fatalf("unchanged status cost %d updates, %d gets", n.updates, n.gets)
	}

	// The route no longer has an opinion from us: our entry goes, the other stays.
	wrote, err = w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{got}}}, Want{Mesh: nil})
	if err != nil || wrote != 1 {
		t.Fatalf("removal: wrote %d err %v", wrote, err)
	}
	got, _ = cs.GatewayV1().HTTPRoutes("ns").Get(ctx, "r", metav1.GetOptions{})
	if len(got.Status.Parents) != 1 || got.Status.Parents[0].ControllerName != "example.com/gw" {
		t.Fatalf("after removal: %+v", got.Status.Parents)
	}
}

func TestWriteRetriesConflictOnFreshRead(t *testing.T) {
	r := route("r")
	w, cs, n := newWriter(t, r)
	// Another controller writes its entry after our snapshot was taken.
	fresh := r.DeepCopy()
	fresh.Status.Parents = []gwv1.RouteParentStatus{{ParentRef: gwv1.ParentReference{Name: "gw"}, ControllerName: "example.com/gw",
		Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", t0)}}}
	if _, err := cs.GatewayV1().HTTPRoutes("ns").UpdateStatus(context.Background(), fresh, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	conflicts := 0
	cs.PrependReactor("update", "httproutes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "status" || conflicts > 0 {
			return false, nil, nil
		}
		conflicts++
		return true, nil, apierrors.NewConflict(schema.GroupResource{Group: gwv1.GroupName, Resource: "httproutes"}, "r", nil)
	})
	n.updates, n.gets = 0, 0
	wrote, err := w.Write(context.Background(), Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{r}}}, Want{Mesh: statuses(accepted("a"))})
	if err != nil || wrote != 1 {
		t.Fatalf("wrote %d err %v", wrote, err)
	}
	if conflicts != 1 || n.gets != 1 {
		t.Fatalf("conflicts %d gets %d", conflicts, n.gets)
	}
	got, _ := cs.GatewayV1().HTTPRoutes("ns").Get(context.Background(), "r", metav1.GetOptions{})
	if len(got.Status.Parents) != 2 || got.Status.Parents[0].ControllerName != "example.com/gw" {
		t.Fatalf("the other controller's entry was lost: %+v", got.Status.Parents)
	}
}

func TestWriteDeletedObjectIsNotAnError(t *testing.T) {
	w, _, _ := newWriter(t)
	wrote, err := w.Write(context.Background(), Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{route("r")}}}, Want{Mesh: statuses(accepted("a"))})
	if err != nil || wrote != 0 {
		t.Fatalf("wrote %d err %v", wrote, err)
	}
}

func TestWritePolicyAncestors(t *testing.T) {
	p := &gwxv1a1.XBackendTrafficPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", Generation: 1}}
	w, cs, _ := newWriter(t, p)
	st := []resolve.ObjectStatus{{Kind: "XBackendTrafficPolicy", Namespace: "ns", Name: "p", Generation: 1, Parents: []resolve.ParentStatus{accepted("a")}}}
	wrote, err := w.Write(context.Background(), Objects{Mesh: resolve.Input{BackendTrafficPolicies: []gwxv1a1.XBackendTrafficPolicy{*p}}}, Want{Mesh: st})
	if err != nil || wrote != 1 {
		t.Fatalf("wrote %d err %v", wrote, err)
	}
	got, _ := cs.ExperimentalV1alpha1().XBackendTrafficPolicies("ns").Get(context.Background(), "p", metav1.GetOptions{})
	if len(got.Status.Ancestors) != 1 || got.Status.Ancestors[0].ControllerName != resolve.ControllerName || got.Status.Ancestors[0].AncestorRef.Name != "a" {
		t.Fatalf("ancestors %+v", got.Status.Ancestors)
	}
	wrote, err = w.Write(context.Background(), Objects{Mesh: resolve.Input{BackendTrafficPolicies: []gwxv1a1.XBackendTrafficPolicy{*got}}}, Want{Mesh: st})
	if err != nil || wrote != 0 {
		t.Fatalf("repeat: wrote %d err %v", wrote, err)
	}
}

func TestNewWithoutClient(t *testing.T) {
	if _, err := New(Config{}); err != ErrNoClient {
		t.Fatalf("got %v", err)
	}
}
