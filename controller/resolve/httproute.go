package resolve

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// hostnamesNote is added to the Accepted message of a route that sets
// hostnames: mesh traffic is matched by Service IP and port (GEP-1294).
const hostnamesNote = "spec.hostnames is ignored for mesh routes: traffic is matched by Service cluster IP and port, not by Host (GEP-1294)"

// defaultRetryAttempts is used when a retry stanza leaves attempts unset.
const defaultRetryAttempts = 1

func (r *resolver) compileHTTPRoute(hr *gwv1.HTTPRoute) *route {
	rules := hr.Spec.Rules
	if len(rules) == 0 {
		// The API server defaults rules to one PathPrefix "/" rule; a
		// snapshot that skipped defaulting means the same.
		rules = []gwv1.HTTPRouteRule{{}}
	}
	rt := &route{
		kind: kindHTTP, ns: hr.Namespace, name: hr.Name, generation: hr.Generation,
		created: hr.CreationTimestamp, parentRefs: hr.Spec.ParentRefs, totalRules: len(rules),
	}
	if len(hr.Spec.Hostnames) > 0 {
		rt.notes = append(rt.notes, hostnamesNote)
	}
	r.compileRoute(rt, len(rules), func(i int) ruleSource {
		rule := &rules[i]
		return ruleSource{
			name:    rule.Name,
			matches: len(rule.Matches),
			match: func(j int) (matchEntry, error) {
				m := &gwv1.HTTPRouteMatch{}
				if j >= 0 {
					m = &rule.Matches[j]
				}
				hm, err := httpMatch(m)
				return matchEntry{http: hm}, err
			},
			settings: func(pr *weftv1.Rule) error {
				if err := httpTimeouts(pr, rule.Timeouts); err != nil {
					return err
				}
				return httpRetry(pr, rule.Retry)
			},
			//lint:ignore SA1019 inline session persistence (GEP-1619) is part of v1.7.0 and Weft implements it beside XBackend
			session: rule.SessionPersistence,
			refs:    backendRefs(rule.BackendRefs, func(r *gwv1.HTTPBackendRef) gwv1.BackendRef { return r.BackendRef }),
			filters: func(c filterContext, backend int) ([]*weftv1.Filter, error) {
				if backend < 0 {
					return r.convertHTTPFilters(c, rule.Filters)
				}
				return r.convertHTTPFilters(c, rule.BackendRefs[backend].Filters)
			},
		}
	})
	return rt
}

// httpMatch converts and validates one HTTPRouteMatch. Header names are
// lower-cased; a repeated header (case-insensitive) or query parameter
// (case-sensitive) name keeps only its first entry, as the spec says.
func httpMatch(m *gwv1.HTTPRouteMatch) (*weftv1.HTTPMatch, error) {
	out := &weftv1.HTTPMatch{Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/"}}
	if p := m.Path; p != nil {
		typ := gwv1.PathMatchPathPrefix
		if p.Type != nil {
			typ = *p.Type
		}
		val := "/"
		if p.Value != nil {
			val = *p.Value
		}
		switch typ {
		case gwv1.PathMatchExact:
			if err := weftv1.ValidateMatchPath(val); err != nil {
				return nil, err
			}
			out.Path = &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_EXACT, Value: val}
		case gwv1.PathMatchPathPrefix:
			if err := weftv1.ValidateMatchPath(val); err != nil {
				return nil, err
			}
			out.Path = &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: val}
		case gwv1.PathMatchRegularExpression:
			if err := checkRegex("path", val); err != nil {
				return nil, err
			}
			out.Path = &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_REGEX, Value: val}
		default:
			return nil, fmt.Errorf("path match type %q is unknown; use Exact, PathPrefix or RegularExpression", typ)
		}
	}
	seen := map[string]bool{}
	for _, h := range m.Headers {
		name := strings.ToLower(string(h.Name))
		if err := weftv1.ValidateHeaderName(name); err != nil {
			return nil, err
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		typ := gwv1.HeaderMatchExact
		if h.Type != nil {
			typ = *h.Type
		}
		sm, err := stringMatch("header "+name, string(typ), name, h.Value)
		if err != nil {
			return nil, err
		}
		out.Headers = append(out.Headers, sm)
	}
	seen = map[string]bool{}
	for _, q := range m.QueryParams {
		name := string(q.Name)
		if name == "" {
			return nil, errors.New("query parameter match has an empty name")
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		typ := gwv1.QueryParamMatchExact
		if q.Type != nil {
			typ = gwv1.QueryParamMatchType(*q.Type)
		}
		sm, err := stringMatch("query parameter "+name, string(typ), name, q.Value)
		if err != nil {
			return nil, err
		}
		out.QueryParams = append(out.QueryParams, sm)
	}
	if m.Method != nil {
		if err := weftv1.ValidateMethod(string(*m.Method)); err != nil {
			return nil, err
		}
		out.Method = string(*m.Method)
	}
	return out, nil
}

// checkPrefixModifiers enforces that ReplacePrefixMatch (in a redirect or a
// rewrite, on the rule or a backendRef) is only used when every match of
// the rule is a PathPrefix match.
func checkPrefixModifiers(rule *weftv1.Rule, matches []matchEntry) error {
	uses := func(fs []*weftv1.Filter) bool {
		for _, f := range fs {
			if f.GetRequestRedirect().GetPath().GetType() == weftv1.PathModifier_TYPE_PREFIX ||
				f.GetUrlRewrite().GetPath().GetType() == weftv1.PathModifier_TYPE_PREFIX {
				return true
			}
		}
		return false
	}
	used := uses(rule.Filters)
	for _, b := range rule.Backends {
		used = used || uses(b.Filters)
	}
	if !used {
		return nil
	}
	for _, m := range matches {
		if m.http.GetPath().GetType() != weftv1.MatchType_MATCH_TYPE_PREFIX {
			return fmt.Errorf("ReplacePrefixMatch needs PathPrefix matches, but match %d is not one", m.index)
		}
	}
	return nil
}

// stringMatch converts an Exact or RegularExpression header/query/metadata
// match.
func stringMatch(what, typ, name, value string) (*weftv1.StringMatch, error) {
	switch typ {
	case "Exact", "":
		return &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_EXACT, Name: name, Value: value}, nil
	case "RegularExpression":
		if err := checkRegex(what, value); err != nil {
			return nil, err
		}
		return &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_REGEX, Name: name, Value: value}, nil
	}
	return nil, fmt.Errorf("%s match type %q is unknown; use Exact or RegularExpression", what, typ)
}

// httpTimeouts sets request and backendRequest timeouts (GEP-1742). A zero
// duration disables a timeout; backendRequest may not exceed request.
func httpTimeouts(rule *weftv1.Rule, t *gwv1.HTTPRouteTimeouts) error {
	if t == nil {
		return nil
	}
	var req, be time.Duration
	var err error
	if t.Request != nil {
		if req, err = parseDuration(*t.Request); err != nil {
			return fmt.Errorf("timeouts.request %w", err)
		}
	}
	if t.BackendRequest != nil {
		if be, err = parseDuration(*t.BackendRequest); err != nil {
			return fmt.Errorf("timeouts.backendRequest %w", err)
		}
	}
	if req > 0 && be > req {
		return fmt.Errorf("timeouts.backendRequest %s is longer than timeouts.request %s; the request timeout covers every backend attempt, so make backendRequest shorter (GEP-1742)", *t.BackendRequest, *t.Request)
	}
	rule.RequestTimeout = durationProto(req)
	rule.BackendRequestTimeout = durationProto(be)
	return nil
}

// httpRetry sets the retry policy (GEP-1731).
func httpRetry(rule *weftv1.Rule, rr *gwv1.HTTPRouteRetry) error {
	if rr == nil {
		return nil
	}
	out := &weftv1.Retry{Attempts: defaultRetryAttempts}
	if rr.Attempts != nil {
		if *rr.Attempts < 0 {
			return fmt.Errorf("retry.attempts %d must not be negative", *rr.Attempts)
		}
		out.Attempts = uint32(min(*rr.Attempts, 1000))
	}
	for _, c := range rr.Codes {
		if c < 400 || c > 599 {
			return fmt.Errorf("retry.codes: %s is not an HTTP status code in 400-599", strconv.Itoa(int(c)))
		}
		out.Codes = append(out.Codes, uint32(c))
	}
	if rr.Backoff != nil {
		d, err := parseDuration(*rr.Backoff)
		if err != nil {
			return fmt.Errorf("retry.backoff %w", err)
		}
		out.Backoff = durationProto(d)
	}
	if out.Attempts == 0 {
		return nil
	}
	rule.Retry = out
	return nil
}

// inlineSession converts a rule's sessionPersistence (GEP-1619, the
// deprecated route-inline attachment point).
func (r *resolver) inlineSession(rt *route, i int, name string, rule *weftv1.Rule, sp *gwv1.SessionPersistence, backends []gwv1.BackendObjectReference) error {
	if sp == nil {
		return nil
	}
	owner := fmt.Sprintf("%s/%s/rule/%d", rt.kind, rt.id(), i)
	if name != "" {
		owner = fmt.Sprintf("%s/%s/rule/%s", rt.kind, rt.id(), name)
	}
	s, err := r.convertSession(sp, owner)
	if err != nil {
		return fmt.Errorf("sessionPersistence: %w", err)
	}
	for _, b := range backends {
		if (b.Group != nil && *b.Group != "") || (b.Kind != nil && *b.Kind != "Service") {
			continue
		}
		ns := rt.ns
		if b.Namespace != nil && *b.Namespace != "" {
			ns = string(*b.Namespace)
		}
		if err := affinityConflict(r.ix.services[objKey{ns, string(b.Name)}]); err != nil {
			return errors.New("sessionPersistence: " + err.Error())
		}
	}
	rule.Session = s
	return nil
}
