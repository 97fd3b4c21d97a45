package weftv1

import (
	"errors"
	"fmt"
	"iter"
)

// Validate is ValidateWithin(DefaultLimits); the agent NACKs a policy that
// fails.
func (p *NodePolicy) Validate() error { return p.ValidateWithin(DefaultLimits) }

// ValidateWithin checks every route table and authorization policy of the
// policy within l, and that
// the distinct regular expressions of all its tables together stay within
// l.MaxNodeRegexProgramSize, and that strict workloads have addresses.
// Other structure (clusters, other workloads) is checked where it is
// compiled.
func (p *NodePolicy) ValidateWithin(l Limits) error {
	var errs []error
	tables := 0
	for _, sp := range p.GetServices() {
		where := fmt.Sprintf("service %s/%s:%d", sp.GetNamespace(), sp.GetName(), sp.GetPort())
		if t := sp.GetProducer(); t != nil {
			errs = append(errs, at(where+" producer", t.ValidateWithin(l)))
			tables++
		}
		for ns, t := range sp.GetConsumers() {
			errs = append(errs, at(where+" consumer "+ns, t.ValidateWithin(l)))
			tables++
		}
	}
	errs = append(errs, p.validateAuthz(l), p.validateWorkloads())
	if tables > 0 || len(p.GetAuthz()) > 0 {
		errs = append(errs, p.checkRegexBudget(l))
	}
	return errors.Join(errs...)
}

// checkRegexBudget sums the program sizes of the policy's distinct
// patterns (invalid ones are reported by the tables).
func (p *NodePolicy) checkRegexBudget(l Limits) error {
	seen := map[string]bool{}
	total := 0
	count := func(t *RouteTable) {
		for _, m := range t.GetMatches() {
			for pat := range m.RegexPatterns() {
				if seen[pat] {
					continue
				}
				seen[pat] = true
				if n, err := l.RegexProgramSize(pat); err == nil {
					total += n
				}
			}
		}
	}
	for _, sp := range p.GetServices() {
		count(sp.GetProducer())
		for _, t := range sp.GetConsumers() {
			count(t)
		}
	}
	for _, a := range p.GetAuthz() {
		for _, r := range a.GetRules() {
			var t RouteTable
			for _, m := range r.GetHttp() {
				t.Matches = append(t.Matches, &Match{Http: m})
			}
			count(&t)
		}
	}
	if total > l.MaxNodeRegexProgramSize {
		return fmt.Errorf("%w: the program sizes of the policy's %d distinct regular expressions sum to %d, over the node budget %d", ErrNodeRegexBudget, len(seen), total, l.MaxNodeRegexProgramSize)
	}
	return nil
}

// RegexPatterns yields every regular expression of the match, each
// occurrence: the path, header and query parameter patterns of an HTTP
// match, the service, method and header patterns of a gRPC match.
func (m *Match) RegexPatterns() iter.Seq[string] {
	return func(yield func(string) bool) {
		str := func(ss []*StringMatch) bool {
			for _, s := range ss {
				if s.GetType() == MatchType_MATCH_TYPE_REGEX && !yield(s.GetValue()) {
					return false
				}
			}
			return true
		}
		if h := m.GetHttp(); h != nil {
			if p := h.GetPath(); p.GetType() == MatchType_MATCH_TYPE_REGEX && !yield(p.GetValue()) {
				return
			}
			_ = str(h.GetHeaders()) && str(h.GetQueryParams())
		}
		if g := m.GetGrpc(); g != nil {
			if g.GetType() == MatchType_MATCH_TYPE_REGEX {
				for _, v := range []string{g.GetService(), g.GetMethod()} {
					if v != "" && !yield(v) {
						return
					}
				}
			}
			str(g.GetHeaders())
		}
	}
}

// RegexProgramSize is the sum of the program sizes of the match's valid
// patterns within l, each occurrence counted.
func (m *Match) RegexProgramSize(l Limits) int {
	total := 0
	for pat := range m.RegexPatterns() {
		if n, err := l.RegexProgramSize(pat); err == nil {
			total += n
		}
	}
	return total
}

// Validate is ValidateWithin(DefaultLimits).
func (t *RouteTable) Validate() error { return t.ValidateWithin(DefaultLimits) }

// ValidateWithin checks a route table within l: its kind, every rule and
// match, that a ReplacePrefixMatch modifier is only used by a rule whose
// matches are all PathPrefix matches, and that the regular expressions of
// each route (the rules with one Route) stay within
// l.MaxRouteRegexProgramSize.
func (t *RouteTable) ValidateWithin(l Limits) error {
	if t == nil {
		return fmt.Errorf("%w: nil table", ErrInvalidTable)
	}
	switch t.GetKind() {
	case RouteKind_ROUTE_KIND_HTTP, RouteKind_ROUTE_KIND_GRPC, RouteKind_ROUTE_KIND_TCP:
	default:
		return fmt.Errorf("%w: unsupported kind %v", ErrInvalidTable, t.GetKind())
	}
	var errs []error
	for i, r := range t.GetRules() {
		errs = append(errs, at(fmt.Sprintf("rule %d (%s)", i, r.GetRoute()), r.Validate(t.GetKind())))
	}
	perRoute := map[string]int{}
	var routes []string
	for i, m := range t.GetMatches() {
		err := m.validate(l, t.GetKind(), len(t.GetRules()))
		if err == nil && m.GetRule() < uint32(len(t.GetRules())) && !m.allowsPrefixModifier() && t.GetRules()[m.GetRule()].usesPrefixModifier() {
			err = fmt.Errorf("%w: ReplacePrefixMatch needs a PathPrefix match", ErrInvalidMatch)
		}
		errs = append(errs, at(fmt.Sprintf("match %d", i), err))
		if err == nil {
			id := t.GetRules()[m.GetRule()].GetRoute()
			if _, ok := perRoute[id]; !ok {
				routes = append(routes, id)
			}
			perRoute[id] += m.RegexProgramSize(l)
		}
	}
	for _, id := range routes {
		if n := perRoute[id]; n > l.MaxRouteRegexProgramSize {
			errs = append(errs, fmt.Errorf("%w: route %s: program size %d exceeds the limit %d", ErrRouteRegexTooLarge, id, n, l.MaxRouteRegexProgramSize))
		}
	}
	return errors.Join(errs...)
}

// allowsPrefixModifier: a PathPrefix match, or no path (PathPrefix "/").
func (m *Match) allowsPrefixModifier() bool {
	if m.GetGrpc() != nil {
		return true
	}
	p := m.GetHttp().GetPath()
	return p == nil || p.GetType() == MatchType_MATCH_TYPE_PREFIX
}

// usesPrefixModifier reports whether a redirect or rewrite of the rule or
// of one of its backends replaces the matched prefix.
func (r *Rule) usesPrefixModifier() bool {
	uses := func(fs []*Filter) bool {
		for _, f := range fs {
			if f.GetRequestRedirect().GetPath().GetType() == PathModifier_TYPE_PREFIX ||
				f.GetUrlRewrite().GetPath().GetType() == PathModifier_TYPE_PREFIX {
				return true
			}
		}
		return false
	}
	if uses(r.GetFilters()) {
		return true
	}
	for _, b := range r.GetBackends() {
		if uses(b.GetFilters()) {
			return true
		}
	}
	return false
}

// Validate checks a rule of a table of the given kind: timeouts, retry,
// session persistence, filters (rule and backend level) and backends.
func (r *Rule) Validate(kind RouteKind) error {
	if r == nil {
		return fmt.Errorf("%w: nil rule", ErrInvalidRule)
	}
	errs := []error{
		at("request timeout", validateDuration("request timeout", r.GetRequestTimeout())),
		at("backend request timeout", validateDuration("backend request timeout", r.GetBackendRequestTimeout())),
	}
	if rt := r.GetRetry(); rt != nil {
		for _, c := range rt.GetCodes() {
			if c < 100 || c > 599 {
				errs = append(errs, fmt.Errorf("%w: retry code %d is not an HTTP status", ErrInvalidRule, c))
			}
		}
		errs = append(errs, validateDuration("retry backoff", rt.GetBackoff()))
	}
	if s := r.GetSession(); s != nil {
		errs = append(errs, at("session persistence", s.Validate()))
	}
	errs = append(errs, ValidateFilters(kind, r.GetFilters()))
	var total uint64
	redirect, rewrite := hasFilter(r.GetFilters())
	for i, b := range r.GetBackends() {
		if b == nil {
			errs = append(errs, fmt.Errorf("%w: backend %d: nil", ErrInvalidBackend, i))
			continue
		}
		errs = append(errs, at(fmt.Sprintf("backend %d", i), b.Validate(kind)))
		total += uint64(b.GetWeight())
		rd, rw := hasFilter(b.GetFilters())
		redirect, rewrite = redirect || rd, rewrite || rw
	}
	if total > DefaultLimits.MaxTotalWeight {
		errs = append(errs, fmt.Errorf("%w: backend weights sum to %d, above %d", ErrInvalidRule, total, DefaultLimits.MaxTotalWeight))
	}
	if redirect && rewrite {
		// Rule and backend level counted together.
		errs = append(errs, fmt.Errorf("%w: RequestRedirect and URLRewrite on one rule", ErrInvalidFilter))
	}
	return errors.Join(errs...)
}

func hasFilter(fs []*Filter) (redirect, rewrite bool) {
	for _, f := range fs {
		redirect = redirect || f.GetRequestRedirect() != nil
		rewrite = rewrite || f.GetUrlRewrite() != nil
	}
	return redirect, rewrite
}

// Validate checks a backend reference of a rule of the given kind.
func (b *BackendRef) Validate(kind RouteKind) error {
	var errs []error
	if b.GetCluster() == "" && b.GetInvalidReason() == "" {
		errs = append(errs, fmt.Errorf("%w: no cluster and no invalid reason", ErrInvalidBackend))
	}
	if b.GetWeight() > DefaultLimits.MaxWeight {
		errs = append(errs, fmt.Errorf("%w: weight %d above %d", ErrInvalidBackend, b.GetWeight(), DefaultLimits.MaxWeight))
	}
	errs = append(errs, ValidateFilters(kind, b.GetFilters()))
	if s := b.GetSession(); s != nil {
		errs = append(errs, at("session persistence", s.Validate()))
	}
	return errors.Join(errs...)
}

// filterName names a filter's kind, "" when none is set.
func (f *Filter) filterName() string {
	switch f.GetKind().(type) {
	case *Filter_RequestHeaderModifier:
		return "RequestHeaderModifier"
	case *Filter_ResponseHeaderModifier:
		return "ResponseHeaderModifier"
	case *Filter_RequestRedirect:
		return "RequestRedirect"
	case *Filter_UrlRewrite:
		return "URLRewrite"
	case *Filter_RequestMirror:
		return "RequestMirror"
	case *Filter_Cors:
		return "CORS"
	}
	return ""
}

// ValidateFilters checks one list of filters (of a rule or of a backend) of
// a table of the given kind: each filter, the kinds the route kind allows
// (none on TCP; header modifiers and mirrors on gRPC) and that no kind but
// RequestMirror repeats.
func ValidateFilters(kind RouteKind, fs []*Filter) error {
	if len(fs) == 0 {
		return nil
	}
	if kind == RouteKind_ROUTE_KIND_TCP {
		return fmt.Errorf("%w: filters on a TCP rule", ErrInvalidFilter)
	}
	var errs []error
	seen := map[string]bool{}
	for i, f := range fs {
		if err := f.Validate(); err != nil {
			errs = append(errs, at(fmt.Sprintf("filter %d", i), err))
			continue
		}
		name := f.filterName()
		if kind == RouteKind_ROUTE_KIND_GRPC {
			switch name {
			case "RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror":
			default:
				errs = append(errs, fmt.Errorf("%w: filter %d: %s is not supported on a gRPC rule", ErrInvalidFilter, i, name))
			}
		}
		if name != "RequestMirror" && seen[name] {
			errs = append(errs, fmt.Errorf("%w: filter %d: repeated %s (only RequestMirror may repeat)", ErrInvalidFilter, i, name))
		}
		seen[name] = true
	}
	return errors.Join(errs...)
}

// Validate checks one filter's own values.
func (f *Filter) Validate() error {
	switch k := f.GetKind().(type) {
	case *Filter_RequestHeaderModifier:
		return k.RequestHeaderModifier.Validate()
	case *Filter_ResponseHeaderModifier:
		return k.ResponseHeaderModifier.Validate()
	case *Filter_RequestRedirect:
		return k.RequestRedirect.Validate()
	case *Filter_UrlRewrite:
		return k.UrlRewrite.Validate()
	case *Filter_RequestMirror:
		return k.RequestMirror.Validate()
	case *Filter_Cors:
		return k.Cors.Validate()
	}
	return fmt.Errorf("%w: no filter kind set", ErrInvalidFilter)
}

// Validate checks header names and values.
func (m *HeaderModifier) Validate() error {
	if m == nil {
		return fmt.Errorf("%w: empty header modifier", ErrInvalidFilter)
	}
	var errs []error
	for _, h := range append(m.GetSet()[:len(m.GetSet()):len(m.GetSet())], m.GetAdd()...) {
		errs = append(errs, ValidateHeaderName(h.GetName()), at("header "+h.GetName(), ValidateHeaderValue(h.GetValue())))
	}
	for _, n := range m.GetRemove() {
		errs = append(errs, ValidateHeaderName(n))
	}
	return errors.Join(errs...)
}

// Validate checks a path modifier (nil: none).
func (m *PathModifier) Validate() error {
	if m == nil {
		return nil
	}
	switch m.GetType() {
	case PathModifier_TYPE_FULL, PathModifier_TYPE_PREFIX:
	default:
		return fmt.Errorf("%w: path modifier type %v unsupported", ErrInvalidFilter, m.GetType())
	}
	return ValidatePath(m.GetValue())
}

// Validate checks a redirect: scheme http or https (or unset), hostname,
// port, status 301, 302, 303, 307 or 308 (0: 302) and path.
func (r *RequestRedirect) Validate() error {
	if r == nil {
		return fmt.Errorf("%w: empty redirect", ErrInvalidFilter)
	}
	var errs []error
	switch r.GetScheme() {
	case "", "http", "https":
	default:
		errs = append(errs, fmt.Errorf("%w: redirect scheme %q unsupported; use http or https", ErrInvalidFilter, r.GetScheme()))
	}
	if h := r.GetHostname(); h != "" {
		errs = append(errs, ValidateHostname(h))
	}
	if r.GetPort() > 65535 {
		errs = append(errs, fmt.Errorf("%w: redirect port %d is out of range", ErrInvalidFilter, r.GetPort()))
	}
	switch r.GetStatusCode() {
	case 0, 301, 302, 303, 307, 308:
	default:
		errs = append(errs, fmt.Errorf("%w: redirect status %d unsupported; use 301, 302, 303, 307 or 308", ErrInvalidFilter, r.GetStatusCode()))
	}
	errs = append(errs, r.GetPath().Validate())
	return errors.Join(errs...)
}

// Validate checks a rewrite's hostname and path.
func (r *URLRewrite) Validate() error {
	if r == nil {
		return fmt.Errorf("%w: empty rewrite", ErrInvalidFilter)
	}
	var errs []error
	if h := r.GetHostname(); h != "" {
		errs = append(errs, ValidateHostname(h))
	}
	errs = append(errs, r.GetPath().Validate())
	return errors.Join(errs...)
}

// Validate checks a mirror: a cluster and a fraction of at most 1.
func (m *RequestMirror) Validate() error {
	switch {
	case m.GetCluster() == "":
		return fmt.Errorf("%w: mirror without cluster", ErrInvalidFilter)
	case m.GetDenominator() == 0:
		return fmt.Errorf("%w: mirror denominator 0", ErrInvalidFilter)
	case m.GetNumerator() > m.GetDenominator():
		return fmt.Errorf("%w: mirror fraction %d/%d above 1", ErrInvalidFilter, m.GetNumerator(), m.GetDenominator())
	}
	return nil
}

// Validate checks a CORS filter: origins ("*" or ParseOrigin), methods
// ("*" or tokens) and header names ("*" or tokens).
func (c *CORS) Validate() error {
	if c == nil {
		return fmt.Errorf("%w: empty CORS", ErrInvalidFilter)
	}
	var errs []error
	for _, o := range c.GetAllowOrigins() {
		if o != "*" {
			_, err := ParseOrigin(o)
			errs = append(errs, at("allowOrigins", err))
		}
	}
	for _, m := range c.GetAllowMethods() {
		if m != "*" {
			errs = append(errs, at("allowMethods", ValidateMethod(m)))
		}
	}
	for _, h := range c.GetAllowHeaders() {
		if h != "*" {
			errs = append(errs, at("allowHeaders", ValidateHeaderName(h)))
		}
	}
	for _, h := range c.GetExposeHeaders() {
		if h != "*" {
			errs = append(errs, at("exposeHeaders", ValidateHeaderName(h)))
		}
	}
	return errors.Join(errs...)
}

// Validate checks session persistence: cookie name and path, lifetime (a
// permanent cookie needs an absolute timeout), header name.
func (s *SessionPersistence) Validate() error {
	if s == nil {
		return nil
	}
	if err := validateDuration("absolute timeout", s.GetAbsoluteTimeout()); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSession, err)
	}
	var errs []error
	switch s.GetType() {
	case SessionPersistence_TYPE_COOKIE, SessionPersistence_TYPE_UNSPECIFIED:
		if n := s.GetName(); n != "" {
			errs = append(errs, ValidateCookieName(n))
		}
		if p := s.GetCookiePath(); p != "" {
			errs = append(errs, ValidateCookiePath(p))
		}
		switch s.GetLifetime() {
		case SessionPersistence_LIFETIME_UNSPECIFIED, SessionPersistence_LIFETIME_SESSION:
		case SessionPersistence_LIFETIME_PERMANENT:
			if s.GetAbsoluteTimeout().AsDuration() <= 0 {
				errs = append(errs, errors.New("a permanent cookie needs an absolute timeout"))
			}
		default:
			errs = append(errs, fmt.Errorf("lifetime %v unsupported", s.GetLifetime()))
		}
	case SessionPersistence_TYPE_HEADER:
		errs = append(errs, ValidateHeaderName(s.GetName()))
		if s.GetLifetime() == SessionPersistence_LIFETIME_PERMANENT {
			errs = append(errs, errors.New("lifetime Permanent on a header session"))
		}
	default:
		errs = append(errs, fmt.Errorf("type %v unsupported", s.GetType()))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSession, err)
	}
	return nil
}

// Validate checks a match of a table of the given kind with nrules rules,
// within DefaultLimits.
func (m *Match) Validate(kind RouteKind, nrules int) error {
	return m.validate(DefaultLimits, kind, nrules)
}

func (m *Match) validate(l Limits, kind RouteKind, nrules int) error {
	if m == nil {
		return fmt.Errorf("%w: nil match", ErrInvalidMatch)
	}
	if int(m.GetRule()) >= nrules {
		return fmt.Errorf("%w: rule index %d out of range (%d rules)", ErrInvalidMatch, m.GetRule(), nrules)
	}
	switch kind {
	case RouteKind_ROUTE_KIND_HTTP:
		if m.GetGrpc() != nil {
			return fmt.Errorf("%w: gRPC match in an HTTP table", ErrInvalidMatch)
		}
		return m.GetHttp().validate(l)
	case RouteKind_ROUTE_KIND_GRPC:
		if m.GetHttp() != nil {
			return fmt.Errorf("%w: HTTP match in a gRPC table", ErrInvalidMatch)
		}
		return m.GetGrpc().validate(l)
	case RouteKind_ROUTE_KIND_TCP:
		if m.GetHttp() != nil || m.GetGrpc() != nil {
			return fmt.Errorf("%w: L7 match in a TCP table", ErrInvalidMatch)
		}
	}
	return nil
}

// Validate checks an HTTP match (nil matches every request): path, method,
// header and query parameter matches, within DefaultLimits.
func (m *HTTPMatch) Validate() error { return m.validate(DefaultLimits) }

func (m *HTTPMatch) validate(l Limits) error {
	if m == nil {
		return nil
	}
	var errs []error
	if p := m.GetPath(); p != nil {
		switch p.GetType() {
		case MatchType_MATCH_TYPE_EXACT, MatchType_MATCH_TYPE_PREFIX:
			errs = append(errs, ValidateMatchPath(p.GetValue()))
		case MatchType_MATCH_TYPE_REGEX:
			_, err := l.RegexProgramSize(p.GetValue())
			errs = append(errs, at("path", err))
		default:
			errs = append(errs, fmt.Errorf("%w: path match type %v unsupported", ErrInvalidMatch, p.GetType()))
		}
	}
	if mm := m.GetMethod(); mm != "" {
		errs = append(errs, ValidateMethod(mm))
	}
	for _, h := range m.GetHeaders() {
		errs = append(errs, h.validate(l, true))
	}
	for _, q := range m.GetQueryParams() {
		errs = append(errs, q.validate(l, false))
	}
	return errors.Join(errs...)
}

// Validate checks a gRPC match (nil matches every call), within
// DefaultLimits.
func (m *GRPCMatch) Validate() error { return m.validate(DefaultLimits) }

func (m *GRPCMatch) validate(l Limits) error {
	if m == nil {
		return nil
	}
	var errs []error
	if m.GetService() != "" || m.GetMethod() != "" {
		switch m.GetType() {
		case MatchType_MATCH_TYPE_EXACT:
		case MatchType_MATCH_TYPE_REGEX:
			if v := m.GetService(); v != "" {
				_, err := l.RegexProgramSize(v)
				errs = append(errs, at("service", err))
			}
			if v := m.GetMethod(); v != "" {
				_, err := l.RegexProgramSize(v)
				errs = append(errs, at("method", err))
			}
		default:
			errs = append(errs, fmt.Errorf("%w: gRPC method match type %v unsupported", ErrInvalidMatch, m.GetType()))
		}
	}
	for _, h := range m.GetHeaders() {
		errs = append(errs, h.validate(l, true))
	}
	return errors.Join(errs...)
}

// Validate checks a header (header true) or query parameter match: its name
// and, for a regular expression, the pattern (within DefaultLimits).
func (s *StringMatch) Validate(header bool) error { return s.validate(DefaultLimits, header) }

func (s *StringMatch) validate(l Limits, header bool) error {
	var errs []error
	if header {
		errs = append(errs, ValidateHeaderName(s.GetName()))
	} else if s.GetName() == "" {
		errs = append(errs, fmt.Errorf("%w: empty query parameter name", ErrInvalidMatch))
	}
	switch s.GetType() {
	case MatchType_MATCH_TYPE_EXACT:
	case MatchType_MATCH_TYPE_REGEX:
		_, err := l.RegexProgramSize(s.GetValue())
		errs = append(errs, at(s.GetName(), err))
	default:
		errs = append(errs, fmt.Errorf("%w: %s: match type %v unsupported", ErrInvalidMatch, s.GetName(), s.GetType()))
	}
	return errors.Join(errs...)
}
