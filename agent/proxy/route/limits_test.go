package route

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// worstPatterns returns patterns of the costliest shape RE2 allows (".*"
// then optional characters: every thread stays alive over the whole
// value, and the final "x" never matches a path of 'a's), as large as
// MaxRegexProgramSize allows, filling MaxRouteRegexProgramSize.
func worstPatterns(tb testing.TB) []string {
	l := weftv1.DefaultLimits
	var out []string
	total := 0
	for k := 200; k > 0 && total < l.MaxRouteRegexProgramSize; k-- {
		p := fmt.Sprintf(".*(?:.?){%d}x", k)
		n, err := weftv1.RegexProgramSize(p)
		if err != nil {
			continue
		}
		for total+n <= l.MaxRouteRegexProgramSize {
			out, total = append(out, p), total+n
		}
	}
	if total < l.MaxRouteRegexProgramSize-10 {
		tb.Fatalf("worst route has %d instructions, want about %d", total, l.MaxRouteRegexProgramSize)
	}
	return out
}

// regexRoute is one route whose rule i has a path regex patterns[i].
func regexRoute(route string, patterns []string) ([]*weftv1.Rule, []*weftv1.Match) {
	var rules []*weftv1.Rule
	var matches []*weftv1.Match
	for i, p := range patterns {
		r := rule(fmt.Sprintf("%s-%d", route, i), be("c", 1))
		r.Route = "ns/" + route
		rules = append(rules, r)
		matches = append(matches, hm(uint32(i), pathM(regex, p)))
	}
	return rules, matches
}

func worstTable(tb testing.TB, routes int) *weftv1.RouteTable {
	pats := worstPatterns(tb)
	t := httpTable(nil)
	for r := range routes {
		rules, matches := regexRoute(fmt.Sprintf("r%d", r), pats)
		for _, m := range matches {
			m.Rule += uint32(len(t.Rules))
		}
		t.Rules = append(t.Rules, rules...)
		t.Matches = append(t.Matches, matches...)
	}
	return t
}

var longPath = "/" + strings.Repeat("a", weftv1.DefaultLimits.MaxRegexInputLen-1)

func TestSelectLongValues(t *testing.T) {
	tb := mustCompile(t, httpTable(
		[]*weftv1.Rule{rule("exact", be("c", 1)), rule("re", be("c", 1)), rule("hdr", be("c", 1)), rule("catchall", be("c", 1))},
		hm(0, pathM(prefix, "/e")),
		hm(1, pathM(regex, "/re/.*")),
		hm(2, pathM(prefix, "/h"), withHeader(regex, "x-h", "[a-z]+")),
		hm(3, pathM(prefix, "/")),
	))
	over := strings.Repeat("a", weftv1.DefaultLimits.MaxRegexInputLen)
	for _, tc := range []struct {
		name string
		req  *Request
		rule string
		err  error
	}{
		{"long path decided without a regex", &Request{Path: "/e/" + over}, "exact", nil},
		{"long path outside the regex's literal prefix", &Request{Path: "/x" + over}, "catchall", nil},
		{"regex path at the limit", &Request{Path: "/re/" + over[:len(over)-4]}, "re", nil},
		{"regex path over the limit", &Request{Path: "/re/" + over}, "", ErrURITooLong},
		{"query does not count toward the path", &Request{Path: "/re/a?" + over}, "re", nil},
		{"header at the limit", &Request{Path: "/h", Header: hdr("X-H", over)}, "hdr", nil},
		{"header over the limit", &Request{Path: "/h", Header: hdr("X-H", over+"a")}, "", ErrHeaderTooLong},
		{"header lines joined over the limit", &Request{Path: "/h", Header: hdr("X-H", over[1:], "X-H", "a")}, "", ErrHeaderTooLong},
	} {
		d, err := tb.SelectContext(context.Background(), tc.req)
		switch {
		case tc.err != nil && !errors.Is(err, tc.err):
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		case tc.err == nil && (err != nil || d.Rule.Name != tc.rule):
			t.Errorf("%s: %v, %v; want rule %s", tc.name, d.Rule, err, tc.rule)
		}
		if _, ok := tb.Select(tc.req); ok != (tc.err == nil) {
			t.Errorf("%s: Select ok %v", tc.name, ok)
		}
	}
}

func TestSelectLongGRPCService(t *testing.T) {
	rt := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_GRPC,
		Rules:   []*weftv1.Rule{{Route: "ns/g", Backends: []*weftv1.BackendRef{be("c", 1)}}},
		Matches: []*weftv1.Match{{Grpc: &weftv1.GRPCMatch{Type: regex, Service: "pkg\\..*"}}}}
	tb := mustCompile(t, rt)
	svc := "pkg." + strings.Repeat("S", weftv1.DefaultLimits.MaxRegexInputLen)
	if _, err := tb.SelectContext(context.Background(), &Request{GRPCService: svc, GRPCMethod: "M"}); !errors.Is(err, ErrURITooLong) {
		t.Errorf("long service: %v", err)
	}
	if _, err := tb.SelectContext(context.Background(), &Request{GRPCService: "pkg.S", GRPCMethod: "M"}); err != nil {
		t.Errorf("short service: %v", err)
	}
}

// The worst route the limits allow is matched in full against the longest
// value; a second one on the same table is over the request's budget.
func TestSelectRegexBudget(t *testing.T) {
	one := mustCompile(t, worstTable(t, 1))
	if _, err := one.SelectContext(context.Background(), &Request{Path: longPath}); !errors.Is(err, ErrNoRoute) {
		t.Errorf("one maximal route: %v, want ErrNoRoute", err)
	}
	two := mustCompile(t, worstTable(t, 2))
	_, err := two.SelectContext(context.Background(), &Request{Path: longPath})
	if !errors.Is(err, ErrURITooLong) || !strings.Contains(err.Error(), "budget") {
		t.Errorf("two maximal routes: %v, want ErrURITooLong (budget)", err)
	}
	if _, err := two.SelectContext(context.Background(), &Request{Path: "/" + strings.Repeat("a", 100)}); !errors.Is(err, ErrNoRoute) {
		t.Errorf("short path: %v", err)
	}
}

func TestSelectStopsWhenContextDone(t *testing.T) {
	tb := mustCompile(t, worstTable(t, 1))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tb.SelectContext(ctx, &Request{Path: longPath}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// A request decided without a regex is not affected.
	plain := mustCompile(t, httpTable([]*weftv1.Rule{rule("p", be("c", 1))}, hm(0, pathM(prefix, "/"))))
	if _, err := plain.SelectContext(ctx, &Request{Path: "/a"}); err != nil {
		t.Errorf("no regex: %v", err)
	}
}

func TestRegexSharedAcrossTables(t *testing.T) {
	mk := func() *Table {
		return mustCompile(t, httpTable([]*weftv1.Rule{rule("re", be("c", 1))},
			hm(0, pathM(regex, "/shared/[0-9]+"), withHeader(regex, "x-a", "[a-z]+"))))
	}
	a, b := mk(), mk()
	if a.matches[0].pathRe != b.matches[0].pathRe || a.matches[0].headers[0].re != b.matches[0].headers[0].re {
		t.Error("a pattern compiled once per table, not once per process")
	}
}

func TestCompileRefusesOverLimit(t *testing.T) {
	rules, matches := regexRoute("r", append(worstPatterns(t), "/a+"))
	_, err := Compile(httpTable(rules, matches...))
	if !errors.Is(err, ErrInvalidTable) || !errors.Is(err, weftv1.ErrRouteRegexTooLarge) {
		t.Errorf("route over the limit: %v", err)
	}
	_, err = Compile(httpTable([]*weftv1.Rule{rule("r", be("c", 1))}, hm(0, pathM(regex, "(?:.?){1000}"))))
	if !errors.Is(err, weftv1.ErrRegexTooLarge) {
		t.Errorf("pattern over the limit: %v", err)
	}
}

// BenchmarkSelectWorstRegexRoute is one request against the worst route
// the limits allow (MaxRouteRegexProgramSize instructions of patterns that
// keep every RE2 thread alive, none matching) with the longest path
// matched (MaxRegexInputLen). This is the bound on one request's matching
// cost stated in the package comment.
func BenchmarkSelectWorstRegexRoute(b *testing.B) {
	tb := mustCompile(b, worstTable(b, 1))
	req := &Request{Method: "GET", Path: longPath, Header: http.Header{}}
	ctx := context.Background()
	if _, err := tb.SelectContext(ctx, req); !errors.Is(err, ErrNoRoute) {
		b.Fatal(err)
	}
	for b.Loop() {
		tb.SelectContext(ctx, req)
	}
	l := weftv1.DefaultLimits
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(l.MaxRouteRegexProgramSize*(l.MaxRegexInputLen+1)), "ns/inst-byte")
}

// BenchmarkSelectRealisticRegexRoute: the same 8 KiB path against a
// route of 16 rules with realistic patterns (a literal prefix and a UUID).
func BenchmarkSelectRealisticRegexRoute(b *testing.B) {
	var pats []string
	for i := range 16 {
		pats = append(pats, fmt.Sprintf("/api/v%d/items/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", i))
	}
	rules, matches := regexRoute("r", pats)
	tb := mustCompile(b, httpTable(rules, matches...))
	req := &Request{Method: "GET", Path: "/api/v15/items/" + longPath[15:], Header: http.Header{}}
	ctx := context.Background()
	for b.Loop() {
		tb.SelectContext(ctx, req)
	}
}
