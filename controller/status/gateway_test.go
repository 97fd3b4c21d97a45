package status

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/resolve"
)

func gwRef(name string) gwv1.ParentReference {
	return gwv1.ParentReference{Name: gwv1.ObjectName(name)}
}

// A route with a Service parent and a Gateway parent gets both entries, each
// with its controllerName, and a second write with the same decisions costs
// nothing (no reordering between the two lists).
func TestWriteMeshAndGatewayEntries(t *testing.T) {
	r := route("r")
	w, cs, n := newWriter(t, r)
	ctx := context.Background()
	gwParent := resolve.ParentStatus{Ref: gwRef("edge"), Conditions: []metav1.Condition{
		{Type: "Accepted", Status: "True", Reason: "Accepted", Message: "ok", ObservedGeneration: 1},
	}}
	want := Want{Mesh: statuses(accepted("a")), Gateway: &gateway.Output{Routes: []resolve.ObjectStatus{
		{Kind: "HTTPRoute", Namespace: "ns", Name: "r", Generation: 1, Parents: []resolve.ParentStatus{gwParent}},
	}}}
	if wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{r}}}, want); err != nil || wrote != 1 {
		t.Fatalf("wrote %d err %v", wrote, err)
	}
	got, _ := cs.GatewayV1().HTTPRoutes("ns").Get(ctx, "r", metav1.GetOptions{})
	ps := got.Status.Parents
	if len(ps) != 2 || ps[0].ControllerName != resolve.ControllerName || ps[1].ControllerName != gateway.ControllerName || ps[1].ParentRef.Name != "edge" {
		t.Fatalf("parents %+v", ps)
	}
	n.updates = 0
	if wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{got}}}, want); err != nil || wrote != 0 || n.updates != 0 {
		t.Fatalf("repeat: wrote %d updates %d err %v", wrote, n.updates, err)
	}
	// The gateway's decision alone removes the mesh's entry, not its own.
	want.Mesh = nil
	if _, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{got}}}, want); err != nil {
		t.Fatal(err)
	}
	got, _ = cs.GatewayV1().HTTPRoutes("ns").Get(ctx, "r", metav1.GetOptions{})
	if len(got.Status.Parents) != 1 || got.Status.Parents[0].ControllerName != gateway.ControllerName {
		t.Fatalf("parents %+v", got.Status.Parents)
	}
}

func TestWriteGatewayKeepsForeignConditions(t *testing.T) {
	g := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "edge", Generation: 2}}
	g.Status.Conditions = []metav1.Condition{
		cond("Accepted", "True", "Accepted", t0),
		cond("Programmed", "True", "Programmed", t0),
		cond("example.com/Audited", "True", "Audited", t0),
	}
	g.Status.Listeners = []gwv1.ListenerStatus{{Name: "http", Conditions: []metav1.Condition{
		cond("Conflicted", "True", "HostnameConflict", t0), cond("example.com/X", "True", "X", t0),
	}}}
	w, cs, _ := newWriter(t)
	ctx := context.Background()
	// Created through the client: the fake's tracker files a seeded Gateway
	// under another version.
	if _, err := cs.GatewayV1().Gateways("ns").Create(ctx, g, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := gwv1.GatewayStatus{
		Addresses: []gwv1.GatewayStatusAddress{{Value: "192.0.2.1"}},
		Conditions: []metav1.Condition{
			{Type: "Accepted", Status: "True", Reason: "Accepted", ObservedGeneration: 2},
			{Type: "Programmed", Status: "False", Reason: "AddressNotAssigned", ObservedGeneration: 2},
		},
		Listeners: []gwv1.ListenerStatus{{Name: "http", AttachedRoutes: 1, SupportedKinds: []gwv1.RouteGroupKind{{Kind: "HTTPRoute"}},
			Conditions: []metav1.Condition{{Type: "Accepted", Status: "True", Reason: "Accepted", ObservedGeneration: 2}}}},
	}
	out := Want{Gateway: &gateway.Output{Gateways: []gateway.GatewayStatus{{Namespace: "ns", Name: "edge", Generation: 2, Status: want}}}}
	if wrote, err := w.Write(ctx, Objects{Gateway: gateway.Input{Gateways: []gwv1.Gateway{*g}}}, out); err != nil || wrote != 1 {
		t.Fatalf("wrote %d err %v", wrote, err)
	}
	got, _ := cs.GatewayV1().Gateways("ns").Get(ctx, "edge", metav1.GetOptions{})
	st := got.Status
	if acc := meta.FindStatusCondition(st.Conditions, "Accepted"); acc == nil || !acc.LastTransitionTime.Equal(&t0) || acc.ObservedGeneration != 2 {
		t.Errorf("Accepted %+v: want generation 2, transition time kept", acc)
	}
	if p := meta.FindStatusCondition(st.Conditions, "Programmed"); p == nil || p.Status != "False" || !p.LastTransitionTime.Equal(&t1) {
		t.Errorf("Programmed %+v: want False since now", p)
	}
	if meta.FindStatusCondition(st.Conditions, "example.com/Audited") == nil {
		t.Error("another controller's condition was dropped")
	}
	if len(st.Addresses) != 1 || len(st.Listeners) != 1 || st.Listeners[0].AttachedRoutes != 1 {
		t.Fatalf("addresses/listeners %+v", st)
	}
	lc := st.Listeners[0].Conditions
	if meta.FindStatusCondition(lc, "Conflicted") != nil || meta.FindStatusCondition(lc, "example.com/X") == nil || meta.FindStatusCondition(lc, "Accepted") == nil {
		t.Errorf("listener conditions %+v: owned Conflicted removed, foreign kept, Accepted set", lc)
	}
	if wrote, err := w.Write(ctx, Objects{Gateway: gateway.Input{Gateways: []gwv1.Gateway{*got}}}, out); err != nil || wrote != 0 {
		t.Fatalf("repeat: wrote %d err %v", wrote, err)
	}
	// A Gateway Weft has no status for (another class) is left alone.
	if wrote, err := w.Write(ctx, Objects{Gateway: gateway.Input{Gateways: []gwv1.Gateway{*got}}}, Want{}); err != nil || wrote != 0 {
		t.Fatalf("not ours: wrote %d err %v", wrote, err)
	}
}
