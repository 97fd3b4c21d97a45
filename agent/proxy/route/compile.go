package route

import (
	"cmp"
	"fmt"
	"net/http"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Compile validates t (weftv1.RouteTable.Validate, the one definition of a
// valid table, shared with the controller) and precompiles it: regular
// expressions (RE2, full match) compiled once per process and shared
// (weftv1.CompileRegex), header names canonicalised,
// backend weights summed, the candidate index built. An invalid table is an
// error wrapping ErrInvalidTable (and the validator's sentinels) that names
// the rule or match; the caller NACKs the policy and keeps its last good
// table.
func Compile(t *weftv1.RouteTable) (*Table, error) {
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTable, err)
	}
	l := weftv1.DefaultLimits
	out := &Table{
		kind:          t.GetKind(),
		rules:         make([]Rule, len(t.GetRules())),
		matches:       make([]match, len(t.GetMatches())),
		maxRegexInput: l.MaxRegexInputLen,
		regexBudget:   l.MaxRouteRegexProgramSize * (l.MaxRegexInputLen + 1),
	}
	for i, r := range t.GetRules() {
		if err := compileRule(out.kind, r, &out.rules[i]); err != nil {
			return nil, fmt.Errorf("%w: rule %d (%s): %v", ErrInvalidTable, i, r.GetRoute(), err)
		}
	}
	for i, m := range t.GetMatches() {
		if err := compileMatch(out.kind, m, &out.matches[i]); err != nil {
			return nil, fmt.Errorf("%w: match %d: %v", ErrInvalidTable, i, err)
		}
	}
	out.index()
	return out, nil
}

func (t *Table) index() {
	switch t.kind {
	case weftv1.RouteKind_ROUTE_KIND_HTTP:
		t.exact = make(map[string][]int32)
		t.prefix = &prefixNode{}
	case weftv1.RouteKind_ROUTE_KIND_GRPC:
		t.grpcExact = make(map[string][]int32)
		t.grpcService = make(map[string][]int32)
	}
	for i := range t.matches {
		m := &t.matches[i]
		pos := int32(i)
		switch {
		case t.kind == weftv1.RouteKind_ROUTE_KIND_HTTP && m.pathKind == pathExact:
			t.exact[m.path] = append(t.exact[m.path], pos)
		case t.kind == weftv1.RouteKind_ROUTE_KIND_HTTP && m.pathKind == pathPrefix:
			t.prefix.insert(m.path, pos)
		case t.kind == weftv1.RouteKind_ROUTE_KIND_HTTP && m.pathKind == pathAny:
			t.prefix.insert("/", pos)
		case t.kind == weftv1.RouteKind_ROUTE_KIND_HTTP && m.pathKind == pathRegex && regexDir(m.pathLit) != "":
			// Every path the regex matches starts with pathLit, so the trie
			// walk of such a path visits the node of pathLit's directory.
			t.prefix.insert(regexDir(m.pathLit), pos)
		case t.kind == weftv1.RouteKind_ROUTE_KIND_GRPC && m.svc.kind == strExact && m.meth.kind == strExact:
			k := m.svc.value + "/" + m.meth.value
			t.grpcExact[k] = append(t.grpcExact[k], pos)
		case t.kind == weftv1.RouteKind_ROUTE_KIND_GRPC && m.svc.kind == strExact && m.meth.kind == 0:
			t.grpcService[m.svc.value] = append(t.grpcService[m.svc.value], pos)
		default:
			t.always = append(t.always, pos)
		}
	}
}

// compileRule compiles a rule Validate accepted.
func compileRule(kind weftv1.RouteKind, in *weftv1.Rule, out *Rule) error {
	*out = Rule{Route: in.GetRoute(), Kind: in.GetRouteKind(), Name: in.GetName(), Index: in.GetIndex()}
	var err error
	if out.Filters, err = compileFilters(kind, in.GetFilters()); err != nil {
		return err
	}
	if out.RequestTimeout, err = duration(in.GetRequestTimeout()); err != nil {
		return fmt.Errorf("request timeout: %w", err)
	}
	if out.BackendRequestTimeout, err = duration(in.GetBackendRequestTimeout()); err != nil {
		return fmt.Errorf("backend request timeout: %w", err)
	}
	if r := in.GetRetry(); r != nil {
		p := &RetryPolicy{Attempts: int(r.GetAttempts())}
		for _, c := range r.GetCodes() {
			p.Codes = append(p.Codes, int(c))
		}
		if p.Backoff, err = duration(r.GetBackoff()); err != nil {
			return fmt.Errorf("retry backoff: %w", err)
		}
		out.Retry = p
	}
	out.Backends = make([]Backend, len(in.GetBackends()))
	total := 0
	for i, b := range in.GetBackends() {
		ob := &out.Backends[i]
		ob.Cluster, ob.Weight, ob.Invalid = b.GetCluster(), b.GetWeight(), b.GetInvalidReason()
		total += int(ob.Weight)
		if ob.Filters, err = compileFilters(kind, b.GetFilters()); err != nil {
			return fmt.Errorf("backend %d: %w", i, err)
		}
		ob.Session = cmp.Or(b.GetSession(), in.GetSession())
	}
	out.totalWeight = total
	return nil
}

// duration converts a duration Validate accepted (nil: 0).
func duration(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	return d.AsDuration(), nil
}

func compileFilters(kind weftv1.RouteKind, in []*weftv1.Filter) ([]Filter, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]Filter, 0, len(in))
	for i, f := range in {
		var c Filter
		var err error
		switch k := f.GetKind().(type) {
		case *weftv1.Filter_RequestHeaderModifier:
			c.Kind = FilterRequestHeaders
			c.Headers, err = compileHeaderModifier(k.RequestHeaderModifier)
		case *weftv1.Filter_ResponseHeaderModifier:
			c.Kind = FilterResponseHeaders
			c.Headers, err = compileHeaderModifier(k.ResponseHeaderModifier)
		case *weftv1.Filter_RequestRedirect:
			c.Kind = FilterRedirect
			c.Redirect, err = compileRedirect(k.RequestRedirect)
		case *weftv1.Filter_UrlRewrite:
			c.Kind = FilterRewrite
			c.Rewrite, err = compileRewrite(k.UrlRewrite)
		case *weftv1.Filter_RequestMirror:
			c.Kind = FilterMirror
			c.Mirror, err = compileMirror(k.RequestMirror)
		case *weftv1.Filter_Cors:
			c.Kind = FilterCORS
			x := k.Cors
			c.CORS, err = compileCORS(x.GetAllowOrigins(), x.GetAllowCredentials(), x.GetAllowMethods(), x.GetAllowHeaders(), x.GetExposeHeaders(), x.GetMaxAgeSeconds())
		default:
			err = fmt.Errorf("no filter kind set")
		}
		if err != nil {
			return nil, fmt.Errorf("filter %d: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}

func compileHeaderModifier(in *weftv1.HeaderModifier) (*HeaderModifier, error) {
	conv := func(hs []*weftv1.HeaderModifier_Header) []Header {
		var out []Header
		for _, h := range hs {
			out = append(out, Header{Name: http.CanonicalHeaderKey(h.GetName()), Value: h.GetValue()})
		}
		return out
	}
	m := &HeaderModifier{Set: conv(in.GetSet()), Add: conv(in.GetAdd())}
	for _, r := range in.GetRemove() {
		m.Remove = append(m.Remove, http.CanonicalHeaderKey(r))
	}
	return m, nil
}

func compilePathModifier(in *weftv1.PathModifier) (*PathModifier, error) {
	switch in.GetType() {
	case weftv1.PathModifier_TYPE_FULL:
		return &PathModifier{Kind: PathFull, Value: in.GetValue()}, nil
	case weftv1.PathModifier_TYPE_PREFIX:
		return &PathModifier{Kind: PathPrefix, Value: in.GetValue()}, nil
	}
	return nil, nil
}

func compileRedirect(in *weftv1.RequestRedirect) (*Redirect, error) {
	r := &Redirect{Scheme: in.GetScheme(), Hostname: in.GetHostname(), Port: in.GetPort(), StatusCode: int(in.GetStatusCode())}
	if r.StatusCode == 0 {
		r.StatusCode = http.StatusFound
	}
	var err error
	if r.Path, err = compilePathModifier(in.GetPath()); err != nil {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	return r, nil
}

func compileRewrite(in *weftv1.URLRewrite) (*Rewrite, error) {
	r := &Rewrite{Hostname: in.GetHostname()}
	var err error
	if r.Path, err = compilePathModifier(in.GetPath()); err != nil {
		return nil, fmt.Errorf("rewrite: %w", err)
	}
	return r, nil
}

func compileMirror(in *weftv1.RequestMirror) (*Mirror, error) {
	return &Mirror{Cluster: in.GetCluster(), Numerator: in.GetNumerator(), Denominator: in.GetDenominator()}, nil
}

// compileString compiles an Exact or RegularExpression value match (a
// header, query parameter, gRPC service or method).
func compileString(typ weftv1.MatchType, name, value string) (strMatch, error) {
	m := strMatch{name: name, value: value}
	switch typ {
	case weftv1.MatchType_MATCH_TYPE_EXACT:
		m.kind = strExact
	case weftv1.MatchType_MATCH_TYPE_REGEX:
		m.kind = strRegex
		var err error
		if m.re, err = weftv1.CompileRegex(value); err != nil {
			return strMatch{}, err
		}
	default:
		return strMatch{}, fmt.Errorf("match type %v unsupported", typ)
	}
	return m, nil
}

func compileStrMatches(in []*weftv1.StringMatch, header bool) ([]strMatch, error) {
	var out []strMatch
	seen := map[string]bool{}
	for _, s := range in {
		name := s.GetName()
		if header {
			name = http.CanonicalHeaderKey(name)
		}
		// Only the first entry of a name counts (Gateway API).
		if seen[name] {
			continue
		}
		seen[name] = true
		m, err := compileString(s.GetType(), name, s.GetValue())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// compileMatch compiles a match Validate accepted. HTTP and gRPC matches
// differ only in what selects the request (a path and a method, or a gRPC
// service and method, with query parameters for HTTP only); their header
// matches and every value match compile the same way.
func compileMatch(kind weftv1.RouteKind, in *weftv1.Match, out *match) error {
	out.rule = int32(in.GetRule())
	out.grpc = kind == weftv1.RouteKind_ROUTE_KIND_GRPC
	var headers []*weftv1.StringMatch
	var err error
	switch kind {
	case weftv1.RouteKind_ROUTE_KIND_HTTP:
		h := in.GetHttp()
		if h == nil {
			return nil // matches every request
		}
		if err = compilePath(h.GetPath(), out); err != nil {
			return fmt.Errorf("path: %w", err)
		}
		out.method = h.GetMethod()
		if out.query, err = compileStrMatches(h.GetQueryParams(), false); err != nil {
			return err
		}
		headers = h.GetHeaders()
	case weftv1.RouteKind_ROUTE_KIND_GRPC:
		g := in.GetGrpc()
		if g == nil {
			return nil // matches every call
		}
		// One type for both parts; an empty part matches any.
		if v := g.GetService(); v != "" {
			if out.svc, err = compileString(g.GetType(), "service", v); err != nil {
				return fmt.Errorf("service: %w", err)
			}
		}
		if v := g.GetMethod(); v != "" {
			if out.meth, err = compileString(g.GetType(), "method", v); err != nil {
				return fmt.Errorf("method: %w", err)
			}
		}
		headers = g.GetHeaders()
	}
	out.headers, err = compileStrMatches(headers, true)
	return err
}

// compilePath compiles an HTTP path match (nil: any path).
func compilePath(p *weftv1.StringMatch, out *match) error {
	if p == nil {
		return nil
	}
	switch p.GetType() {
	case weftv1.MatchType_MATCH_TYPE_EXACT:
		out.pathKind, out.path = pathExact, p.GetValue()
	case weftv1.MatchType_MATCH_TYPE_PREFIX:
		out.pathKind, out.path = pathPrefix, normalisePrefix(p.GetValue())
	case weftv1.MatchType_MATCH_TYPE_REGEX:
		re, err := weftv1.CompileRegex(p.GetValue())
		if err != nil {
			return err
		}
		out.pathKind, out.pathRe = pathRegex, re
		out.pathLit, _ = re.LiteralPrefix()
	default:
		return fmt.Errorf("path match type %v unsupported", p.GetType())
	}
	return nil
}
