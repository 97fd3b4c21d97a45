package resolve

import (
	"fmt"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// compileTCPRoute compiles a TCPRoute: one rule (the API allows exactly one)
// whose weighted backends receive whole connections. An invalid backend's
// share of connections is refused.
func (r *resolver) compileTCPRoute(tr *gwv1.TCPRoute) *route {
	rt := &route{
		kind: kindTCP, ns: tr.Namespace, name: tr.Name, generation: tr.Generation,
		created: tr.CreationTimestamp, parentRefs: tr.Spec.ParentRefs, totalRules: len(tr.Spec.Rules),
	}
	for i := range tr.Spec.Rules {
		rule := &tr.Spec.Rules[i]
		if i > 0 {
			rt.drop(i, rule.Name, "a TCPRoute has exactly one rule; only rule 0 is programmed")
			continue
		}
		name := ""
		if rule.Name != nil {
			name = string(*rule.Name)
		}
		pr := &weftv1.Rule{Route: rt.id(), RouteKind: weftv1.RouteKind_ROUTE_KIND_TCP, Name: name, Index: uint32(i)}
		for j := range rule.BackendRefs {
			pr.Backends = append(pr.Backends, r.backendRef(rt, i, rule.BackendRefs[j], nil))
		}
		if len(pr.Backends) == 0 {
			rt.notes = append(rt.notes, fmt.Sprintf("rule %d has no backendRefs: connections are refused", i))
		}
		rt.rules = append(rt.rules, &compiledRule{rule: pr})
	}
	return rt
}
