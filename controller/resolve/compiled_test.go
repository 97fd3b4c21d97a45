package resolve

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// versionRoutes gives every route a UID and resourceVersion rv (the
// golden inputs have none, and a route without one is never reused).
func versionRoutes(in *Input, rv func(i int) string) {
	i := 0
	set := func(m *metav1.ObjectMeta) {
		m.UID = types.UID("uid-" + m.Namespace + "-" + m.Name)
		m.ResourceVersion = rv(i)
		i++
	}
	for _, r := range in.HTTPRoutes {
		set(&r.ObjectMeta)
	}
	for _, r := range in.GRPCRoutes {
		set(&r.ObjectMeta)
	}
	for _, r := range in.TCPRoutes {
		set(&r.ObjectMeta)
	}
}

// TestReuseOfCompiledRoutesGivesTheSameOutput: for every golden input,
// resolving with the routes an earlier resolution compiled renders exactly
// what compiling them all does: with no route changed (twice in a row:
// attachment and the regex budget must leave the kept routes as they were
// compiled), and with every other route changed (its rules reversed and
// its resourceVersion new).
func TestReuseOfCompiledRoutesGivesTheSameOutput(t *testing.T) {
	eachCase(t, func(t *testing.T, path string, in Input) {
		prev := Resolve(in)
		reusing := func(in Input, prev Output) Input {
			in.Reuse = ReuseOf(prev)
			in.Reuse.WorkloadsValid, in.Reuse.RoutesValid = true, true
			return in
		}
		again := Resolve(reusing(in, prev))
		compareRendered(t, "no route changed", again, prev)
		for k, c := range again.routes.all() {
			if prev.routes.at(k) != c {
				t.Fatalf("route %v was compiled again", k)
			}
		}
		// a port under an XBackendTrafficPolicy is built again, for the
		// policy's status
		sticky := map[objKey]bool{}
		for _, p := range in.BackendTrafficPolicies {
			for _, ref := range p.Spec.TargetRefs {
				sticky[objKey{p.Namespace, string(ref.Name)}] = true
			}
		}
		for k, b := range again.ports.all() {
			if !sticky[objKey{k.ns, k.name}] && prev.ports.at(k).sp != b.sp {
				t.Fatalf("Service port %v was built again", k)
			}
		}
		for c, b := range again.statuses.all() {
			if p, ok := prev.statuses.get(c); !ok || len(b.status) > 0 && &p.status[0] != &b.status[0] {
				t.Fatalf("the status of route %s/%s was built again", c.rt.ns, c.rt.name)
			}
		}
		compareRendered(t, "no route changed, twice", Resolve(reusing(in, again)), prev)

		changed := everyOtherRouteChanged(t, path)
		compareRendered(t, "every other route changed", Resolve(reusing(changed, prev)), Resolve(changed))
	})
}

// everyOtherRouteChanged is the golden input at path with every other
// HTTPRoute and GRPCRoute changed: its rules reversed and its
// resourceVersion new.
func everyOtherRouteChanged(t *testing.T, path string) Input {
	t.Helper()
	changed, err := loadCase(path)
	if err != nil {
		t.Fatal(err)
	}
	versionRoutes(&changed, func(i int) string { return strconv.Itoa(1 + i%2) })
	for i := range changed.HTTPRoutes {
		if i%2 == 1 {
			slices.Reverse(changed.HTTPRoutes[i].Spec.Rules)
		}
	}
	for i := range changed.GRPCRoutes {
		if (len(changed.HTTPRoutes)+i)%2 == 1 {
			slices.Reverse(changed.GRPCRoutes[i].Spec.Rules)
		}
	}
	return changed
}

// A route is compiled again when the Services it refers to may have
// changed (RoutesValid unset), even at the same resourceVersion.
func TestCompiledRoutesNotReusedUnlessValid(t *testing.T) {
	in, err := loadCase("testdata/status-backend-not-found.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	versionRoutes(&in, func(int) string { return "1" })
	prev := Resolve(in)
	in.Reuse = ReuseOf(prev)
	out := Resolve(in)
	if out.routes.len() == 0 {
		t.Fatal("no compiled routes kept")
	}
	for k, c := range out.routes.all() {
		if prev.routes.at(k) == c {
			t.Fatalf("route %v was reused without RoutesValid", k)
		}
	}
}

// TestReuseAfterARouteIsDeleted: for every golden input and each of its
// routes, resolving with that route deleted and the rest taken from the
// earlier resolution renders what resolving from scratch does. The routes
// left are the same compilations, but what attached next to them changed:
// a route that lost a port to the deleted one (a kind conflict, an older
// TCPRoute, the regex budget) must get its port and its status back.
func TestReuseAfterARouteIsDeleted(t *testing.T) {
	eachCase(t, func(t *testing.T, _ string, in Input) {
		prev := Resolve(in)
		n := len(in.HTTPRoutes) + len(in.GRPCRoutes) + len(in.TCPRoutes)
		for i := range n {
			del := withoutRoute(in, i)
			want := Resolve(del)
			del.Reuse = ReuseOf(prev)
			del.Reuse.WorkloadsValid, del.Reuse.RoutesValid = true, true
			compareRendered(t, "route "+strconv.Itoa(i)+" deleted", Resolve(del), want)
		}
	})
}

// eachCase runs f, as a subtest, on every golden input (read from path)
// with a UID and resourceVersion "1" on every route.
func eachCase(t *testing.T, f func(t *testing.T, path string, in Input)) {
	cases, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatal(cases, err)
	}
	for _, path := range cases {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".in.yaml"), func(t *testing.T) {
			in, err := loadCase(path)
			if err != nil {
				t.Fatal(err)
			}
			versionRoutes(&in, func(int) string { return "1" })
			f(t, path, in)
		})
	}
}
