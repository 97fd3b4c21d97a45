package resolve

import (
	"cmp"
	"slices"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// matchEntry is one match of a rule with the keys the precedence order uses.
type matchEntry struct {
	http *weftv1.HTTPMatch
	grpc *weftv1.GRPCMatch
	// index of the match within its rule.
	index int
}

// HTTP path classes in precedence order. The spec puts Exact first and
// PathPrefix by length next, and leaves RegularExpression to the
// implementation: Weft ranks a regex after Exact and before every prefix, so
// a regex is not shadowed by a catch-all "/" prefix (longer patterns first).
const (
	pathExact = iota
	pathRegex
	pathPrefix
)

func httpPathClass(m *weftv1.HTTPMatch) (class, length int) {
	switch m.GetPath().GetType() {
	case weftv1.MatchType_MATCH_TYPE_EXACT:
		return pathExact, len(m.Path.Value)
	case weftv1.MatchType_MATCH_TYPE_REGEX:
		return pathRegex, len(m.Path.Value)
	}
	return pathPrefix, len(m.GetPath().GetValue())
}

// compareHTTPMatch orders two HTTP matches per the HTTPRouteRule precedence:
// Exact path, longest prefix, method, most headers, most query params.
// Negative means a wins.
func compareHTTPMatch(a, b *weftv1.HTTPMatch) int {
	ac, al := httpPathClass(a)
	bc, bl := httpPathClass(b)
	if c := cmp.Compare(ac, bc); c != 0 {
		return c
	}
	if ac != pathExact {
		if c := cmp.Compare(bl, al); c != 0 {
			return c
		}
	}
	if c := cmp.Compare(b2i(b.Method != ""), b2i(a.Method != "")); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b.Headers), len(a.Headers)); c != 0 {
		return c
	}
	return cmp.Compare(len(b.QueryParams), len(a.QueryParams))
}

// compareGRPCMatch orders two gRPC matches per the GRPCRouteRule
// precedence: most characters in the service, then in the method, then most
// header matches. For equal lengths an exact match wins over a regex.
func compareGRPCMatch(a, b *weftv1.GRPCMatch) int {
	if c := cmp.Compare(len(b.Service), len(a.Service)); c != 0 {
		return c
	}
	if c := cmp.Compare(len(b.Method), len(a.Method)); c != 0 {
		return c
	}
	if c := cmp.Compare(grpcTypeRank(a.Type), grpcTypeRank(b.Type)); c != 0 {
		return c
	}
	return cmp.Compare(len(b.Headers), len(a.Headers))
}

func grpcTypeRank(t weftv1.MatchType) int {
	if t == weftv1.MatchType_MATCH_TYPE_REGEX {
		return 1
	}
	return 0
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// tableMatch is a match placed in a table, with its tie breakers.
type tableMatch struct {
	e         matchEntry
	routeRank int
	ruleIdx   uint32
}

// buildTable merges the routes of one class on one Service port into a
// table. routes are in route precedence order (oldest, then namespace/name).
func buildTable(kind routeKind, routes []*route) *weftv1.RouteTable {
	t := &weftv1.RouteTable{Kind: kind.proto()}
	if kind == kindTCP {
		// A TCP port has one route (the oldest; the others are Conflicted)
		// and a TCPRoute has exactly one rule.
		for _, cr := range routes[0].rules {
			t.Rules = append(t.Rules, cr.rule)
			t.Matches = append(t.Matches, &weftv1.Match{Rule: uint32(len(t.Rules) - 1)})
			break
		}
		return t
	}
	var tms []tableMatch
	for rank, rt := range routes {
		for _, cr := range rt.rules {
			idx := uint32(len(t.Rules))
			t.Rules = append(t.Rules, cr.rule)
			for _, e := range cr.matches {
				tms = append(tms, tableMatch{e: e, routeRank: rank, ruleIdx: idx})
			}
		}
	}
	slices.SortStableFunc(tms, func(a, b tableMatch) int {
		var c int
		if kind == kindGRPC {
			c = compareGRPCMatch(a.e.grpc, b.e.grpc)
		} else {
			c = compareHTTPMatch(a.e.http, b.e.http)
		}
		return cmp.Or(c, cmp.Compare(a.routeRank, b.routeRank), cmp.Compare(a.ruleIdx, b.ruleIdx), cmp.Compare(a.e.index, b.e.index))
	})
	t.Matches = make([]*weftv1.Match, len(tms))
	for i, tm := range tms {
		t.Matches[i] = &weftv1.Match{Rule: tm.ruleIdx, Http: tm.e.http, Grpc: tm.e.grpc}
	}
	return t
}
