package gateway

import (
	"cmp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/resolve"
)

// routeObj is one route with at least one parentRef to a Gateway of
// Weft's, whatever its kind.
type routeObj struct {
	kind       string
	ns, name   string
	generation int64
	created    metav1.Time
	parentRefs []gwv1.ParentReference
	// hostnames are spec.hostnames (none for TCPRoute).
	hostnames []gwv1.Hostname
	// backends are the backend objects its rules (and mirrors) refer to.
	backends []gwv1.BackendObjectReference
	// compiled are the conditions the rule compiler gives the route
	// whatever its parent: Accepted (False when no rule is left),
	// ResolvedRefs, PartiallyInvalid.
	compiled []metav1.Condition
	// parents has one entry per parentRef to one of Weft's Gateways.
	parents []*parentState
	// Exactly one of these is set: the object, as the rule compiler takes
	// it (a TLSRoute as the TCPRoute with its backends). Any other is the
	// informer cache's own object: read, never modified.
	http *gwv1.HTTPRoute
	grpc *gwv1.GRPCRoute
	tcp  *gwv1.TCPRoute
}

func (rt *routeObj) id() string { return rt.ns + "/" + rt.name }

// compareRoutes orders routes the way the spec breaks ties: the oldest
// first, then by "{namespace}/{name}" (then kind, for a stable order).
func compareRoutes(a, b *routeObj) int {
	if c := a.created.Compare(b.created.Time); c != 0 {
		return c
	}
	return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.name, b.name), strings.Compare(a.kind, b.kind))
}

// compiledCondition returns the compiler's condition of type typ.
func (rt *routeObj) compiledCondition(typ gwv1.RouteConditionType) *metav1.Condition {
	for i := range rt.compiled {
		if rt.compiled[i].Type == string(typ) {
			return &rt.compiled[i]
		}
	}
	return nil
}

// hasRules reports whether any rule of the route can be programmed.
func (rt *routeObj) hasRules() bool {
	c := rt.compiledCondition(gwv1.RouteConditionAccepted)
	return c == nil || c.Status == metav1.ConditionTrue
}

// newRoutes collects the routes of every kind; parentRefs are resolved
// later. keep says whether a route has a parentRef to a Gateway of Weft's.
func newRoutes(in *Input, keep func(ns string, refs []gwv1.ParentReference) bool) []*routeObj {
	var out []*routeObj
	add := func(rt *routeObj) {
		if keep(rt.ns, rt.parentRefs) {
			out = append(out, rt)
		}
	}
	for _, r := range in.HTTPRoutes {
		rt := &routeObj{kind: KindHTTPRoute, ns: r.Namespace, name: r.Name, generation: r.Generation, created: r.CreationTimestamp, parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, http: r}
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				rt.backends = append(rt.backends, b.BackendObjectReference)
				rt.backends = append(rt.backends, httpMirrors(b.Filters)...)
			}
			rt.backends = append(rt.backends, httpMirrors(rule.Filters)...)
		}
		add(rt)
	}
	for _, r := range in.GRPCRoutes {
		rt := &routeObj{kind: KindGRPCRoute, ns: r.Namespace, name: r.Name, generation: r.Generation, created: r.CreationTimestamp, parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, grpc: r}
		for _, rule := range r.Spec.Rules {
			for _, b := range rule.BackendRefs {
				rt.backends = append(rt.backends, b.BackendObjectReference)
			}
		}
		add(rt)
	}
	for _, r := range in.TCPRoutes {
		add(&routeObj{kind: KindTCPRoute, ns: r.Namespace, name: r.Name, generation: r.Generation, created: r.CreationTimestamp, parentRefs: r.Spec.ParentRefs, backends: tcpBackends(r.Spec.Rules), tcp: r})
	}
	for _, r := range in.TLSRoutes {
		tcp := tlsAsTCP(r)
		add(&routeObj{kind: KindTLSRoute, ns: r.Namespace, name: r.Name, generation: r.Generation, created: r.CreationTimestamp, parentRefs: r.Spec.ParentRefs, hostnames: r.Spec.Hostnames, backends: tcpBackends(tcp.Spec.Rules), tcp: tcp})
	}
	return out
}

func httpMirrors(fs []gwv1.HTTPRouteFilter) []gwv1.BackendObjectReference {
	var out []gwv1.BackendObjectReference
	for _, f := range fs {
		if f.RequestMirror != nil {
			out = append(out, f.RequestMirror.BackendRef)
		}
	}
	return out
}

func tcpBackends(rules []gwv1.TCPRouteRule) []gwv1.BackendObjectReference {
	var out []gwv1.BackendObjectReference
	for _, rule := range rules {
		for _, b := range rule.BackendRefs {
			out = append(out, b.BackendObjectReference)
		}
	}
	return out
}

// tlsAsTCP is a TLSRoute as the rule compiler takes it: once the SNI has
// chosen the route, its one rule forwards whole connections to weighted
// backends, which is what a TCPRoute rule does.
func tlsAsTCP(r *gwv1.TLSRoute) *gwv1.TCPRoute {
	out := &gwv1.TCPRoute{ObjectMeta: r.ObjectMeta}
	out.Spec.ParentRefs = r.Spec.ParentRefs
	for _, rule := range r.Spec.Rules {
		out.Spec.Rules = append(out.Spec.Rules, gwv1.TCPRouteRule(rule))
	}
	return out
}

// compile runs the rule compiler on routes (of any kinds but TLSRoute and
// TCPRoute together, whose compiled names would collide). It returns the
// table of the most specific kind, the clusters, and the conditions per
// route.
func (r *resolution) compile(routes []*routeObj) (*weftv1.RouteTable, []*weftv1.Cluster, map[*routeObj][]metav1.Condition) {
	in := r.backendInput
	in.HTTPRoutes, in.GRPCRoutes, in.TCPRoutes = nil, nil, nil
	tls := false
	for _, rt := range routes {
		switch {
		case rt.http != nil:
			in.HTTPRoutes = append(in.HTTPRoutes, rt.http)
		case rt.grpc != nil:
			in.GRPCRoutes = append(in.GRPCRoutes, rt.grpc)
		default:
			in.TCPRoutes = append(in.TCPRoutes, rt.tcp)
			tls = tls || rt.kind == KindTLSRoute
		}
	}
	permitted := func(kind, ns string, to gwv1.BackendObjectReference) bool {
		if tls && kind == KindTCPRoute {
			kind = KindTLSRoute
		}
		return r.ix.permitted(backendRef(kind, ns, to))
	}
	table, clusters, statuses := resolve.CompileTable(in, permitted)
	byName := map[string]*routeObj{}
	for _, rt := range routes {
		kind := rt.kind
		if kind == KindTLSRoute {
			kind = KindTCPRoute
		}
		byName[kind+"/"+rt.id()] = rt
	}
	conds := map[*routeObj][]metav1.Condition{}
	for _, st := range statuses {
		rt := byName[st.Kind+"/"+st.Namespace+"/"+st.Name]
		if rt == nil {
			continue
		}
		conds[rt] = st.Parents[0].Conditions
		if rt.kind == KindTLSRoute {
			// The compiler saw the TCPRoute form; its messages (a
			// ReferenceGrant to create, say) must name the real kind.
			for i := range conds[rt] {
				conds[rt][i].Message = strings.ReplaceAll(conds[rt][i].Message, KindTCPRoute, KindTLSRoute)
			}
		}
	}
	return table, clusters, conds
}

// backendRef is a route's reference to a backend, for ReferenceGrants.
func backendRef(kind, ns string, to gwv1.BackendObjectReference) ref {
	group, k, toNS := "", "Service", ns
	if to.Group != nil {
		group = string(*to.Group)
	}
	if to.Kind != nil {
		k = string(*to.Kind)
	}
	if to.Namespace != nil && *to.Namespace != "" {
		toNS = string(*to.Namespace)
	}
	return ref{fromGroup: gwv1.GroupName, fromKind: kind, fromNS: ns, toGroup: group, toKind: k, toNS: toNS, toName: string(to.Name)}
}
