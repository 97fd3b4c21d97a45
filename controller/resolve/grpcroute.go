package resolve

import (
	"fmt"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func (r *resolver) compileGRPCRoute(gr *gwv1.GRPCRoute) *route {
	rules := gr.Spec.Rules
	rt := &route{
		kind: kindGRPC, ns: gr.Namespace, name: gr.Name, generation: gr.Generation,
		created: gr.CreationTimestamp, parentRefs: gr.Spec.ParentRefs, totalRules: len(rules),
	}
	if len(gr.Spec.Hostnames) > 0 {
		rt.notes = append(rt.notes, hostnamesNote)
	}
	r.compileRoute(rt, len(rules), func(i int) ruleSource {
		rule := &rules[i]
		return ruleSource{
			name:    rule.Name,
			matches: len(rule.Matches),
			match: func(j int) (matchEntry, error) {
				m := &gwv1.GRPCRouteMatch{}
				if j >= 0 {
					m = &rule.Matches[j]
				}
				gm, err := grpcMatch(m)
				return matchEntry{grpc: gm}, err
			},
			//lint:ignore SA1019 inline session persistence (GEP-1619) is part of v1.7.0 and Weft implements it beside XBackend
			session: rule.SessionPersistence,
			refs:    backendRefs(rule.BackendRefs, func(r *gwv1.GRPCBackendRef) gwv1.BackendRef { return r.BackendRef }),
			filters: func(c filterContext, backend int) ([]*weftv1.Filter, error) {
				if backend < 0 {
					return r.convertGRPCFilters(c, rule.Filters)
				}
				return r.convertGRPCFilters(c, rule.BackendRefs[backend].Filters)
			},
		}
	})
	return rt
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
