package resolve

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/weft-mesh/weft/api/mesh"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// TestReuseGivesTheSameOutput: for every golden input, resolving with
// Reuse of an earlier resolution renders exactly what resolving without it
// does: with nothing changed, and after every EndpointSlice changed with
// its Service marked stale (the controller's endpoint churn).
func TestReuseGivesTheSameOutput(t *testing.T) {
	podsOnly := 0 // pod changes resolved by resolvePods
	defer func() {
		if !t.Failed() && podsOnly == 0 {
			t.Error("no pod change was resolved by resolvePods")
		}
	}()
	eachCase(t, func(t *testing.T, path string, in Input) {
		prev := Resolve(in)

		same := in
		same.Reuse = ReuseOf(prev)
		same.Reuse.WorkloadsValid = true
		got := Resolve(same)
		compareRendered(t, "unchanged", got, prev)
		clustersTakenOver(t, got, prev)

		changed, err := loadCase(path)
		if err != nil {
			t.Fatal(err)
		}
		stale := map[string]bool{}
		for _, es := range changed.EndpointSlices {
			for j := range es.Endpoints {
				ready := es.Endpoints[j].Conditions.Ready == nil || *es.Endpoints[j].Conditions.Ready
				notReady := !ready
				es.Endpoints[j].Conditions.Ready = &notReady
			}
			if len(es.Endpoints) > 1 {
				es.Endpoints = es.Endpoints[1:]
			}
			stale[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]] = true
		}
		want := Resolve(changed)
		changed.Reuse = ReuseOf(prev)
		changed.Reuse.StaleServices, changed.Reuse.WorkloadsValid = stale, true
		compareRendered(t, "endpoints changed", Resolve(changed), want)
		// nothing else changed: the previous Output with the stale
		// clusters rebuilt, routes not compiled again
		changed.Reuse = ReuseOf(prev)
		changed.Reuse.StaleServices, changed.Reuse.WorkloadsValid, changed.Reuse.OnlyEndpoints = stale, true, true
		if _, ok := resolveEndpoints(&changed); !ok {
			t.Fatal("the endpoints-only resolution did not apply")
		}
		compareRendered(t, "only endpoints changed", Resolve(changed), want)

		// every pod's readiness flipped, nothing else: the controller
		// reuses workloads, routes and Service clusters, and takes the
		// previous Output whole unless the input reads readiness
		flipped, err := loadCase(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range flipped.Pods {
			st := corev1.ConditionTrue
			if p.Ready() == corev1.ConditionTrue {
				st = corev1.ConditionFalse
			}
			p.Conditions = []PodCondition{{Type: corev1.PodReady, Status: st}}
		}
		want = Resolve(flipped)
		flipped.Reuse = ReuseOf(prev)
		flipped.Reuse.WorkloadsValid, flipped.Reuse.RoutesValid = true, true
		compareRendered(t, "readiness changed", Resolve(flipped), want)
		if !flipped.ReadsPodReadiness() {
			flipped.Reuse = ReuseOf(prev)
			flipped.Reuse.WorkloadsValid, flipped.Reuse.RoutesValid, flipped.Reuse.OnlyEndpoints = true, true, true
			compareRendered(t, "readiness changed, not read", Resolve(flipped), want)
		}

		// pods changed in everything resolution reads of them: routes
		// compile alike (RoutesValid), workloads and clusters are built
		// again (the controller's round after a pod change)
		moved, err := loadCase(path)
		if err != nil {
			t.Fatal(err)
		}
		var kept []*Pod
		for i, p := range moved.Pods {
			switch i % 4 {
			case 0: // deleted
				continue
			case 1:
				p.Labels = map[string]string{"moved": "yes"}
				p.ServiceAccountName += "-2"
			case 2:
				if len(moved.Nodes) > 0 {
					p.NodeName = moved.Nodes[(i/4)%len(moved.Nodes)].Name
				}
				p.Annotations = map[string]string{mesh.AnnotationMesh: mesh.MeshDisabled}
			case 3:
				p.Phase = corev1.PodSucceeded
			}
			kept = append(kept, p)
		}
		moved.Pods = kept
		want = Resolve(moved)
		moved.Reuse = ReusePods(ReuseOf(prev), nil, nil)
		compareRendered(t, "pods changed", Resolve(moved), want)
		moved.Reuse = ReusePods(ReuseOf(prev), append(slices.Clone(in.Pods), kept...), nil)
		moved.Reuse.OnlyPods = true
		compareRendered(t, "pods changed, listed, only pods", Resolve(moved), want)
		// one pod changed, listed as it was and as it is: the clusters
		// that do not name it and the workloads of other nodes are kept
		for k := range min(len(prev.Nodes)+2, len(in.Pods)) {
			for variant := range 4 {
				one, err := loadCase(path)
				if err != nil {
					t.Fatal(err)
				}
				p := one.Pods[k]
				was := *p
				changed := []*Pod{&was}
				switch variant {
				case 0:
					one.Pods = slices.Delete(one.Pods, k, k+1)
				case 1:
					p.Labels = map[string]string{"moved": "yes"}
					p.ServiceAccountName += "-2"
				case 2:
					if len(one.Nodes) > 0 {
						p.NodeName = one.Nodes[(k+1)%len(one.Nodes)].Name
					}
					p.Annotations = map[string]string{mesh.AnnotationMTLS: "bogus"}
				case 3:
					p.Phase = corev1.PodSucceeded
				}
				if variant != 0 {
					changed = append(changed, p)
				}
				want := Resolve(one)
				one.Reuse = ReusePods(ReuseOf(prev), changed, nil)
				got := Resolve(one)
				compareRendered(t, fmt.Sprintf("pod %d changed (%d), listed", k, variant), got, want)
				if !slices.Equal(got.InvalidMTLS, want.InvalidMTLS) {
					t.Fatalf("pod %d changed (%d): invalid mTLS %q, want %q", k, variant, got.InvalidMTLS, want.InvalidMTLS)
				}
				// nothing else changed: only what the pod reaches
				one.Reuse = ReusePods(ReuseOf(prev), changed, nil)
				one.Reuse.OnlyPods = true
				if _, ok := resolvePods(&one); ok {
					podsOnly++
				}
				got = Resolve(one)
				compareRendered(t, fmt.Sprintf("pod %d changed (%d), only pods", k, variant), got, want)
				if !slices.Equal(got.InvalidMTLS, want.InvalidMTLS) {
					t.Fatalf("pod %d changed (%d), only pods: invalid mTLS %q, want %q", k, variant, got.InvalidMTLS, want.InvalidMTLS)
				}
			}
		}
	})
}

// clustersTakenOver checks that every Service cluster of got is prev's
// own, found by Reuse and not built again (XBackend clusters always are).
func clustersTakenOver(t *testing.T, got, prev Output) {
	t.Helper()
	for n, p := range got.Nodes {
		was := map[string]*weftv1.Cluster{}
		for _, c := range prev.Nodes[n].GetClusters() {
			was[c.GetName()] = c
		}
		for _, c := range p.GetClusters() {
			if _, _, _, isSvc := serviceCluster(c.GetName()); isSvc && was[c.GetName()] != c {
				t.Errorf("node %s: cluster %s was built again, not taken over", n, c.GetName())
			}
		}
	}
}

func compareRendered(t *testing.T, what string, got, want Output) {
	t.Helper()
	g, err := render(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := render(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g, w) {
		t.Fatalf("%s: with Reuse:\n%s", what, lineDiff(string(w), string(g)))
	}
}

// TestPodsSortedOrNot: pods sorted by namespace and name with PodsSorted
// (as the source lists them: found by binary search) and pods in any other
// order (found through maps) resolve alike, in full and for endpoints
// only.
func TestPodsSortedOrNot(t *testing.T) {
	sortedSome := false
	eachCase(t, func(t *testing.T, _ string, in Input) {
		slices.Reverse(in.Pods)
		if len(in.Pods) > 1 && !slices.IsSortedFunc(in.Pods, comparePods) {
			sortedSome = true
		}
		unsorted := Resolve(in)
		slices.SortFunc(in.Pods, comparePods)
		in.PodsSorted = true
		compareRendered(t, "pods sorted", Resolve(in), unsorted)
		stale := map[string]bool{}
		for _, es := range in.EndpointSlices {
			stale[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]] = true
		}
		in.Reuse = ReuseOf(unsorted)
		in.Reuse.StaleServices, in.Reuse.WorkloadsValid, in.Reuse.OnlyEndpoints = stale, true, true
		compareRendered(t, "pods sorted, endpoints only", Resolve(in), unsorted)
	})
	if !sortedSome {
		t.Fatal("no case had pods out of order: the map path was not compared")
	}
}

// A resolution takes the earlier one's Services and EndpointSlices maps
// over when its listings are the very same slices, and builds its own for
// a new listing (a changed Service comes in a new slice; a patched
// EndpointSlices listing is a new slice of mostly the same pointers); an
// index of some namespaces only neither takes them nor hands its own on.
func TestListingMapsTakenOverForTheSameListingOnly(t *testing.T) {
	eachCase(t, func(t *testing.T, path string, in Input) {
		if len(in.Services) == 0 || len(in.EndpointSlices) == 0 {
			return
		}
		prev := Resolve(in)
		if prev.maps == nil {
			t.Fatal("a full resolution kept no maps")
		}
		same := in
		same.Reuse = ReuseOf(prev)
		ix := newIndex(&same)
		if !sameMap(ix.services, prev.maps.services.m) || !sameMap(ix.slices, prev.maps.slices.m) {
			t.Fatal("the same listings: the maps were built again")
		}
		relisted := same
		relisted.Services = slices.Clone(in.Services)
		ix = newIndex(&relisted)
		if sameMap(ix.services, prev.maps.services.m) || !sameMap(ix.slices, prev.maps.slices.m) {
			t.Fatal("a new Services listing: its map was taken over, or the EndpointSlices' was not")
		}
		if got := ix.services[objKey{in.Services[0].Namespace, in.Services[0].Name}]; got != &relisted.Services[0] {
			t.Fatal("the new Services map does not point into the new listing")
		}
		repatched := same
		repatched.EndpointSlices = slices.Clone(in.EndpointSlices)
		if ix = newIndex(&repatched); sameMap(ix.slices, prev.maps.slices.m) {
			t.Fatal("a new EndpointSlices listing of the same objects: its map was taken over")
		}
		if part := newIndexIn(&same, map[string]bool{in.Services[0].Namespace: true}); sameMap(part.services, prev.maps.services.m) || part.maps() != nil {
			t.Fatal("an index of some namespaces took the maps over, or hands its own on")
		}
	})
}

func sameMap[K comparable, V any](a, b map[K]V) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// TestPodsChangedAcrossNamespaces: an EndpointSlice may name a pod of
// another namespace; when that pod changes, the Service's cluster is built
// again though its own namespace had no pod change.
func TestPodsChangedAcrossNamespaces(t *testing.T) {
	in := genCluster(benchConfig{Namespaces: 3, Nodes: 4, Services: 6, PodsPerService: 2})
	es := in.EndpointSlices[0] // svc-0, in ns-0
	ep := &es.Endpoints[0]
	far := &Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns-1", Name: "far", UID: "f"}, NodeName: *ep.NodeName,
		ServiceAccountName: "far", Phase: corev1.PodRunning, PodIP: ep.Addresses[0]}
	ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "ns-1", Name: "far"}
	in.Pods = append(in.Pods, far)
	prev := Resolve(in)

	moved := *far
	moved.ServiceAccountName = "far-2"
	in.Pods[len(in.Pods)-1] = &moved
	want := Resolve(in)
	in.Reuse = ReusePods(ReuseOf(prev), []*Pod{far, &moved}, nil)
	got := Resolve(in)
	compareRendered(t, "a pod named across namespaces changed", got, want)
	found := false
	for _, c := range got.Nodes[far.NodeName].GetClusters() {
		for _, e := range c.GetEndpoints() {
			if e.GetPod() == "ns-1/far" {
				found = strings.HasSuffix(e.GetIdentity(), "/sa/far-2")
			}
		}
	}
	if !found {
		t.Fatal("no endpoint of pod ns-1/far with its new identity")
	}
}

// An AuthorizationPolicy changed (deleted, retargeted, its action or rules
// changed, made invalid) and nothing else: resolving authorization alone
// on the previous Output gives what the full resolution gives.
func TestAuthzOnlyGivesTheSameOutput(t *testing.T) {
	authzOnly := 0 // changes resolved by resolveAuthzOnly
	eachCase(t, func(t *testing.T, path string, in Input) {
		prev := Resolve(in)
		for k := range in.AuthorizationPolicies {
			for variant := range 5 {
				one, err := loadCase(path)
				if err != nil {
					t.Fatal(err)
				}
				one.AuthzInForce = prev.AuthzInForce
				p := &one.AuthorizationPolicies[k]
				p.Generation++
				switch variant {
				case 0:
					one.AuthorizationPolicies = slices.Delete(one.AuthorizationPolicies, k, k+1)
				case 1:
					for i := range p.Spec.TargetRefs {
						p.Spec.TargetRefs[i].Selector = &metav1.LabelSelector{}
					}
				case 2:
					p.Spec.Action = map[policyv1a1.Action]policyv1a1.Action{policyv1a1.ActionAllow: policyv1a1.ActionDeny}[p.Spec.Action]
					if p.Spec.Action == "" {
						p.Spec.Action = policyv1a1.ActionAllow
					}
				case 3:
					p.Spec.Rules = nil
				case 4: // not accepted: the last accepted generation stays
					for i := range p.Spec.TargetRefs {
						p.Spec.TargetRefs[i].Kind = "Service"
					}
				}
				what := fmt.Sprintf("policy %d changed (%d)", k, variant)
				want := Resolve(one)
				one.Reuse = ReuseOf(prev)
				one.Reuse.WorkloadsValid, one.Reuse.RoutesValid, one.Reuse.OnlyAuthz = true, true, true
				if _, ok := resolveAuthzOnly(&one); ok {
					authzOnly++
				}
				got := Resolve(one)
				compareRendered(t, what, got, want)
				if !equality.Semantic.DeepEqual(got.AuthzStatuses, want.AuthzStatuses) {
					t.Fatalf("%s: statuses %+v, want %+v", what, got.AuthzStatuses, want.AuthzStatuses)
				}
				inForce := func(o Output) map[types.UID]int64 {
					m := map[types.UID]int64{}
					for uid, c := range o.AuthzInForce {
						m[uid] = c.Generation
					}
					return m
				}
				if g, w := inForce(got), inForce(want); !maps.Equal(g, w) {
					t.Fatalf("%s: in force %v, want %v", what, g, w)
				}
			}
		}
	})
	if authzOnly == 0 {
		t.Fatal("no policy change was resolved by resolveAuthzOnly")
	}
}
