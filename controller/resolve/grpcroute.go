package resolve

import (
	"fmt"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func (r *resolver) compileGRPCRoute(gr *gwv1.GRPCRoute) *route {
	rt := &route{
		kind: kindGRPC, ns: gr.Namespace, name: gr.Name, generation: gr.Generation,
		created: gr.CreationTimestamp, parentRefs: gr.Spec.ParentRefs, totalRules: len(gr.Spec.Rules),
	}
	if len(gr.Spec.Hostnames) > 0 {
		rt.notes = append(rt.notes, hostnamesNote)
	}
	names := make([]*gwv1.SectionName, len(gr.Spec.Rules))
	for i := range gr.Spec.Rules {
		names[i] = gr.Spec.Rules[i].Name
	}
	unique := rt.ruleNames(names)
	for i := range gr.Spec.Rules {
		rule := &gr.Spec.Rules[i]
		cr, err := r.compileGRPCRule(rt, i, unique[i], rule)
		if err != nil {
			rt.drop(i, rule.Name, err.Error())
			continue
		}
		rt.rules = append(rt.rules, cr)
	}
	return rt
}

func (r *resolver) compileGRPCRule(rt *route, i int, name string, rule *gwv1.GRPCRouteRule) (*compiledRule, error) {
	cr := &compiledRule{rule: &weftv1.Rule{
		Route: rt.id(), RouteKind: weftv1.RouteKind_ROUTE_KIND_GRPC, Name: name, Index: uint32(i),
	}}
	matches := rule.Matches
	if len(matches) == 0 {
		matches = []gwv1.GRPCRouteMatch{{}}
	}
	for j := range matches {
		m, err := grpcMatch(&matches[j])
		if err != nil {
			return nil, fmt.Errorf("match %d: %w", j, err)
		}
		cr.matches = append(cr.matches, matchEntry{grpc: m, index: j})
	}
	objs := make([]gwv1.BackendObjectReference, len(rule.BackendRefs))
	for j := range rule.BackendRefs {
		objs[j] = rule.BackendRefs[j].BackendObjectReference
	}
	if err := r.inlineSession(rt, i, name, cr.rule, rule.SessionPersistence, objs); err != nil {
		return nil, err
	}
	filters, err := r.convertGRPCFilters(filterContext{rt: rt, rule: i}, rule.Filters)
	if err != nil {
		return nil, err
	}
	cr.rule.Filters = filters
	bfs := make([][]*weftv1.Filter, len(rule.BackendRefs))
	for j := range rule.BackendRefs {
		b := &rule.BackendRefs[j]
		if bfs[j], err = r.convertGRPCFilters(filterContext{rt: rt, rule: i, onBackend: string(b.Name)}, b.Filters); err != nil {
			return nil, err
		}
	}
	for j := range rule.BackendRefs {
		cr.rule.Backends = append(cr.rule.Backends, r.backendRef(rt, i, rule.BackendRefs[j].BackendRef, bfs[j]))
	}
	return cr, nil
}

// grpcMatch converts and validates one GRPCRouteMatch. With type Exact the
// service must be a fully qualified name without a slash and the method a
// name without a slash; with RegularExpression both are RE2 patterns.
func grpcMatch(m *gwv1.GRPCRouteMatch) (*weftv1.GRPCMatch, error) {
	out := &weftv1.GRPCMatch{Type: weftv1.MatchType_MATCH_TYPE_EXACT}
	if mm := m.Method; mm != nil {
		typ := gwv1.GRPCMethodMatchExact
		if mm.Type != nil {
			typ = *mm.Type
		}
		if mm.Service != nil {
			out.Service = *mm.Service
		}
		if mm.Method != nil {
			out.Method = *mm.Method
		}
		switch typ {
		case gwv1.GRPCMethodMatchExact:
			if strings.Contains(out.Service, "/") || strings.Contains(out.Method, "/") {
				return nil, fmt.Errorf("exact service %q and method %q must not contain '/'", out.Service, out.Method)
			}
		case gwv1.GRPCMethodMatchRegularExpression:
			out.Type = weftv1.MatchType_MATCH_TYPE_REGEX
			if out.Service != "" {
				if err := checkRegex("service", out.Service); err != nil {
					return nil, err
				}
			}
			if out.Method != "" {
				if err := checkRegex("method", out.Method); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("method match type %q is unknown; use Exact or RegularExpression", typ)
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
		typ := gwv1.GRPCHeaderMatchExact
		if h.Type != nil {
			typ = *h.Type
		}
		sm, err := stringMatch("header "+name, string(typ), name, h.Value)
		if err != nil {
			return nil, err
		}
		out.Headers = append(out.Headers, sm)
	}
	return out, nil
}
