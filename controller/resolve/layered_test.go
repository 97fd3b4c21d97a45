package resolve

import (
	"maps"
	"math/rand/v2"
	"testing"
)

// TestLayeredMatchesAMap: a chain of layered maps, each derived from the
// one before and changed in a few keys (as resolutions take them over),
// holds what a plain map changed the same way holds, and every earlier map
// of the chain still holds what it held when it was derived from.
func TestLayeredMatchesAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	type gen struct {
		l    *layered[int, int]
		want map[int]int
	}
	var chain []gen
	l := newLayered[int, int](0)
	want := map[int]int{}
	for i := range 300 {
		want[i] = i
		l.set(i, i)
	}
	for round := range 400 {
		chain = append(chain, gen{l, maps.Clone(want)})
		l = l.derive()
		// a few changes per round, and now and then many (a fold)
		n := 1 + rng.IntN(4)
		if round%50 == 49 {
			n = 100
		}
		for range n {
			k := rng.IntN(400)
			switch rng.IntN(3) {
			case 0:
				l.del(k)
				delete(want, k)
			default:
				v := rng.Int()
				l.set(k, v)
				want[k] = v
			}
		}
		check(t, l, want, round)
	}
	for i, g := range chain {
		check(t, g.l, g.want, i)
	}
}

func check(t *testing.T, l *layered[int, int], want map[int]int, round int) {
	t.Helper()
	if l.len() != len(want) {
		t.Fatalf("round %d: len %d, want %d", round, l.len(), len(want))
	}
	got := map[int]int{}
	for k, v := range l.all() {
		if _, dup := got[k]; dup {
			t.Fatalf("round %d: all yields key %d twice", round, k)
		}
		got[k] = v
	}
	if !maps.Equal(got, want) {
		t.Fatalf("round %d: all yields %d keys that differ from the %d wanted", round, len(got), len(want))
	}
	for k := range 400 {
		v, ok := l.get(k)
		w, wok := want[k]
		if ok != wok || v != w {
			t.Fatalf("round %d: get(%d) = %d, %v; want %d, %v", round, k, v, ok, w, wok)
		}
	}
}

func TestLayeredNilIsEmpty(t *testing.T) {
	var l *layered[string, int]
	if _, ok := l.get("a"); ok || l.len() != 0 {
		t.Fatal("the nil layered map is not empty")
	}
	for range l.all() {
		t.Fatal("the nil layered map yields a key")
	}
	d := l.derive()
	d.set("a", 1)
	if d.at("a") != 1 || d.len() != 1 {
		t.Fatal("a map derived from nil does not take a key")
	}
}
