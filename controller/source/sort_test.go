package source

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func shuffledRoutes(n int) []*gwv1.HTTPRoute {
	rs := make([]*gwv1.HTTPRoute, n)
	for i := range rs {
		rs[i] = &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns-%d", i%100), Name: fmt.Sprintf("route-%d", i)}}
	}
	rand.New(rand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
	return rs
}

func TestSortObjects(t *testing.T) {
	rs := shuffledRoutes(1000)
	sortObjects(rs)
	if !slices.IsSortedFunc(rs, func(a, b *gwv1.HTTPRoute) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	}) {
		t.Fatal("not sorted by namespace and name")
	}
}

// BenchmarkSortObjects sorts the 20,000 routes of issue #17's scale:
// "interface" reads the names through metav1.Object in every comparison,
// as sortObjects did; "names-once" is sortObjects.
func BenchmarkSortObjects(b *testing.B) {
	rs := shuffledRoutes(20000)
	byInterface := func(objs []*gwv1.HTTPRoute) {
		slices.SortFunc(objs, func(a, b *gwv1.HTTPRoute) int {
			ma, mb := any(a).(metav1.Object), any(b).(metav1.Object)
			return cmp.Or(cmp.Compare(ma.GetNamespace(), mb.GetNamespace()), cmp.Compare(ma.GetName(), mb.GetName()))
		})
	}
	for _, bc := range []struct {
		name string
		sort func([]*gwv1.HTTPRoute)
	}{{"interface", byInterface}, {"names-once", sortObjects[gwv1.HTTPRoute]}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				s := slices.Clone(rs)
				b.StartTimer()
				bc.sort(s)
			}
		})
	}
}
