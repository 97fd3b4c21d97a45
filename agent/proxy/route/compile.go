package route

import (
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/agent/proxy/session"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Limits checked by Compile.
const (
	maxWeight      = 1_000_000 // Gateway API's maximum backendRef weight
	maxTotalWeight = math.MaxInt32
	maxPatternLen  = 1024
)

// Compile validates t and precompiles it: regular expressions (RE2, full
// match) compiled once, header names canonicalised, backend weights summed,
// the candidate index built. Any invalid value is an error wrapping
// ErrInvalidTable that names the rule or match; the caller NACKs the policy
// and keeps its last good table.
func Compile(t *weftv1.RouteTable) (*Table, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: nil table", ErrInvalidTable)
	}
	switch t.GetKind() {
	case weftv1.RouteKind_ROUTE_KIND_HTTP, weftv1.RouteKind_ROUTE_KIND_GRPC, weftv1.RouteKind_ROUTE_KIND_TCP:
	default:
		return nil, fmt.Errorf("%w: unsupported kind %v", ErrInvalidTable, t.GetKind())
	}
	out := &Table{
		kind:    t.GetKind(),
		rules:   make([]Rule, len(t.GetRules())),
		matches: make([]match, len(t.GetMatches())),
	}
	for i, r := range t.GetRules() {
		if err := compileRule(out.kind, r, &out.rules[i]); err != nil {
			return nil, fmt.Errorf("%w: rule %d (%s): %v", ErrInvalidTable, i, r.GetRoute(), err)
		}
	}
	for i, m := range t.GetMatches() {
		if err := compileMatch(out.kind, m, len(out.rules), &out.matches[i]); err != nil {
			return nil, fmt.Errorf("%w: match %d: %v", ErrInvalidTable, i, err)
		}
	}
	// ReplacePrefixMatch is only valid when every match of the rule is a
	// PathPrefix match (a match with no path is PathPrefix "/").
	for i := range out.matches {
		m := &out.matches[i]
		if m.grpc || m.pathKind == pathPrefix || m.pathKind == pathAny {
			continue
		}
		if usesPrefixModifier(&out.rules[m.rule]) {
			return nil, fmt.Errorf("%w: match %d: ReplacePrefixMatch needs a PathPrefix match", ErrInvalidTable, i)
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
		case t.kind == weftv1.RouteKind_ROUTE_KIND_GRPC && m.svcKind == strExact && m.mKind == strExact:
			k := m.svc + "/" + m.meth
			t.grpcExact[k] = append(t.grpcExact[k], pos)
		case t.kind == weftv1.RouteKind_ROUTE_KIND_GRPC && m.svcKind == strExact && m.mKind == 0:
			t.grpcService[m.svc] = append(t.grpcService[m.svc], pos)
		default:
			t.always = append(t.always, pos)
		}
	}
}

func usesPrefixModifier(r *Rule) bool {
	check := func(fs []Filter) bool {
		for _, f := range fs {
			if f.Redirect != nil && f.Redirect.Path != nil && f.Redirect.Path.Kind == PathPrefix {
				return true
			}
			if f.Rewrite != nil && f.Rewrite.Path != nil && f.Rewrite.Path.Kind == PathPrefix {
				return true
			}
		}
		return false
	}
	if check(r.Filters) {
		return true
	}
	for _, b := range r.Backends {
		if check(b.Filters) {
			return true
		}
	}
	return false
}

func compileRule(kind weftv1.RouteKind, in *weftv1.Rule, out *Rule) error {
	if in == nil {
		return fmt.Errorf("nil rule")
	}
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
			if c < 100 || c > 599 {
				return fmt.Errorf("retry code %d: not an HTTP status", c)
			}
			p.Codes = append(p.Codes, int(c))
		}
		if p.Backoff, err = duration(r.GetBackoff()); err != nil {
			return fmt.Errorf("retry backoff: %w", err)
		}
		out.Retry = p
	}
	if s := in.GetSession(); s != nil {
		if err := session.Validate(s); err != nil {
			return fmt.Errorf("session persistence: %w", err)
		}
	}
	out.Backends = make([]Backend, len(in.GetBackends()))
	total := 0
	for i, b := range in.GetBackends() {
		if b == nil {
			return fmt.Errorf("backend %d: nil", i)
		}
		ob := &out.Backends[i]
		ob.Cluster, ob.Weight, ob.Invalid = b.GetCluster(), b.GetWeight(), b.GetInvalidReason()
		if ob.Cluster == "" && ob.Invalid == "" {
			return fmt.Errorf("backend %d: no cluster and no invalid reason", i)
		}
		if ob.Weight > maxWeight {
			return fmt.Errorf("backend %d: weight %d above %d", i, ob.Weight, maxWeight)
		}
		total += int(ob.Weight)
		if ob.Filters, err = compileFilters(kind, b.GetFilters()); err != nil {
			return fmt.Errorf("backend %d: %w", i, err)
		}
		ob.Session = in.GetSession()
		if s := b.GetSession(); s != nil {
			if err := session.Validate(s); err != nil {
				return fmt.Errorf("backend %d: session persistence: %w", i, err)
			}
			ob.Session = s
		}
	}
	if total > maxTotalWeight {
		return fmt.Errorf("backend weights sum to %d, above %d", total, maxTotalWeight)
	}
	out.totalWeight = total
	// A redirect and a rewrite never share a rule, rule and backend level
	// counted together.
	if hasKind(out.Filters, FilterRedirect) || hasKindAnyBackend(out.Backends, FilterRedirect) {
		if hasKind(out.Filters, FilterRewrite) || hasKindAnyBackend(out.Backends, FilterRewrite) {
			return fmt.Errorf("RequestRedirect and URLRewrite on one rule")
		}
	}
	return nil
}

func hasKind(fs []Filter, k FilterKind) bool {
	for _, f := range fs {
		if f.Kind == k {
			return true
		}
	}
	return false
}

func hasKindAnyBackend(bs []Backend, k FilterKind) bool {
	for _, b := range bs {
		if hasKind(b.Filters, k) {
			return true
		}
	}
	return false
}

func duration(d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, fmt.Errorf("negative duration %v", v)
	}
	return v, nil
}

func compileFilters(kind weftv1.RouteKind, in []*weftv1.Filter) ([]Filter, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if kind == weftv1.RouteKind_ROUTE_KIND_TCP {
		return nil, fmt.Errorf("filters on a TCP rule")
	}
	out := make([]Filter, 0, len(in))
	seen := map[FilterKind]bool{}
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
			if k.Cors == nil {
				err = fmt.Errorf("empty")
				break
			}
			x := k.Cors
			c.CORS, err = compileCORS(x.GetAllowOrigins(), x.GetAllowCredentials(), x.GetAllowMethods(), x.GetAllowHeaders(), x.GetExposeHeaders(), x.GetMaxAgeSeconds())
		default:
			err = fmt.Errorf("no filter kind set")
		}
		if err != nil {
			return nil, fmt.Errorf("filter %d: %w", i, err)
		}
		if kind == weftv1.RouteKind_ROUTE_KIND_GRPC {
			switch c.Kind {
			case FilterRequestHeaders, FilterResponseHeaders, FilterMirror:
			default:
				return nil, fmt.Errorf("filter %d: not supported on a gRPC rule", i)
			}
		}
		if c.Kind != FilterMirror && seen[c.Kind] {
			return nil, fmt.Errorf("filter %d: repeated filter type", i)
		}
		seen[c.Kind] = true
		out = append(out, c)
	}
	return out, nil
}

func compileHeaderModifier(in *weftv1.HeaderModifier) (*HeaderModifier, error) {
	if in == nil {
		return nil, fmt.Errorf("empty header modifier")
	}
	m := &HeaderModifier{}
	conv := func(hs []*weftv1.HeaderModifier_Header) ([]Header, error) {
		var out []Header
		for _, h := range hs {
			if !isToken(h.GetName()) {
				return nil, fmt.Errorf("header name %q invalid", h.GetName())
			}
			if !ValidHeaderValue(h.GetValue()) {
				return nil, fmt.Errorf("header %s: value has control characters", h.GetName())
			}
			out = append(out, Header{Name: http.CanonicalHeaderKey(h.GetName()), Value: h.GetValue()})
		}
		return out, nil
	}
	var err error
	if m.Set, err = conv(in.GetSet()); err != nil {
		return nil, err
	}
	if m.Add, err = conv(in.GetAdd()); err != nil {
		return nil, err
	}
	for _, r := range in.GetRemove() {
		if !isToken(r) {
			return nil, fmt.Errorf("header name %q invalid", r)
		}
		m.Remove = append(m.Remove, http.CanonicalHeaderKey(r))
	}
	return m, nil
}

// ValidHeaderValue reports whether v can be sent as an HTTP header value
// (no control characters but tab). The controller applies the same check.
func ValidHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// ValidHostname reports whether h is a host name the proxy accepts in a
// redirect or rewrite. The controller applies the same check.
func ValidHostname(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' {
			continue
		}
		return false
	}
	return true
}

func validPathValue(p string) bool {
	if p == "" {
		return true
	}
	if p[0] != '/' || len(p) > maxPatternLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c == '?' || c == '#' {
			return false
		}
	}
	return true
}

func compilePathModifier(in *weftv1.PathModifier) (*PathModifier, error) {
	if in == nil {
		return nil, nil
	}
	if !validPathValue(in.GetValue()) {
		return nil, fmt.Errorf("path %q invalid", in.GetValue())
	}
	switch in.GetType() {
	case weftv1.PathModifier_TYPE_FULL:
		return &PathModifier{Kind: PathFull, Value: in.GetValue()}, nil
	case weftv1.PathModifier_TYPE_PREFIX:
		return &PathModifier{Kind: PathPrefix, Value: in.GetValue()}, nil
	}
	return nil, fmt.Errorf("path modifier type %v unsupported", in.GetType())
}

func compileRedirect(in *weftv1.RequestRedirect) (*Redirect, error) {
	if in == nil {
		return nil, fmt.Errorf("empty redirect")
	}
	r := &Redirect{Scheme: in.GetScheme(), Hostname: in.GetHostname(), Port: in.GetPort(), StatusCode: int(in.GetStatusCode())}
	switch r.Scheme {
	case "", "http", "https":
	default:
		return nil, fmt.Errorf("redirect scheme %q unsupported", r.Scheme)
	}
	if r.Hostname != "" && !ValidHostname(r.Hostname) {
		return nil, fmt.Errorf("redirect hostname %q invalid", r.Hostname)
	}
	if r.Port > 65535 {
		return nil, fmt.Errorf("redirect port %d invalid", r.Port)
	}
	switch r.StatusCode {
	case 0:
		r.StatusCode = http.StatusFound
	case 301, 302, 303, 307, 308:
	default:
		return nil, fmt.Errorf("redirect status %d unsupported", r.StatusCode)
	}
	var err error
	if r.Path, err = compilePathModifier(in.GetPath()); err != nil {
		return nil, fmt.Errorf("redirect: %w", err)
	}
	return r, nil
}

func compileRewrite(in *weftv1.URLRewrite) (*Rewrite, error) {
	if in == nil {
		return nil, fmt.Errorf("empty rewrite")
	}
	r := &Rewrite{Hostname: in.GetHostname()}
	if r.Hostname != "" && !ValidHostname(r.Hostname) {
		return nil, fmt.Errorf("rewrite hostname %q invalid", r.Hostname)
	}
	var err error
	if r.Path, err = compilePathModifier(in.GetPath()); err != nil {
		return nil, fmt.Errorf("rewrite: %w", err)
	}
	return r, nil
}

func compileMirror(in *weftv1.RequestMirror) (*Mirror, error) {
	if in == nil || in.GetCluster() == "" {
		return nil, fmt.Errorf("mirror without cluster")
	}
	m := &Mirror{Cluster: in.GetCluster(), Numerator: in.GetNumerator(), Denominator: in.GetDenominator()}
	if m.Denominator == 0 {
		return nil, fmt.Errorf("mirror denominator 0")
	}
	if m.Numerator > m.Denominator {
		return nil, fmt.Errorf("mirror fraction %d/%d above 1", m.Numerator, m.Denominator)
	}
	return m, nil
}

func compileRegex(v string) (*regexp.Regexp, error) {
	if len(v) > maxPatternLen {
		return nil, fmt.Errorf("regular expression longer than %d", maxPatternLen)
	}
	re, err := regexp.Compile("^(?:" + v + ")$")
	if err != nil {
		return nil, fmt.Errorf("regular expression %q: %w", v, err)
	}
	return re, nil
}

func compileStrMatches(in []*weftv1.StringMatch, header bool) ([]strMatch, error) {
	var out []strMatch
	seen := map[string]bool{}
	for _, s := range in {
		name := s.GetName()
		if header {
			if !isToken(name) {
				return nil, fmt.Errorf("header name %q invalid", name)
			}
			name = http.CanonicalHeaderKey(name)
		} else if name == "" {
			return nil, fmt.Errorf("empty query parameter name")
		}
		// Only the first entry of a name counts (Gateway API).
		if seen[name] {
			continue
		}
		seen[name] = true
		m := strMatch{name: name, value: s.GetValue()}
		switch s.GetType() {
		case weftv1.MatchType_MATCH_TYPE_EXACT:
			m.kind = strExact
		case weftv1.MatchType_MATCH_TYPE_REGEX:
			m.kind = strRegex
			re, err := compileRegex(s.GetValue())
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			m.re = re
		default:
			return nil, fmt.Errorf("%s: match type %v unsupported", name, s.GetType())
		}
		out = append(out, m)
	}
	return out, nil
}

func compileMatch(kind weftv1.RouteKind, in *weftv1.Match, nrules int, out *match) error {
	if in == nil {
		return fmt.Errorf("nil match")
	}
	if int(in.GetRule()) >= nrules {
		return fmt.Errorf("rule index %d out of range (%d rules)", in.GetRule(), nrules)
	}
	out.rule = int32(in.GetRule())
	var err error
	switch kind {
	case weftv1.RouteKind_ROUTE_KIND_HTTP:
		if in.GetGrpc() != nil {
			return fmt.Errorf("gRPC match in an HTTP table")
		}
		h := in.GetHttp()
		if h == nil {
			return nil // matches every request
		}
		if p := h.GetPath(); p != nil {
			switch p.GetType() {
			case weftv1.MatchType_MATCH_TYPE_EXACT, weftv1.MatchType_MATCH_TYPE_PREFIX:
				v := p.GetValue()
				if !validPathValue(v) || v == "" || strings.Contains(v, "//") {
					return fmt.Errorf("path %q invalid", v)
				}
				if p.GetType() == weftv1.MatchType_MATCH_TYPE_EXACT {
					out.pathKind, out.path = pathExact, v
				} else {
					out.pathKind, out.path = pathPrefix, normalisePrefix(v)
				}
			case weftv1.MatchType_MATCH_TYPE_REGEX:
				out.pathKind = pathRegex
				if out.pathRe, err = compileRegex(p.GetValue()); err != nil {
					return fmt.Errorf("path: %w", err)
				}
				out.pathLit, _ = out.pathRe.LiteralPrefix()
			default:
				return fmt.Errorf("path match type %v unsupported", p.GetType())
			}
		}
		if m := h.GetMethod(); m != "" {
			if !isToken(m) {
				return fmt.Errorf("method %q invalid", m)
			}
			out.method = m
		}
		if out.headers, err = compileStrMatches(h.GetHeaders(), true); err != nil {
			return err
		}
		if out.query, err = compileStrMatches(h.GetQueryParams(), false); err != nil {
			return err
		}
	case weftv1.RouteKind_ROUTE_KIND_GRPC:
		if in.GetHttp() != nil {
			return fmt.Errorf("HTTP match in a gRPC table")
		}
		out.grpc = true
		g := in.GetGrpc()
		if g == nil {
			return nil
		}
		if g.GetService() != "" || g.GetMethod() != "" {
			var k strKind
			switch g.GetType() {
			case weftv1.MatchType_MATCH_TYPE_EXACT:
				k = strExact
			case weftv1.MatchType_MATCH_TYPE_REGEX:
				k = strRegex
			default:
				return fmt.Errorf("gRPC method match type %v unsupported", g.GetType())
			}
			if g.GetService() != "" {
				out.svcKind, out.svc = k, g.GetService()
				if k == strRegex {
					if out.svcRe, err = compileRegex(g.GetService()); err != nil {
						return fmt.Errorf("service: %w", err)
					}
				}
			}
			if g.GetMethod() != "" {
				out.mKind, out.meth = k, g.GetMethod()
				if k == strRegex {
					if out.methRe, err = compileRegex(g.GetMethod()); err != nil {
						return fmt.Errorf("method: %w", err)
					}
				}
			}
		}
		if out.headers, err = compileStrMatches(g.GetHeaders(), true); err != nil {
			return err
		}
	case weftv1.RouteKind_ROUTE_KIND_TCP:
		if in.GetHttp() != nil || in.GetGrpc() != nil {
			return fmt.Errorf("L7 match in a TCP table")
		}
	}
	return nil
}
