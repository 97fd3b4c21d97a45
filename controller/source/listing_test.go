package source

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/resolve"
)

// TestPatchedListingsMatchListing: after every burst of adds, updates and
// deletes (recorded as the event handlers record them, after the store has
// them), the copies of Services (by value) and pods (by pointer) equal a
// listing made from scratch; bursts past maxPatch list again.
func TestPatchedListingsMatchListing(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	services := cache.NewIndexer(cache.MetaNamespaceKeyFunc, nil)
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, nil)
	s := &Source{gens: map[string]uint64{}}
	rv := 0
	meta := func() metav1.ObjectMeta {
		rv++
		// few namespaces and names, so that inserts land between
		// existing objects, and names that sort apart from their keys
		return metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", rng.IntN(4)) + []string{"", "-a"}[rng.IntN(2)], Name: "r" + strconv.Itoa(rng.IntN(300)), ResourceVersion: strconv.Itoa(rv)}
	}
	op := func(store cache.Indexer, obj metav1.Object, runtimeObj any) {
		_, exists, _ := store.Get(runtimeObj)
		if exists && rng.IntN(3) == 0 {
			if err := store.Delete(runtimeObj); err != nil {
				t.Fatal(err)
			}
		} else if err := store.Add(runtimeObj); err != nil {
			t.Fatal(err)
		}
		s.record(runtimeObj, true)
	}
	check := func(round int) {
		gotS, err := listCached[corev1.Service](s, "services", services)
		if err != nil {
			t.Fatal(err)
		}
		wantS, _ := storeList[corev1.Service](services)
		if len(gotS) != len(wantS) {
			t.Fatalf("round %d: %d services listed, the store has %d", round, len(gotS), len(wantS))
		}
		for i := range gotS {
			if gotS[i].Namespace != wantS[i].Namespace || gotS[i].Name != wantS[i].Name || gotS[i].ResourceVersion != wantS[i].ResourceVersion {
				t.Fatalf("round %d: service %d is %s/%s@%s, want %s/%s@%s", round, i, gotS[i].Namespace, gotS[i].Name, gotS[i].ResourceVersion, wantS[i].Namespace, wantS[i].Name, wantS[i].ResourceVersion)
			}
		}
		gotP, err := listPointersCached[resolve.Pod](s, "pods", pods)
		if err != nil {
			t.Fatal(err)
		}
		wantP, _ := storeList[resolve.Pod](pods)
		if !slices.Equal(gotP, wantP) {
			t.Fatalf("round %d: pods listed differ from the store's", round)
		}
	}
	for round := range 200 {
		n := rng.IntN(20)
		if round%25 == 24 {
			n = maxPatch + 50 // too many to patch
		}
		for range n {
			m := meta()
			op(services, &m, &corev1.Service{ObjectMeta: m})
			pm := meta()
			op(pods, &pm, &resolve.Pod{ObjectMeta: pm})
		}
		check(round)
		check(round) // unchanged: the same copy
	}
}

// TestCachedPatchesOrLists: a copy with no event since is returned as is;
// after events on a few objects it is patched with exactly their keys,
// sorted; after more than maxPatch, or one on an object without a name,
// it is listed again.
func TestCachedPatchesOrLists(t *testing.T) {
	s := &Source{gens: map[string]uint64{}}
	var lists int
	var patched [][]nsName
	get := func() ([]string, error) {
		return cached(s, "httproutes", func() ([]string, error) {
			lists++
			return []string{"listed"}, nil
		}, func(prev []string, keys []nsName) ([]string, error) {
			patched = append(patched, keys)
			return append(slices.Clone(prev), "patched"), nil
		})
	}
	route := func(ns, name string) *gwv1.HTTPRoute {
		return &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	get()
	get()
	if lists != 1 || len(patched) != 0 {
		t.Fatalf("first listing and an unchanged one: %d listings, %d patches", lists, len(patched))
	}
	s.record(route("b", "x"), true)
	s.record(route("a", "y"), false) // a status write: stale as well
	s.record(route("b", "x"), true)
	if got, _ := get(); lists != 1 || len(patched) != 1 || !slices.Equal(patched[0], []nsName{{"a", "y"}, {"b", "x"}}) || !slices.Equal(got, []string{"listed", "patched"}) {
		t.Fatalf("after 3 events: %d listings, patches %v, got %v", lists, patched, got)
	}
	s.record(route("c", "z"), true)
	if get(); len(patched) != 2 || !slices.Equal(patched[1], []nsName{{"c", "z"}}) {
		t.Fatalf("the next patch: %v, want only c/z", patched)
	}
	for i := range maxPatch + 1 {
		s.record(route("a", strconv.Itoa(i)), true)
	}
	if get(); lists != 2 || len(patched) != 2 {
		t.Fatalf("after %d events: %d listings, %d patches", maxPatch+1, lists, len(patched))
	}
	s.record(route("a", ""), true)
	if get(); lists != 3 {
		t.Fatalf("after an event without a name: %d listings", lists)
	}
	s.record(&resolve.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p"}}, true)
	if get(); lists != 3 || len(patched) != 2 {
		t.Fatalf("a pod's event changed the routes' copy: %d listings, %d patches", lists, len(patched))
	}
}
