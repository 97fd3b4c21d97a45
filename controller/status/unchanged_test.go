package status

import (
	"context"
	"fmt"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/resolve"
)

// A route found with the wanted status is skipped by the next Write while
// its resourceVersion, its status list and the wanted entries are the same;
// a change of any of them is compared again, and written.
func TestUnchangedRoutesSkippedUntilAnInputChanges(t *testing.T) {
	r := route("r")
	w, cs, n := newWriter(t, r)
	ctx := context.Background()
	want := Want{Mesh: statuses(accepted("a"))}
	if wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{r}}}, want); err != nil || wrote != 1 {
		t.Fatalf("first write: wrote %d err %v", wrote, err)
	}
	got, err := cs.GatewayV1().HTTPRoutes("ns").Get(ctx, "r", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.ResourceVersion = "2" // the fake keeps it; the API server changes it on every write
	cached := Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{got}}}
	for i := range 2 {
		if wrote, err := w.Write(ctx, cached, want); err != nil || wrote != 0 {
			t.Fatalf("repeat %d: wrote %d err %v", i, wrote, err)
		}
		if k := w.unchanged.kinds["HTTPRoute"]; k == nil || len(k.prev) != 1 || k.prev[0].name != "r" {
			t.Fatalf("repeat %d: the route is not remembered as unchanged", i)
		}
	}

	// Another writer replaced our entry in place (same resourceVersion, as
	// only a fake allows): the new list is compared, and ours put back.
	overwritten := got.DeepCopy()
	overwritten.Status.Parents[0].Conditions[0].Status = metav1.ConditionFalse
	n.updates = 0
	if wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{overwritten}}}, want); err != nil || wrote != 1 || n.updates != 1 {
		t.Fatalf("overwritten status: wrote %d updates %d err %v", wrote, n.updates, err)
	}

	// A new decision about the unchanged route is written.
	changed := accepted("a")
	changed.Conditions[0].Message = "changed"
	if wrote, err := w.Write(ctx, cached, Want{Mesh: statuses(changed)}); err != nil || wrote != 1 {
		t.Fatalf("new decision: wrote %d err %v", wrote, err)
	}
}

// Owning the gateway's entries too (its decision arrived) compares every
// route again: entries remembered with fewer owners say nothing.
func TestUnchangedForgottenWhenOwnersChange(t *testing.T) {
	gwEntry := gwv1.RouteParentStatus{ParentRef: gwv1.ParentReference{Name: "gw"}, ControllerName: gateway.ControllerName,
		Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", t0)}}
	r := route("r", gwEntry)
	w, cs, _ := newWriter(t, r)
	ctx := context.Background()
	want := Want{Mesh: statuses(accepted("a"))}
	if wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{r}}}, want); err != nil || wrote != 1 {
		t.Fatalf("first write: wrote %d err %v", wrote, err)
	}
	got, _ := cs.GatewayV1().HTTPRoutes("ns").Get(ctx, "r", metav1.GetOptions{})
	got.ResourceVersion = "2"
	cached := Objects{Mesh: resolve.Input{HTTPRoutes: []*gwv1.HTTPRoute{got}}}
	if wrote, err := w.Write(ctx, cached, want); err != nil || wrote != 0 {
		t.Fatalf("repeat: wrote %d err %v", wrote, err)
	}
	// The gateway now decides, and wants no entry on this route.
	want.Gateway = &gateway.Output{}
	if wrote, err := w.Write(ctx, cached, want); err != nil || wrote != 1 {
		t.Fatalf("with the gateway's decision: wrote %d err %v", wrote, err)
	}
	got, _ = cs.GatewayV1().HTTPRoutes("ns").Get(ctx, "r", metav1.GetOptions{})
	for _, p := range got.Status.Parents {
		if p.ControllerName == gateway.ControllerName {
			t.Fatalf("the gateway's stale entry was kept: %+v", got.Status.Parents)
		}
	}
}

// BenchmarkWriteUnchanged is a status pass over 20,000 routes that all have
// the wanted status (issue #17's scale): "compared" compares every route,
// as every pass did before the writer remembered unchanged routes;
// "remembered" is the pass after one that found them unchanged.
func BenchmarkWriteUnchanged(b *testing.B) {
	const n = 20000
	routes := make([]*gwv1.HTTPRoute, n)
	var want []resolve.ObjectStatus
	for i := range routes {
		name := fmt.Sprintf("r%05d", i)
		a := accepted("a")
		ps := make([]gwv1.RouteParentStatus, 1)
		ps[0] = gwv1.RouteParentStatus{ParentRef: a.Ref, ControllerName: resolve.ControllerName, Conditions: append([]metav1.Condition(nil), a.Conditions...)}
		for j := range ps[0].Conditions {
			ps[0].Conditions[j].LastTransitionTime = t0
		}
		r := route(name, ps...)
		routes[i] = r
		want = append(want, resolve.ObjectStatus{Kind: "HTTPRoute", Namespace: "ns", Name: name, Generation: 1, Parents: []resolve.ParentStatus{a}})
	}
	objs := Objects{Mesh: resolve.Input{HTTPRoutes: routes}}
	ctx := context.Background()
	for _, bc := range []struct {
		name     string
		remember bool
	}{{"compared", false}, {"remembered", true}} {
		b.Run(bc.name, func(b *testing.B) {
			w, _, _ := newWriter(b)
			if _, err := w.Write(ctx, objs, Want{Mesh: want}); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if !bc.remember {
					w.unchanged = unchanged{}
				}
				if wrote, err := w.Write(ctx, objs, Want{Mesh: want}); err != nil || wrote != 0 {
					b.Fatalf("wrote %d err %v", wrote, err)
				}
			}
		})
	}
}

// Each object gets its own wanted entries whatever order the objects and
// the statuses come in (a Write looks them up in listing order first), an
// object with none wanted loses Weft's entry, and the next Write over the
// same objects, in another order again, finds every one unchanged.
func TestWriteMatchesStatusesInAnyOrder(t *testing.T) {
	ours := func(ref string) gwv1.RouteParentStatus {
		a := accepted(ref)
		return gwv1.RouteParentStatus{ParentRef: a.Ref, ControllerName: resolve.ControllerName, Conditions: a.Conditions}
	}
	names := []string{"d", "a", "c", "b", "e"}
	var objs []runtime.Object
	var routes []*gwv1.HTTPRoute
	for _, n := range names {
		r := route(n, ours("stale"))
		objs = append(objs, r)
		routes = append(routes, r)
	}
	w, cs, _ := newWriter(t, objs...)
	ctx := context.Background()
	// "e" is wanted with no entry; the others with a parent named after
	// them. A GRPCRoute status of the same name must not be taken for "a"'s.
	var want []resolve.ObjectStatus
	for _, n := range []string{"b", "d", "a", "c"} {
		want = append(want, resolve.ObjectStatus{Kind: "HTTPRoute", Namespace: "ns", Name: n, Generation: 1, Parents: []resolve.ParentStatus{accepted("svc-" + n)}})
	}
	want = append(want, resolve.ObjectStatus{Kind: "GRPCRoute", Namespace: "ns", Name: "a", Generation: 1, Parents: []resolve.ParentStatus{accepted("grpc")}})
	if wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: routes}}, Want{Mesh: want}); err != nil || wrote != 5 {
		t.Fatalf("first write: wrote %d err %v", wrote, err)
	}
	var fresh []*gwv1.HTTPRoute
	for _, n := range []string{"c", "e", "a", "d", "b"} {
		got, err := cs.GatewayV1().HTTPRoutes("ns").Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var refs []string
		for _, p := range got.Status.Parents {
			refs = append(refs, string(p.ParentRef.Name))
		}
		wantRefs := []string{"svc-" + n}
		if n == "e" {
			wantRefs = nil
		}
		if !slices.Equal(refs, wantRefs) {
			t.Errorf("route %s has parents %v, want %v", n, refs, wantRefs)
		}
		got.ResourceVersion = "2"
		fresh = append(fresh, got)
	}
	// Listed afresh: compared, all equal, remembered.
	if wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: fresh}}, Want{Mesh: want}); err != nil || wrote != 0 {
		t.Fatalf("second write: wrote %d err %v", wrote, err)
	}
	k := w.unchanged.kinds["HTTPRoute"]
	if k == nil || len(k.prev) != 5 {
		t.Fatalf("remembered %v, want the 5 routes", k)
	}
	// kept sorted whatever the listing order, or the next Write's lookups
	// would miss and compare every object again
	if !slices.IsSortedFunc(k.prev, func(a, b unchangedEntry) int { return compareKey(a.namespace, a.name, b.namespace, b.name) }) {
		t.Fatalf("remembered entries out of order: %v", k.prev)
	}
	// Remembered: skipped, in yet another order, and still all remembered.
	slices.Reverse(fresh)
	if wrote, err := w.Write(ctx, Objects{Mesh: resolve.Input{HTTPRoutes: fresh}}, Want{Mesh: want}); err != nil || wrote != 0 {
		t.Fatalf("third write: wrote %d err %v", wrote, err)
	}
	if k := w.unchanged.kinds["HTTPRoute"]; len(k.prev) != 5 {
		t.Fatalf("remembered %d routes after a reversed listing, want 5", len(k.prev))
	}
}

func TestCursorFinds(t *testing.T) {
	type kv struct{ ns, name string }
	s := []kv{{"a", "1"}, {"a", "2"}, {"b", "1"}, {"c", "0"}}
	c := newCursor(s, func(e *kv) (string, string) { return e.ns, e.name })
	for _, q := range []kv{{"a", "1"}, {"a", "2"}, {"c", "0"}, {"a", "1"}, {"b", "0"}, {"b", "1"}, {"d", "0"}, {"", ""}} {
		got := c.find(q.ns, q.name)
		want := slices.Index(s, q)
		switch {
		case want < 0 && got != nil:
			t.Errorf("find %v = %v, want none", q, *got)
		case want >= 0 && (got == nil || got != &s[want]):
			t.Errorf("find %v = %v, want element %d", q, got, want)
		}
	}
}

// TestSortedListsCheckedOncePerList: a list the last Write found sorted is
// not checked again; another list, the same one at another length, and a
// list found unsorted are; and a list not seen in the last Write is
// checked again.
func TestSortedListsCheckedOncePerList(t *testing.T) {
	var s sortedLists
	a, b := make([]int, 4), make([]int, 4)
	calls := 0
	check := func(l []int, n int, sorted bool) bool {
		return s.check(&l[0], n, func() bool { calls++; return sorted })
	}
	for i, c := range []struct {
		list      []int
		n         int
		sorted    bool
		want      bool
		wantCalls int
		rotate    bool
	}{
		{a, 4, true, true, 1, true},    // first sight: checked
		{a, 4, true, true, 1, false},   // found sorted last Write: not checked
		{b, 4, false, false, 2, false}, // another list, unsorted: checked
		{a, 3, true, true, 3, true},    // same array, another length: checked
		{b, 4, false, false, 4, true},  // unsorted lists are checked every time
		{a, 4, true, true, 5, true},    // not seen in the last Write: checked
		{a, 4, true, true, 5, false},   // seen in the last one: not
	} {
		if got := check(c.list, c.n, c.sorted); got != c.want || calls != c.wantCalls {
			t.Fatalf("step %d: check = %v with %d checks so far, want %v with %d", i, got, calls, c.want, c.wantCalls)
		}
		if c.rotate {
			s.rotate()
		}
	}
}
