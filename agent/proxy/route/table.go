// Package route is the node proxy's routing decision: it compiles a
// weftv1.RouteTable once (Compile) and answers, per request, which rule
// applies (Select), which backend gets the request (Decision.PickBackend) and
// what the rule's filters do to the request and response (Decision.Process).
//
// The package is pure: no I/O, no logging, no clocks, no global randomness.
// Everything that can be wrong in a RouteTable is caught by Compile so that
// the agent can NACK a bad policy and keep its last good one; Select and the
// filters never fail on a compiled table.
//
// Per request, the proxy does:
//
//	d, err := table.SelectContext(ctx, &route.Request{Method: m, Path: requestURI, Header: h})
//	// ErrNoRoute: 404; ErrURITooLong: 414; ErrHeaderTooLong: 431;
//	// ctx done: the client is gone, nothing to answer
//	plan, err := d.Process(&route.HTTPRequest{Scheme: "http", Host: host, Port: svcPort,
//		Path: requestURI, Method: m, Header: h}, rand.IntN)
//	// plan.Answer != nil: write it (redirect, CORS preflight), nothing is forwarded
//	// err != nil (ErrNoBackend, ErrInvalidBackend): 500
//	// else forward the edited request to plan.Backend.Cluster (endpoint chosen by
//	// session.Manager.Resolve with plan.Backend.Session), send copies to
//	// plan.Mirrors, bound it with d.Rule.RequestTimeout / BackendRequestTimeout,
//	// retry per d.Rule.Retry.ShouldRetry, and call plan.ApplyResponse on the
//	// response headers.
//
// TCP tables: Select(&route.Request{}) then PickBackend.
//
// Matching cost is bounded (issue #18). Compile accepts only tables within
// weftv1.DefaultLimits: at most MaxRegexProgramSize instructions per
// pattern and MaxRouteRegexProgramSize per route. SelectContext matches no
// value longer than MaxRegexInputLen against a regex, charges every regex
// match its program size times the value's length, and refuses a request
// whose charges exceed MaxRouteRegexProgramSize * (MaxRegexInputLen+1)
// instruction-bytes: the cost of one maximal route against a maximal
// value, however many routes the table merges. RE2 matching is linear in
// that product, so one request's regex matching is bounded by
// patterns × program size × value length ≤ 1,000 × 8,193 instruction-bytes
// with the defaults (BenchmarkSelectWorstRegexRoute: about 130 ms on a
// loaded 2-core VM for the worst allowed route against an 8 KiB path,
// 16 ns per instruction-byte; BenchmarkSelectRealisticRegexRoute: under a
// microsecond). It also stops, between two regex matches, when the
// request's context is done, so an abandoned request costs at most one
// more pattern: MaxRegexProgramSize × MaxRegexInputLen.
package route

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Sentinel errors. Compile wraps ErrInvalidTable; PickBackend and Process
// return ErrNoBackend or ErrInvalidBackend, which the proxy answers with 500.
var (
	ErrInvalidTable   = errors.New("invalid route table")
	ErrNoBackend      = errors.New("rule has no backend with a non-zero weight")
	ErrInvalidBackend = errors.New("picked backend reference is invalid")

	// SelectContext's refusals. ErrNoRoute: no rule applies (404).
	// ErrURITooLong: a regular expression rule would need to match a path,
	// query parameter, gRPC service or method longer than the proxy
	// matches, or the request's matching is over its budget (414, RFC 9110
	// 15.5.15: the target is longer than the server is willing to
	// interpret). ErrHeaderTooLong: the same for a header value (431, RFC
	// 6585). A request is refused rather than routed by a rule of lower
	// precedence: a rule the proxy could not evaluate must not send the
	// request elsewhere.
	ErrNoRoute       = errors.New("no route matches the request")
	ErrURITooLong    = errors.New("request target too long for regular expression matching")
	ErrHeaderTooLong = errors.New("request header too long for regular expression matching")
)

// Table is a compiled RouteTable. It is immutable and safe for concurrent use.
type Table struct {
	kind    weftv1.RouteKind
	rules   []Rule
	matches []match

	// Candidate index for HTTP tables. Every match is listed in exactly one
	// of: exact (keyed by path), the prefix trie (at the node of its
	// prefix), or always. Lists hold ascending match positions, so merging
	// them visits candidates in precedence order.
	exact  map[string][]int32
	prefix *prefixNode
	// Candidate index for gRPC tables: exact service+"/"+method, and exact
	// service with any method.
	grpcExact   map[string][]int32
	grpcService map[string][]int32
	always      []int32

	// Request-time regex bounds (weftv1.Limits): the longest value matched
	// and the instruction-bytes one request may spend.
	maxRegexInput int
	regexBudget   int
}

// Rule is a compiled weftv1.Rule.
type Rule struct {
	// Route is "namespace/name" of the route, Kind its kind, Name the rule's
	// name (may be empty) and Index its position in the route.
	Route string
	Kind  weftv1.RouteKind
	Name  string
	Index uint32

	// Filters are the rule-level filters in configured order.
	Filters []Filter
	// Backends in configured order; weights as configured.
	Backends    []Backend
	totalWeight int

	// RequestTimeout bounds the whole request including retries (zero: none).
	RequestTimeout time.Duration
	// BackendRequestTimeout bounds each attempt to a backend (zero: none).
	BackendRequestTimeout time.Duration
	// Retry is the rule's retry policy; nil when the rule has none.
	Retry *RetryPolicy
}

// Backend is one weighted backend of a rule.
type Backend struct {
	// Cluster is the weftv1.Cluster name; empty when Invalid is set.
	Cluster string
	Weight  uint32
	// Invalid is the controller's reason when the reference is invalid: the
	// requests that pick this backend are answered with 500.
	Invalid string
	// Filters are the backend-level filters; they run after the rule's.
	Filters []Filter
	// Session is the effective session persistence for this backend: its own
	// (XBackendTrafficPolicy / XBackend) if set, else the rule's inline one;
	// nil when none.
	Session *weftv1.SessionPersistence
}

// Request is what Select looks at.
type Request struct {
	// Method is the HTTP method ("GET"); empty for gRPC and TCP.
	Method string
	// Path is the request target as received: raw path plus optional
	// "?query". It is matched as sent (no percent-decoding, no dot-segment
	// cleaning); the query part is only used by query parameter matches.
	Path string
	// Header holds the request headers in net/http canonical form (as
	// net/http and x/net/http2 produce them). For gRPC it is the metadata.
	Header http.Header
	// Query, when non-nil, is the parsed query; otherwise Select parses the
	// query part of Path, and only when a candidate has query matches.
	Query url.Values
	// GRPCService and GRPCMethod name the gRPC call ("pkg.Service",
	// "Method"). When both are empty on a gRPC table they are taken from
	// Path ("/pkg.Service/Method").
	GRPCService string
	GRPCMethod  string
}

// Decision is the result of Select.
type Decision struct {
	// Rule is the rule of the first matching match.
	Rule *Rule
	// Match is the position of that match in RouteTable.matches.
	Match int
	// MatchedPrefix is the normalised path prefix of the match (no trailing
	// "/", "/" for the root) when it was a PathPrefix match (or a match with
	// no path, which is PathPrefix "/"); empty otherwise. ReplacePrefixMatch
	// rewrites and redirects replace it.
	MatchedPrefix string
}

// Kind is the table's route kind.
func (t *Table) Kind() weftv1.RouteKind { return t.kind }

// Rules are the compiled rules, indexed like RouteTable.rules.
func (t *Table) Rules() []Rule { return t.rules }

// Select returns the rule of the first match, in the table's precedence
// order, that req satisfies. false means no rule applies or the request is
// refused (the proxy answers 404); SelectContext says which and stops when
// the request is abandoned.
func (t *Table) Select(req *Request) (Decision, bool) {
	d, err := t.SelectContext(context.Background(), req)
	return d, err == nil
}

// SelectContext returns the rule of the first match, in the table's
// precedence order, that req satisfies, or ErrNoRoute. It refuses a request
// whose regex matching would exceed the table's bounds with ErrURITooLong
// or ErrHeaderTooLong, and returns ctx's error when ctx is done before a
// regex match.
func (t *Table) SelectContext(ctx context.Context, req *Request) (Decision, error) {
	if t == nil || req == nil {
		return Decision{}, ErrNoRoute
	}
	c := t.newEval(ctx, req)
	switch t.kind {
	case weftv1.RouteKind_ROUTE_KIND_GRPC:
		var buf [3][]int32
		lists := buf[:0]
		if l := t.grpcExact[c.svc+"/"+c.meth]; len(l) > 0 {
			lists = append(lists, l)
		}
		if l := t.grpcService[c.svc]; len(l) > 0 {
			lists = append(lists, l)
		}
		if len(t.always) > 0 {
			lists = append(lists, t.always)
		}
		return t.first(lists, &c)
	default:
		var buf [16][]int32
		lists := buf[:0]
		if l := t.exact[c.path]; len(l) > 0 {
			lists = append(lists, l)
		}
		lists = t.prefix.collect(c.path, lists)
		if len(t.always) > 0 {
			lists = append(lists, t.always)
		}
		return t.first(lists, &c)
	}
}

// newEval prepares the evaluation of req: the parts of the request the
// table's kind looks at, and the request's bounds.
func (t *Table) newEval(ctx context.Context, req *Request) evalCtx {
	c := evalCtx{req: req, ctx: ctx, done: ctx.Done(), maxInput: t.maxRegexInput, budget: t.regexBudget}
	if t.kind == weftv1.RouteKind_ROUTE_KIND_GRPC {
		c.svc, c.meth = req.GRPCService, req.GRPCMethod
		if c.svc == "" && c.meth == "" {
			c.svc, c.meth = splitGRPCPath(req.Path)
		}
	} else {
		c.path, c.rawQuery, _ = strings.Cut(req.Path, "?")
	}
	return c
}

// first walks the candidate lists merged in ascending order and returns the
// first match that holds.
func (t *Table) first(lists [][]int32, c *evalCtx) (Decision, error) {
	for {
		best := -1
		var bestPos int32
		for i, l := range lists {
			if len(l) == 0 {
				continue
			}
			if best < 0 || l[0] < bestPos {
				best, bestPos = i, l[0]
			}
		}
		if best < 0 {
			return Decision{}, ErrNoRoute
		}
		lists[best] = lists[best][1:]
		m := &t.matches[bestPos]
		ok := m.eval(c)
		if c.err != nil {
			return Decision{}, c.err
		}
		if ok {
			return Decision{Rule: &t.rules[m.rule], Match: int(bestPos), MatchedPrefix: m.matchedPrefix()}, nil
		}
	}
}

// PickBackend chooses a backend of the rule by weight. rnd(n) must return a
// value in [0, n) (math/rand/v2.IntN, or a seeded source in tests). A backend
// of weight 0 is never picked. ErrNoBackend: no backend has weight;
// ErrInvalidBackend: the picked backend reference is invalid (its Invalid
// reason says why). Both mean "answer 500".
func (d *Decision) PickBackend(rnd func(n int) int) (*Backend, error) {
	if d == nil || d.Rule == nil {
		return nil, ErrNoBackend
	}
	return d.Rule.PickBackend(rnd)
}

// PickBackend is Decision.PickBackend for a rule.
func (r *Rule) PickBackend(rnd func(n int) int) (*Backend, error) {
	if r.totalWeight <= 0 {
		return nil, ErrNoBackend
	}
	x := 0
	if len(r.Backends) > 1 || r.Backends[0].Weight == 0 {
		x = rnd(r.totalWeight)
		if x < 0 || x >= r.totalWeight {
			x = ((x % r.totalWeight) + r.totalWeight) % r.totalWeight
		}
	}
	for i := range r.Backends {
		b := &r.Backends[i]
		if b.Weight == 0 {
			continue
		}
		if x < int(b.Weight) {
			if b.Invalid != "" || b.Cluster == "" {
				return b, fmt.Errorf("%w: %s", ErrInvalidBackend, b.Invalid)
			}
			return b, nil
		}
		x -= int(b.Weight)
	}
	return nil, ErrNoBackend // unreachable: weights sum to totalWeight
}

func splitGRPCPath(p string) (service, method string) {
	p, _, _ = strings.Cut(p, "?")
	p = strings.TrimPrefix(p, "/")
	service, method, _ = strings.Cut(p, "/")
	return service, method
}
