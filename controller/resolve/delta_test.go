package resolve

import (
	"slices"
	"strconv"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// incremental resolves in from prev as the controller does when only
// routes (and the slices of stale) changed (Reuse.OnlyRoutes), and
// reports whether the incremental resolution applied.
func incremental(in Input, prev Output, stale map[string]bool) (Output, bool) {
	in.Reuse = ReuseOf(prev)
	in.Reuse.WorkloadsValid, in.Reuse.RoutesValid, in.Reuse.OnlyRoutes = true, true, true
	in.Reuse.StaleServices = stale
	if prev.delta != nil {
		if out, ok := resolveRoutes(&in); ok {
			return out, true
		}
	}
	return Resolve(in), false
}

// withoutRoute is in without its i-th route (HTTPRoutes, then GRPCRoutes,
// then TCPRoutes).
func withoutRoute(in Input, i int) Input {
	switch {
	case i < len(in.HTTPRoutes):
		in.HTTPRoutes = slices.Delete(slices.Clone(in.HTTPRoutes), i, i+1)
	case i < len(in.HTTPRoutes)+len(in.GRPCRoutes):
		j := i - len(in.HTTPRoutes)
		in.GRPCRoutes = slices.Delete(slices.Clone(in.GRPCRoutes), j, j+1)
	default:
		j := i - len(in.HTTPRoutes) - len(in.GRPCRoutes)
		in.TCPRoutes = slices.Delete(slices.Clone(in.TCPRoutes), j, j+1)
	}
	return in
}

// TestIncrementalRouteChangeGivesTheSameOutput: for every golden input,
// resolving a route change incrementally (only the Service ports the
// changed routes claim attached again) renders exactly what resolving from
// scratch does: nothing changed; every other route changed; each route
// deleted; each route added; a route deleted and added back in two
// incremental rounds (the second builds on what the first kept); and a
// route changed in the round its EndpointSlices changed.
func TestIncrementalRouteChangeGivesTheSameOutput(t *testing.T) {
	applied, compared := 0, 0
	check := func(t *testing.T, what string, got Output, ok bool, want Output) {
		t.Helper()
		compared++
		if ok {
			applied++
		}
		compareRendered(t, what, got, want)
	}
	eachCase(t, func(t *testing.T, path string, in Input) {
		prev := Resolve(in)
		got, ok := incremental(in, prev, nil)
		if prev.delta != nil && !ok {
			t.Fatal("nothing changed, and the incremental resolution did not apply")
		}
		check(t, "nothing changed", got, ok, prev)

		changed := everyOtherRouteChanged(t, path)
		got, ok = incremental(changed, prev, nil)
		check(t, "every other route changed", got, ok, Resolve(changed))

		n := len(in.HTTPRoutes) + len(in.GRPCRoutes) + len(in.TCPRoutes)
		for i := range n {
			del := withoutRoute(in, i)
			without := Resolve(del)
			got, ok := incremental(del, prev, nil)
			check(t, "route "+strconv.Itoa(i)+" deleted", got, ok, without)
			got, ok = incremental(in, without, nil)
			check(t, "route "+strconv.Itoa(i)+" added", got, ok, prev)
			if deleted, ok := incremental(del, prev, nil); ok {
				got, ok := incremental(in, deleted, nil)
				check(t, "route "+strconv.Itoa(i)+" deleted and added back, incrementally", got, ok, prev)
			}
		}

		if len(in.HTTPRoutes) > 0 && len(in.EndpointSlices) > 0 {
			both := in
			// changed copies: in's objects are prev's too
			both.HTTPRoutes = slices.Clone(in.HTTPRoutes)
			hr := *both.HTTPRoutes[0]
			hr.ResourceVersion = "2"
			hr.Spec.Rules = slices.Clone(hr.Spec.Rules)
			slices.Reverse(hr.Spec.Rules)
			both.HTTPRoutes[0] = &hr
			both.EndpointSlices = slices.Clone(in.EndpointSlices)
			es := *both.EndpointSlices[0]
			both.EndpointSlices[0] = &es
			es.Endpoints = slices.Clone(es.Endpoints)
			if len(es.Endpoints) > 0 {
				es.Endpoints = es.Endpoints[1:]
			}
			stale := map[string]bool{es.Namespace + "/" + es.Labels[discoveryv1.LabelServiceName]: true}
			got, ok := incremental(both, prev, stale)
			check(t, "a route and an EndpointSlice changed", got, ok, Resolve(both))
		}
	})
	t.Logf("the incremental resolution applied in %d of %d comparisons", applied, compared)
	if applied < compared/2 {
		t.Fatalf("the incremental resolution applied in only %d of %d comparisons", applied, compared)
	}
}

// TestIncrementalRouteChangeTouchesOnlyItsPorts: after one route's weight
// changed in a generated cluster, only the Service port it is programmed
// on is built again; every other port (also one attached again because a
// route on both ports shares it with the changed one), cluster and status
// is the earlier resolution's own object, and every node with workloads
// gets the new port.
func TestIncrementalRouteChangeTouchesOnlyItsPorts(t *testing.T) {
	in := genCluster(benchConfig{Namespaces: 3, Nodes: 4, Services: 20, PodsPerService: 2, HTTPRoutes: 10, GRPCRoutes: 4, ConsumerRoutes: 3})
	// route-4 (on ns-1/svc-4:80) is also a consumer route on
	// ns-0/svc-3:80, which route-3 is on
	ns0, port := gwv1.Namespace("ns-0"), gwv1.PortNumber(80)
	in.HTTPRoutes[4].Spec.ParentRefs = append(in.HTTPRoutes[4].Spec.ParentRefs, gwv1.ParentReference{Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Namespace: &ns0, Name: "svc-3", Port: &port})
	versionRoutes(&in, func(int) string { return "1" })
	prev := Resolve(in)
	if prev.delta == nil {
		t.Fatal("the full resolution kept no state for an incremental one")
	}
	w := int32(50)
	in.HTTPRoutes[3].Spec.Rules[0].BackendRefs[0].Weight = &w
	in.HTTPRoutes[3].ResourceVersion = "2"
	got, ok := incremental(in, prev, nil)
	if !ok {
		t.Fatal("the incremental resolution did not apply")
	}
	compareRendered(t, "one weight changed", got, Resolve(in))

	rebuilt := 0
	for k, b := range got.ports.all() {
		if prev.ports.at(k).sp != b.sp {
			rebuilt++
			if want := (portKey{"ns-0", "svc-3", 80}); k != want {
				t.Errorf("port %v was built again; only %v should be", k, want)
			}
		}
	}
	if rebuilt != 1 {
		t.Errorf("%d ports built again, want 1", rebuilt)
	}
	changedStatuses := 0
	for i := range got.Statuses {
		if len(got.Statuses[i].Parents) > 0 && &got.Statuses[i].Parents[0] != &prev.Statuses[i].Parents[0] {
			changedStatuses++
		}
	}
	if changedStatuses > 1 {
		t.Errorf("%d statuses built again, want at most the changed route's", changedStatuses)
	}
	for n, p := range got.Nodes {
		if len(p.Workloads) == 0 {
			continue
		}
		if sameSlice(p.Services, prev.Nodes[n].Services) {
			t.Errorf("node %s kept the earlier Service ports", n)
		}
		if !sameSlice(p.Clusters, prev.Nodes[n].Clusters) {
			t.Errorf("node %s got other clusters, though no backend changed", n)
		}
	}
}

// TestIncrementalRouteChangeFallsBackOverTheRegexBudget: when a changed
// route would take the node policy over its regex budget, the budget's
// order (oldest route first) is global: the resolution is done in full and
// the newest route's rule is the one dropped.
func TestIncrementalRouteChangeFallsBackOverTheRegexBudget(t *testing.T) {
	in := genCluster(benchConfig{Namespaces: 2, Nodes: 2, Services: 4, PodsPerService: 1, HTTPRoutes: 2})
	versionRoutes(&in, func(int) string { return "1" })
	prev := Resolve(in)
	if prev.delta == nil {
		t.Fatal("the full resolution kept no state for an incremental one")
	}
	// a second, distinct pattern in the newest route, over a budget that
	// holds the first one
	in.Options.MaxNodeRegexProgramSize = prev.delta.regexTotal() + 1
	prev = Resolve(in)
	if prev.delta == nil {
		t.Fatal("nothing was dropped, and still no state was kept")
	}
	regex := gwv1.PathMatchRegularExpression
	newest := in.HTTPRoutes[len(in.HTTPRoutes)-1]
	newest.Spec.Rules[3].Matches[0].Path = &gwv1.HTTPPathMatch{Type: &regex, Value: ptr("/orders/[a-z]+/[0-9]+")}
	newest.ResourceVersion = "2"
	got, ok := incremental(in, prev, nil)
	if ok {
		t.Fatal("the incremental resolution applied over the regex budget")
	}
	compareRendered(t, "over the budget", got, Resolve(in))
	if got.delta != nil {
		t.Fatal("a resolution that dropped a rule kept state for an incremental one")
	}
}

// TestRouteChangesSortedOrNot: routes listed sorted by namespace and name
// (as the source lists them: a deleted route found by binary search) and
// in another order (found through a set) resolve alike incrementally, each
// route deleted and added back; a key listed twice is refused either way.
func TestRouteChangesSortedOrNot(t *testing.T) {
	sortedSome, unsortedSome, twice := false, false, false
	eachCase(t, func(t *testing.T, _ string, in Input) {
		for _, order := range []string{"sorted", "reversed"} {
			x := in
			x.HTTPRoutes, x.GRPCRoutes, x.TCPRoutes = slices.Clone(in.HTTPRoutes), slices.Clone(in.GRPCRoutes), slices.Clone(in.TCPRoutes)
			slices.SortStableFunc(x.HTTPRoutes, func(a, b *gwv1.HTTPRoute) int { return compareMeta(&a.ObjectMeta, &b.ObjectMeta) })
			slices.SortStableFunc(x.GRPCRoutes, func(a, b *gwv1.GRPCRoute) int { return compareMeta(&a.ObjectMeta, &b.ObjectMeta) })
			slices.SortStableFunc(x.TCPRoutes, func(a, b *gwv1.TCPRoute) int { return compareMeta(&a.ObjectMeta, &b.ObjectMeta) })
			if order == "reversed" {
				slices.Reverse(x.HTTPRoutes)
				slices.Reverse(x.GRPCRoutes)
				slices.Reverse(x.TCPRoutes)
			}
			sorted := strictlySorted(x.HTTPRoutes, httpMeta) && strictlySorted(x.GRPCRoutes, grpcMeta) && strictlySorted(x.TCPRoutes, tcpMeta)
			n := len(x.HTTPRoutes) + len(x.GRPCRoutes) + len(x.TCPRoutes)
			prev := Resolve(x)
			for i := range n {
				del := withoutRoute(x, i)
				without := Resolve(del)
				got, ok := incremental(del, prev, nil)
				compareRendered(t, order+": route "+strconv.Itoa(i)+" deleted", got, without)
				if ok && n > 1 {
					sortedSome = sortedSome || sorted
					unsortedSome = unsortedSome || !sorted
				}
				got, _ = incremental(x, without, nil)
				compareRendered(t, order+": route "+strconv.Itoa(i)+" added", got, prev)
			}
			if len(x.HTTPRoutes) > 0 && prev.delta != nil {
				dup := x
				dup.HTTPRoutes = slices.Insert(slices.Clone(x.HTTPRoutes), 0, x.HTTPRoutes[0])
				if _, ok := incremental(dup, prev, nil); ok {
					t.Errorf("%s: a route listed twice was taken incrementally", order)
				}
				twice = true
			}
		}
	})
	if !sortedSome || !unsortedSome || !twice {
		t.Fatalf("not every path was taken: sorted %v, in another order %v, a route twice %v", sortedSome, unsortedSome, twice)
	}
}
