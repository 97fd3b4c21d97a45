package resolve

import (
	"slices"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// RefPermitted decides a backend reference from a route of kind routeKind
// ("HTTPRoute", ...) in routeNamespace to an object in another namespace
// (Gateway routes need a ReferenceGrant; mesh routes do not, GEP-1294).
type RefPermitted func(routeKind, routeNamespace string, to gwv1.BackendObjectReference) bool

// CompileTable is the seam controller/gateway uses to compile routes whose
// parent is not a Service (a Gateway listener hostname) with the same rule
// compiler as mesh routes. It compiles the HTTPRoutes, GRPCRoutes and
// TCPRoutes of in, ignoring their parentRefs and hostnames, and merges the
// routes of the most specific kind (GRPC > HTTP > TCP) into one table the
// way a Service port's producer table is built (TCP: the oldest route
// only). It returns that table (nil when no rule is left), the clusters the
// compiled routes refer to, and per route one ParentStatus with a zero Ref
// holding Accepted (True with the route's notes as message, or False,
// UnsupportedValue when no rule is left), ResolvedRefs, and
// PartiallyInvalid when rules were dropped. permitted, unless nil, is asked
// about every backend reference to another namespace than its route's; a
// refused one is RefNotPermitted.
func CompileTable(in Input, permitted RefPermitted) (*weftv1.RouteTable, []*weftv1.Cluster, []ObjectStatus) {
	r, routes := compileAll(&in, permitted)
	var win routeKind
	for _, rt := range routes {
		if len(rt.rules) > 0 {
			win = max(win, rt.kind)
		}
	}
	var table *weftv1.RouteTable
	if winners := slices.DeleteFunc(slices.Clone(routes), func(rt *route) bool { return rt.kind != win || len(rt.rules) == 0 }); len(winners) > 0 {
		table = buildTable(win, winners)
	}
	var out []ObjectStatus
	for _, rt := range routes {
		accepted := condTrue(condAccepted, reasonAccepted, joinMessages(slices.DeleteFunc(slices.Clone(rt.notes), func(n string) bool { return n == hostnamesNote })))
		if len(rt.rules) == 0 {
			accepted = condFalse(condAccepted, reasonUnsupportedValue, "No rule of this route can be programmed: "+joinMessages(rt.dropped))
		}
		conds := routeConditions(rt, &parentResult{accepted: accepted})
		out = append(out, ObjectStatus{Kind: rt.kind.String(), Namespace: rt.ns, Name: rt.name, Generation: rt.generation, Parents: []ParentStatus{{Conditions: conds}}})
	}
	return table, r.buildClusters(nil), out
}
