package resolve

import (
	"fmt"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// ruleSource is one HTTPRoute or GRPCRoute rule, reduced to what differs
// between the two kinds; compileRule does the rest the same way for both.
type ruleSource struct {
	// name is the rule's sectionName (nil or empty: none).
	name *gwv1.SectionName
	// matches is the number of matches (0: one match-everything match).
	matches int
	// match converts match j (-1: the match-everything one).
	match func(j int) (matchEntry, error)
	// settings sets the kind's own rule fields (HTTP timeouts, retry);
	// nil for none.
	settings func(*weftv1.Rule) error
	session  *gwv1.SessionPersistence
	refs     []gwv1.BackendRef
	// filters converts the rule's filters (backend -1) or those of
	// backendRef j.
	filters func(c filterContext, backend int) ([]*weftv1.Filter, error)
}

// compileRoute compiles every rule of rt with rule(i), keeping the valid
// ones and recording why each other one is dropped.
func (r *resolver) compileRoute(rt *route, rules int, rule func(i int) ruleSource) {
	srcs := make([]ruleSource, rules)
	names := make([]*gwv1.SectionName, rules)
	for i := range srcs {
		srcs[i] = rule(i)
		names[i] = srcs[i].name
	}
	unique := rt.ruleNames(names)
	limit := weftv1.DefaultLimits.MaxRouteRegexProgramSize
	total := 0
	for i := range srcs {
		cr, err := r.compileRule(rt, i, unique[i], &srcs[i])
		if err != nil {
			rt.drop(i, names[i], err.Error())
			continue
		}
		// The route's regular expressions are limited together (each
		// occurrence counts: each is matched): the rules that fit, in
		// order, are kept.
		if n := cr.regexProgramSize(); total+n > limit {
			rt.drop(i, names[i], fmt.Sprintf("its regular expressions (program size %d) would bring the route's total program size to %d, over the limit %d per route", n, total+n, limit))
			continue
		} else {
			total += n
		}
		rt.rules = append(rt.rules, cr)
	}
}

// regexProgramSize sums the program sizes of the rule's regular
// expressions, each occurrence counted.
func (cr *compiledRule) regexProgramSize() int {
	n := 0
	for _, m := range cr.matches {
		n += (&weftv1.Match{Http: m.http, Grpc: m.grpc}).RegexProgramSize(weftv1.DefaultLimits)
	}
	return n
}

// regexPatterns returns the rule's distinct regular expressions with
// their program sizes; nil when it has none.
func (cr *compiledRule) regexPatterns() map[string]int {
	var out map[string]int
	for _, m := range cr.matches {
		for p := range (&weftv1.Match{Http: m.http, Grpc: m.grpc}).RegexPatterns() {
			if n, err := weftv1.RegexProgramSize(p); err == nil {
				if out == nil {
					out = map[string]int{}
				}
				out[p] = n
			}
		}
	}
	return out
}

// compileRule converts one rule: matches, kind settings, session
// persistence, filters (rule and backendRef level), the ReplacePrefixMatch
// constraint, then backends. A rule is only kept if the proxy's validator
// (weftv1) accepts it too.
func (r *resolver) compileRule(rt *route, i int, name string, src *ruleSource) (*compiledRule, error) {
	kind := rt.kind.proto()
	cr := &compiledRule{rule: &weftv1.Rule{Route: rt.id(), RouteKind: kind, Name: name, Index: uint32(i)}}
	for j := range max(src.matches, 1) {
		if src.matches == 0 {
			j = -1
		}
		m, err := src.match(j)
		if err != nil {
			return nil, fmt.Errorf("match %d: %w", max(j, 0), err)
		}
		m.index = max(j, 0)
		cr.matches = append(cr.matches, m)
	}
	if src.settings != nil {
		if err := src.settings(cr.rule); err != nil {
			return nil, err
		}
	}
	objs := make([]gwv1.BackendObjectReference, len(src.refs))
	for j := range src.refs {
		objs[j] = src.refs[j].BackendObjectReference
	}
	if err := r.inlineSession(rt, i, name, cr.rule, src.session, objs); err != nil {
		return nil, err
	}
	filters, err := src.filters(filterContext{rt: rt, rule: i}, -1)
	if err != nil {
		return nil, err
	}
	cr.rule.Filters = filters
	bfs := make([][]*weftv1.Filter, len(src.refs))
	for j := range src.refs {
		if bfs[j], err = src.filters(filterContext{rt: rt, rule: i, onBackend: string(src.refs[j].Name)}, j); err != nil {
			return nil, err
		}
	}
	// Check the prefix modifiers before resolving backends, so that a
	// dropped rule reports no backend problems.
	probe := &weftv1.Rule{Filters: filters}
	for _, bf := range bfs {
		probe.Backends = append(probe.Backends, &weftv1.BackendRef{Filters: bf})
	}
	if err := checkPrefixModifiers(probe, cr.matches); err != nil {
		return nil, err
	}
	for j := range src.refs {
		cr.rule.Backends = append(cr.rule.Backends, r.backendRef(rt, i, src.refs[j], bfs[j]))
	}
	if err := cr.validate(kind); err != nil {
		return nil, fmt.Errorf("the node proxy would refuse this rule: %w", err)
	}
	// once, here: the node budget sums them every round, and a compiled
	// rule serves many rounds (compiledRoutes)
	cr.patterns = cr.regexPatterns()
	return cr, nil
}

// validate checks the converted rule and matches with the validator the
// agent applies, so that a rule the agent would NACK is dropped here with a
// status instead (the per-value checks above give the better messages).
func (cr *compiledRule) validate(kind weftv1.RouteKind) error {
	if err := cr.rule.Validate(kind); err != nil {
		return err
	}
	for _, m := range cr.matches {
		if err := (&weftv1.Match{Http: m.http, Grpc: m.grpc}).Validate(kind, 1); err != nil {
			return fmt.Errorf("match %d: %w", m.index, err)
		}
	}
	return nil
}

// backendRefs takes the plain BackendRefs out of a rule's route-kind ones
// (HTTPBackendRef, GRPCBackendRef), whose filters are converted apart.
func backendRefs[T any](refs []T, plain func(*T) gwv1.BackendRef) []gwv1.BackendRef {
	out := make([]gwv1.BackendRef, len(refs))
	for i := range refs {
		out[i] = plain(&refs[i])
	}
	return out
}
