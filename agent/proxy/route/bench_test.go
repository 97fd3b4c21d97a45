package route

import (
	"fmt"
	"net/http"
	"runtime"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// bigTable builds n rules in precedence order the way the controller sorts
// them: exact paths, then prefixes (with and without header matches), then
// method matches, then regexes (regexEvery: one rule in regexEvery is a
// regex; 0 for none).
func bigTable(n, regexEvery int) *weftv1.RouteTable {
	rt := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP}
	var exacts, prefixes, methods, regexes []*weftv1.Match
	for i := range n {
		r := &weftv1.Rule{
			Route: fmt.Sprintf("ns-%d/route-%d", i%50, i), RouteKind: weftv1.RouteKind_ROUTE_KIND_HTTP,
			Index:    uint32(i % 4),
			Backends: []*weftv1.BackendRef{{Cluster: fmt.Sprintf("ns-%d/svc-%d:80", i%50, i), Weight: 90}, {Cluster: fmt.Sprintf("ns-%d/svc-%d-canary:80", i%50, i), Weight: 10}},
		}
		rt.Rules = append(rt.Rules, r)
		m := &weftv1.Match{Rule: uint32(i), Http: &weftv1.HTTPMatch{}}
		switch {
		case regexEvery > 0 && i%regexEvery == regexEvery-1:
			m.Http.Path = &weftv1.StringMatch{Type: regex, Value: fmt.Sprintf("/re%d/[a-z]+/[0-9]+", i)}
			regexes = append(regexes, m)
		case i%10 < 4:
			m.Http.Path = &weftv1.StringMatch{Type: exact, Value: fmt.Sprintf("/svc%d/api/v1/items", i)}
			exacts = append(exacts, m)
		case i%10 < 8:
			m.Http.Path = &weftv1.StringMatch{Type: prefix, Value: fmt.Sprintf("/svc%d/api", i)}
			if i%10 == 7 {
				m.Http.Headers = []*weftv1.StringMatch{{Type: exact, Name: "x-canary", Value: "true"}}
			}
			prefixes = append(prefixes, m)
		default:
			m.Http.Path = &weftv1.StringMatch{Type: prefix, Value: fmt.Sprintf("/svc%d", i)}
			m.Http.Method = "POST"
			methods = append(methods, m)
		}
	}
	rt.Matches = append(append(append(exacts, prefixes...), methods...), regexes...)
	return rt
}

func benchSelect(b *testing.B, regexEvery int, path string, h http.Header) {
	tb, err := Compile(bigTable(10000, regexEvery))
	if err != nil {
		b.Fatal(err)
	}
	req := &Request{Method: "GET", Path: path, Header: h}
	if _, ok := tb.Select(req); !ok && path != "/nowhere" {
		b.Fatalf("no match for %s", path)
	}
	b.ReportAllocs()
	for b.Loop() {
		tb.Select(req)
	}
}

func BenchmarkSelect10kExact(b *testing.B) {
	benchSelect(b, 0, "/svc5000/api/v1/items?x=1", http.Header{})
}

func BenchmarkSelect10kPrefix(b *testing.B) {
	benchSelect(b, 0, "/svc5004/api/v1/things/42", http.Header{})
}

func BenchmarkSelect10kPrefixHeader(b *testing.B) {
	benchSelect(b, 0, "/svc5007/api/x", http.Header{"X-Canary": {"true"}})
}

func BenchmarkSelect10kNoMatch(b *testing.B) {
	benchSelect(b, 0, "/nowhere", http.Header{})
}

// 1% of the rules are regexes, evaluated last; a request that only a regex
// matches walks every one of them before it.
func BenchmarkSelect10kRegexWorstCase(b *testing.B) {
	benchSelect(b, 100, "/re9999/abc/123", http.Header{})
}

func BenchmarkSelect10kRegexTablePrefixHit(b *testing.B) {
	benchSelect(b, 100, "/svc5004/api/v1/things/42", http.Header{})
}

func BenchmarkCompile10k(b *testing.B) {
	rt := bigTable(10000, 100)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(rt); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkProcessRewriteAndHeaders(b *testing.B) {
	r := rewriteRule("r", "/v2", weftv1.PathModifier_TYPE_PREFIX, headerModFilter())
	tb, err := Compile(httpTable([]*weftv1.Rule{r}, hm(0, pathM(prefix, "/api"))))
	if err != nil {
		b.Fatal(err)
	}
	d, _ := tb.Select(&Request{Path: "/api/x"})
	rnd := seq()
	b.ReportAllocs()
	for b.Loop() {
		h := http.Header{"X-Header-Remove": {"1"}}
		if _, err := d.Process(&HTTPRequest{Host: "svc", Port: 80, Path: "/api/x?y=1", Method: "GET", Header: h}, rnd); err != nil {
			b.Fatal(err)
		}
	}
}

// heapPerRule compiles a 10k-rule table and returns the live heap it holds
// per rule (the RouteTable proto itself excluded).
func heapPerRule(tb testing.TB, regexEvery int) float64 {
	const n = 10000
	rt := bigTable(n, regexEvery)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t, err := Compile(rt)
	if err != nil {
		tb.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(t)
	runtime.KeepAlive(rt)
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
}

func BenchmarkMemoryPerRule10k(b *testing.B) {
	var per float64
	for b.Loop() {
		per = heapPerRule(b, 0)
	}
	b.ReportMetric(per, "B/rule")
}

func BenchmarkMemoryPerRule10kWithRegex(b *testing.B) {
	var per float64
	for b.Loop() {
		per = heapPerRule(b, 100)
	}
	b.ReportMetric(per, "B/rule")
}

// The budget: at most 2 KiB per compiled rule at 10k rules. This
// is a size, not a timing: deterministic up to GC bookkeeping.
func TestMemoryPerRuleBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a 10k-rule table")
	}
	if per := heapPerRule(t, 100); per > 2048 {
		t.Fatalf("%.0f bytes per compiled rule, budget 2048", per)
	} else {
		t.Logf("%.0f bytes per compiled rule", per)
	}
}
