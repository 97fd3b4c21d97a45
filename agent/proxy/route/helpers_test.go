package route

import (
	"net/http"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Builders for RouteTable fixtures.

const (
	exact  = weftv1.MatchType_MATCH_TYPE_EXACT
	prefix = weftv1.MatchType_MATCH_TYPE_PREFIX
	regex  = weftv1.MatchType_MATCH_TYPE_REGEX
)

func sm(t weftv1.MatchType, name, value string) *weftv1.StringMatch {
	return &weftv1.StringMatch{Type: t, Name: name, Value: value}
}

func pathM(t weftv1.MatchType, v string) *weftv1.StringMatch { return sm(t, "", v) }

func hm(rule uint32, path *weftv1.StringMatch, opts ...func(*weftv1.HTTPMatch)) *weftv1.Match {
	h := &weftv1.HTTPMatch{Path: path}
	for _, o := range opts {
		o(h)
	}
	return &weftv1.Match{Rule: rule, Http: h}
}

func withMethod(m string) func(*weftv1.HTTPMatch) {
	return func(h *weftv1.HTTPMatch) { h.Method = m }
}

func withHeader(t weftv1.MatchType, name, value string) func(*weftv1.HTTPMatch) {
	return func(h *weftv1.HTTPMatch) { h.Headers = append(h.Headers, sm(t, name, value)) }
}

func withQuery(t weftv1.MatchType, name, value string) func(*weftv1.HTTPMatch) {
	return func(h *weftv1.HTTPMatch) { h.QueryParams = append(h.QueryParams, sm(t, name, value)) }
}

func rule(name string, backends ...*weftv1.BackendRef) *weftv1.Rule {
	return &weftv1.Rule{Route: "ns/" + name, RouteKind: weftv1.RouteKind_ROUTE_KIND_HTTP, Name: name, Backends: backends}
}

func be(cluster string, w uint32) *weftv1.BackendRef {
	return &weftv1.BackendRef{Cluster: cluster, Weight: w}
}

func httpTable(rules []*weftv1.Rule, matches ...*weftv1.Match) *weftv1.RouteTable {
	return &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP, Rules: rules, Matches: matches}
}

func mustCompile(t testing.TB, rt *weftv1.RouteTable) *Table {
	t.Helper()
	tb, err := Compile(rt)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tb
}

// selectName returns the name of the selected rule, or "" for no match.
func selectName(tb *Table, r *Request) string {
	d, ok := tb.Select(r)
	if !ok {
		return ""
	}
	return d.Rule.Name
}

func hdr(kv ...string) http.Header {
	h := make(http.Header)
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// seq returns a rnd that yields 0, 1, 2, ... modulo n: over n calls every
// value is drawn exactly once, so weighted picks give exact counts.
func seq() func(int) int {
	i := 0
	return func(n int) int {
		v := i % n
		i++
		return v
	}
}
