package gateway

import (
	"cmp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"

	"github.com/weft-mesh/weft/controller/resolve"
)

// resolution carries the state of one Resolve.
type resolution struct {
	ix       *index
	classes  map[string]*classState
	gateways map[objKey]*gatewayState
	// order is the Gateways sorted by namespace/name.
	order    []*gatewayState
	policies *policies
	routes   []*routeObj
	// backendInput holds what the rule compiler reads besides routes.
	backendInput resolve.Input
}

// Resolve decides the status of Weft's GatewayClasses, their Gateways,
// the routes attached to those and the BackendTLSPolicies of their
// backends, and the IR of every accepted Gateway. It is pure and
// deterministic: the same Input always gives an equal Output.
func Resolve(in Input) Output { return resolveIn(in, true) }

// resolveIn is Resolve; with shortcut it returns as soon as it finds no
// Gateway of Weft's classes. Then no route or policy has a parent of
// Weft's, so there is nothing more to decide, and the controller resolves
// every round: at issue #17's scale, a cluster without Gateways saved
// scanning 20,000 routes and 100,000 pods for nothing.
func resolveIn(in Input, shortcut bool) Output {
	r := &resolution{ix: newIndex(&in), gateways: map[objKey]*gatewayState{}}
	var out Output
	r.classes, out.GatewayClasses = gatewayClasses(&in)
	for i := range in.Gateways {
		gw := &in.Gateways[i]
		if cs := r.classes[string(gw.Spec.GatewayClassName)]; cs != nil {
			gs := newGateway(r.ix, gw, cs)
			r.gateways[gs.key()] = gs
			r.order = append(r.order, gs)
		}
	}
	if shortcut && len(r.order) == 0 {
		return out
	}
	slices.SortFunc(r.order, func(a, b *gatewayState) int { return compareKeys(a.key(), b.key()) })
	r.policies = newPolicies(r.ix)
	r.routes = newRoutes(&in, r.hasParent)
	r.backendInput = r.newBackendInput()
	r.compileRoutes()
	r.attachRoutes()
	for _, gs := range r.order {
		out.Gateways = append(out.Gateways, gs.status())
		if gs.accepted() {
			out.IR = append(out.IR, r.buildIR(gs))
		}
	}
	out.Routes = r.routeStatuses()
	for _, p := range r.policies.all {
		if len(p.ancestors) > 0 {
			out.Policies = append(out.Policies, p.status())
		}
	}
	slices.SortFunc(out.Policies, func(a, b resolve.ObjectStatus) int {
		return compareKeys(objKey{a.Namespace, a.Name}, objKey{b.Namespace, b.Name})
	})
	return out
}

func compareKeys(a, b objKey) int {
	return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.name, b.name))
}

// hasParent reports whether any parentRef names one of Weft's Gateways.
func (r *resolution) hasParent(ns string, refs []gwv1.ParentReference) bool {
	return slices.ContainsFunc(refs, func(ref gwv1.ParentReference) bool {
		k, ok := gatewayRefKey(ns, ref)
		return ok && r.gateways[k] != nil
	})
}

// newBackendInput is what the rule compiler reads besides routes: the
// Services the routes refer to, their EndpointSlices, and the Pods,
// XBackends and XBackendTrafficPolicies of those namespaces (the compiler
// runs once per virtual host tier, so it gets only what it may need, not
// the cluster). A Service port a BackendTLSPolicy covers speaks TLS that
// the gateway originates, so its TLS appProtocol (https, tls,
// kubernetes.io/wss) is taken as the protocol inside that TLS, and routes
// may send to it.
func (r *resolution) newBackendInput() resolve.Input {
	in := r.ix.in
	svcs, nss := map[objKey]bool{}, map[string]bool{}
	for _, rt := range r.routes {
		for _, b := range rt.backends {
			br := backendRef(rt.kind, rt.ns, b)
			svcs[objKey{br.toNS, br.toName}] = true
			nss[br.toNS] = true
		}
	}
	out := resolve.Input{Options: in.Options.Mesh, Namespaces: in.Namespaces}
	for _, svc := range in.Services {
		if svcs[objKey{svc.Namespace, svc.Name}] {
			out.Services = append(out.Services, r.tlsInner(svc))
		}
	}
	for _, es := range in.EndpointSlices {
		if svcs[objKey{es.Namespace, es.Labels[discoveryv1.LabelServiceName]}] {
			out.EndpointSlices = append(out.EndpointSlices, es)
		}
	}
	out.Pods = inNamespaces(in.Pods, nss, func(p **resolve.Pod) string { return (*p).Namespace })
	out.Backends = inNamespaces(in.Backends, nss, func(b *gwxv1a1.XBackend) string { return b.Namespace })
	out.BackendTrafficPolicies = inNamespaces(in.BackendTrafficPolicies, nss, func(p *gwxv1a1.XBackendTrafficPolicy) string { return p.Namespace })
	return out
}

func inNamespaces[T any](objs []T, nss map[string]bool, ns func(*T) string) []T {
	var out []T
	for i := range objs {
		if nss[ns(&objs[i])] {
			out = append(out, objs[i])
		}
	}
	return out
}

// tlsInner returns svc with the TLS appProtocol of the ports a
// BackendTLSPolicy covers replaced by the protocol inside the TLS (none:
// as the route speaks; kubernetes.io/ws for kubernetes.io/wss). svc
// itself is not modified.
func (r *resolution) tlsInner(svc corev1.Service) corev1.Service {
	key := objKey{svc.Namespace, svc.Name}
	copied := false
	for i, p := range svc.Spec.Ports {
		if p.AppProtocol == nil || r.policies.forPort(key, p) == nil {
			continue
		}
		var inner *string
		switch strings.ToLower(*p.AppProtocol) {
		case "https", "tls":
		case "kubernetes.io/wss":
			ws := "kubernetes.io/ws"
			inner = &ws
		default:
			continue
		}
		if !copied {
			svc.Spec.Ports, copied = slices.Clone(svc.Spec.Ports), true
		}
		svc.Spec.Ports[i].AppProtocol = inner
	}
	return svc
}

// compileRoutes runs the rule compiler once over every route for the
// conditions that do not depend on the parent.
func (r *resolution) compileRoutes() {
	var main, tls []*routeObj
	for _, rt := range r.routes {
		if rt.kind == KindTLSRoute {
			tls = append(tls, rt)
		} else {
			main = append(main, rt)
		}
	}
	for _, set := range [][]*routeObj{main, tls} {
		if len(set) == 0 {
			continue
		}
		_, _, conds := r.compile(set)
		for _, rt := range set {
			rt.compiled = conds[rt]
		}
	}
}

// attachRoutes resolves every parentRef to Weft's Gateways, settles
// HTTPRoute/GRPCRoute conflicts, counts attachedRoutes and finds the
// Gateways that are ancestors of BackendTLSPolicies.
func (r *resolution) attachRoutes() {
	slices.SortStableFunc(r.routes, compareRoutes)
	for _, rt := range r.routes {
		for _, ref := range rt.parentRefs {
			if k, ok := gatewayRefKey(rt.ns, ref); ok && r.gateways[k] != nil {
				rt.parents = append(rt.parents, attachParent(rt, ref, r.gateways[k]))
			}
		}
	}
	for _, gs := range r.order {
		for _, ls := range gs.listeners {
			settleKindConflicts(ls)
		}
	}
	for _, rt := range r.routes {
		seen := map[*listenerState]bool{}
		for _, ps := range rt.parents {
			finishParent(ps)
			if !ps.accepted(rt) {
				continue
			}
			for _, la := range ps.on {
				if !seen[la.ls] {
					seen[la.ls] = true
					la.ls.attached++
				}
			}
			r.addAncestors(rt, ps)
		}
	}
}

// addAncestors makes a Gateway an ancestor of the BackendTLSPolicies of
// the Services a route accepted on it sends to. BackendTLSPolicy applies
// to HTTPRoute, GRPCRoute and terminated TLSRoute backends.
func (r *resolution) addAncestors(rt *routeObj, ps *parentState) {
	switch rt.kind {
	case KindTCPRoute:
		return
	case KindTLSRoute:
		if !slices.ContainsFunc(ps.on, func(la *listenerAttach) bool { return la.ls.tlsMode == gwv1.TLSModeTerminate }) {
			return
		}
	}
	for _, b := range rt.backends {
		br := backendRef(rt.kind, rt.ns, b)
		if br.toGroup != "" || br.toKind != "Service" {
			continue
		}
		for _, p := range r.policies.byService[objKey{br.toNS, br.toName}] {
			p.ancestors[ps.gs.key()] = ps.gs
		}
	}
}

// routeStatuses lists the parent statuses of every route, sorted.
func (r *resolution) routeStatuses() []resolve.ObjectStatus {
	var out []resolve.ObjectStatus
	for _, rt := range r.routes {
		st := resolve.ObjectStatus{Kind: rt.kind, Namespace: rt.ns, Name: rt.name, Generation: rt.generation}
		for _, ps := range rt.parents {
			st.Parents = append(st.Parents, rt.parentStatus(ps))
		}
		out = append(out, st)
	}
	slices.SortFunc(out, resolve.CompareStatuses)
	return out
}
