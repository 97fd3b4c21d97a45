package route

import (
	"errors"
	"math/rand/v2"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func pickCounts(t *testing.T, r *weftv1.Rule, n int, rnd func(int) int) (map[string]int, int) {
	t.Helper()
	tb := mustCompile(t, httpTable([]*weftv1.Rule{r}, hm(0, nil)))
	d, ok := tb.Select(&Request{Path: "/"})
	if !ok {
		t.Fatal("no match")
	}
	counts := map[string]int{}
	errs := 0
	for range n {
		b, err := d.PickBackend(rnd)
		if err != nil {
			errs++
			continue
		}
		counts[b.Cluster]++
	}
	return counts, errs
}

func TestPickBackendExactCounts(t *testing.T) {
	// A sequential source draws every value once per cycle: exact shares.
	counts, errs := pickCounts(t, rule("r", be("v1", 70), be("v2", 30)), 1000, seq())
	if errs != 0 || counts["v1"] != 700 || counts["v2"] != 300 {
		t.Fatalf("counts %v errs %d, want v1=700 v2=300", counts, errs)
	}
	// Weight 0 is never picked.
	counts, _ = pickCounts(t, rule("r", be("a", 1), be("zero", 0), be("b", 3)), 400, seq())
	if counts["zero"] != 0 || counts["a"] != 100 || counts["b"] != 300 {
		t.Fatalf("counts %v, want a=100 b=300 zero=0", counts)
	}
}

func TestPickBackendSeededSource(t *testing.T) {
	// A seeded PCG gives the same counts on every run; they are close to
	// the weights.
	r := rand.New(rand.NewPCG(1, 2))
	counts, _ := pickCounts(t, rule("r", be("v1", 80), be("v2", 20)), 10000, r.IntN)
	r2 := rand.New(rand.NewPCG(1, 2))
	again, _ := pickCounts(t, rule("r", be("v1", 80), be("v2", 20)), 10000, r2.IntN)
	if counts["v1"] != again["v1"] || counts["v2"] != again["v2"] {
		t.Fatalf("seeded runs differ: %v vs %v", counts, again)
	}
	if counts["v1"]+counts["v2"] != 10000 || counts["v1"] < 7800 || counts["v1"] > 8200 {
		t.Fatalf("counts %v not near 80/20", counts)
	}
}

func TestPickBackendErrors(t *testing.T) {
	// All weights zero: 500 for every request.
	_, errs := pickCounts(t, rule("r", be("a", 0), be("b", 0)), 10, seq())
	if errs != 10 {
		t.Fatalf("errs %d, want 10", errs)
	}
	// No backends at all.
	tb := mustCompile(t, httpTable([]*weftv1.Rule{rule("r")}, hm(0, nil)))
	d, _ := tb.Select(&Request{Path: "/"})
	if _, err := d.PickBackend(seq()); !errors.Is(err, ErrNoBackend) {
		t.Fatalf("err %v, want ErrNoBackend", err)
	}
	// An invalid backend gets its share of 500s, the valid one the rest.
	invalid := &weftv1.BackendRef{Weight: 1, InvalidReason: "BackendNotFound"}
	counts, errs := pickCounts(t, rule("r", be("ok", 3), invalid), 400, seq())
	if errs != 100 || counts["ok"] != 300 {
		t.Fatalf("counts %v errs %d, want ok=300 errs=100", counts, errs)
	}
	tb = mustCompile(t, httpTable([]*weftv1.Rule{rule("r", invalid)}, hm(0, nil)))
	d, _ = tb.Select(&Request{Path: "/"})
	if b, err := d.PickBackend(seq()); !errors.Is(err, ErrInvalidBackend) || b.Invalid != "BackendNotFound" {
		t.Fatalf("got %v, %v; want ErrInvalidBackend with reason", b, err)
	}
}

func TestPickBackendOutOfRangeSource(t *testing.T) {
	tb := mustCompile(t, httpTable([]*weftv1.Rule{rule("r", be("a", 1), be("b", 1))}, hm(0, nil)))
	d, _ := tb.Select(&Request{Path: "/"})
	for _, v := range []int{-1, -7, 2, 1 << 40} {
		if _, err := d.PickBackend(func(int) int { return v }); err != nil {
			t.Fatalf("rnd %d: %v", v, err)
		}
	}
}

func TestBackendSessionInheritance(t *testing.T) {
	ruleSess := &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_COOKIE, Name: "rule"}
	ownSess := &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_HEADER, Name: "x-own"}
	r := rule("r", be("inherits", 1), &weftv1.BackendRef{Cluster: "own", Weight: 1, Session: ownSess})
	r.Session = ruleSess
	tb := mustCompile(t, httpTable([]*weftv1.Rule{r}, hm(0, nil)))
	bs := tb.Rules()[0].Backends
	if bs[0].Session != ruleSess || bs[1].Session != ownSess {
		t.Fatalf("sessions %v %v", bs[0].Session, bs[1].Session)
	}
}
