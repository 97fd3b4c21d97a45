package gateway

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/resolve"
)

// parentState is one parentRef of a route to one of Weft's Gateways.
type parentState struct {
	ref gwv1.ParentReference
	gs  *gatewayState
	// on lists the listeners the route attached to through this
	// parentRef, with the hostnames it serves on each.
	on []*listenerAttach
	// rejected is why the parentRef attached to no listener (nil: it did).
	rejected *reason
	// lost explains listeners lost to a route of the other kind (HTTPRoute
	// against GRPCRoute on one hostname).
	lost []string
}

// listenerAttach is a route attached to one listener.
type listenerAttach struct {
	ls    *listenerState
	rt    *routeObj
	ps    *parentState
	hosts []hostMatch
	// dropped is set when the route lost this listener to an older route
	// of the other kind.
	dropped bool
}

// accepted reports whether the route is accepted on this parentRef.
func (ps *parentState) accepted(rt *routeObj) bool {
	return ps.rejected == nil && rt.hasRules()
}

// gatewayRefKey returns the Gateway a parentRef names, and whether it
// names a Gateway at all (group gateway.networking.k8s.io, kind Gateway,
// the defaults).
func gatewayRefKey(routeNS string, ref gwv1.ParentReference) (objKey, bool) {
	if ref.Group != nil && *ref.Group != gwv1.GroupName || ref.Kind != nil && *ref.Kind != "Gateway" {
		return objKey{}, false
	}
	ns := routeNS
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	return objKey{ns, string(ref.Name)}, true
}

// attachParent attaches a route to the listeners a parentRef selects:
// sectionName and port choose listeners (none: NoMatchingParent), their
// allowedRoutes must take the route's kind and namespace (none:
// NotAllowedByListeners), and for hostname-matching protocols the
// hostnames must intersect (none: NoMatchingListenerHostname).
func attachParent(rt *routeObj, ref gwv1.ParentReference, gs *gatewayState) *parentState {
	ps := &parentState{ref: ref, gs: gs}
	var cands []*listenerState
	for _, ls := range gs.listeners {
		if (ref.SectionName == nil || *ref.SectionName == "" || *ref.SectionName == ls.spec.Name) && (ref.Port == nil || *ref.Port == ls.spec.Port) {
			cands = append(cands, ls)
		}
	}
	if len(cands) == 0 {
		ps.rejected = &reason{string(gwv1.RouteReasonNoMatchingParent), noMatchingParent(ref, gs)}
		return ps
	}
	var allowed, why []string
	for _, ls := range cands {
		if !ls.allowsKind(rt.kind) || !ls.allowsNamespace(gs.ix, gs.gw.Namespace, rt.ns) {
			why = append(why, ls.describeAllowed(gs.gw.Namespace))
			continue
		}
		allowed = append(allowed, fmt.Sprintf("%s (%q)", ls.name(), ls.hostname))
		hosts := []hostMatch{{}}
		if rt.kind != KindTCPRoute && ls.spec.Protocol != gwv1.TCPProtocolType {
			hosts = routeHosts(ls.hostname, rt.hostnames)
		}
		if len(hosts) == 0 {
			continue
		}
		la := &listenerAttach{ls: ls, rt: rt, ps: ps, hosts: hosts}
		ps.on = append(ps.on, la)
		ls.claims = append(ls.claims, la)
	}
	switch {
	case len(allowed) == 0:
		ps.rejected = &reason{string(gwv1.RouteReasonNotAllowedByListeners), sentences(append([]string{fmt.Sprintf("no listener of Gateway %s that this parentRef selects takes %ss from namespace %s; change the listeners' allowedRoutes or the parentRef", gs.key(), rt.kind, rt.ns)}, why...)...)}
	case len(ps.on) == 0:
		var hs []string
		for _, h := range rt.hostnames {
			hs = append(hs, string(h))
		}
		ps.rejected = &reason{string(gwv1.RouteReasonNoMatchingListenerHostname), fmt.Sprintf("none of the route's hostnames (%s) intersects the hostname of %s of Gateway %s; add a matching hostname to the route or the listener", strings.Join(hs, ", "), listeners(allowed), gs.key())}
	}
	return ps
}

func noMatchingParent(ref gwv1.ParentReference, gs *gatewayState) string {
	var want, have []string
	if ref.SectionName != nil && *ref.SectionName != "" {
		want = append(want, fmt.Sprintf("sectionName %q", *ref.SectionName))
	}
	if ref.Port != nil {
		want = append(want, fmt.Sprintf("port %d", *ref.Port))
	}
	for _, ls := range gs.listeners {
		have = append(have, fmt.Sprintf("%s (port %d)", ls.name(), ls.spec.Port))
	}
	return fmt.Sprintf("Gateway %s has no listener with %s; its listeners are %s: fix the parentRef's sectionName or port", gs.key(), strings.Join(want, " and "), orNone(have))
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// settleKindConflicts applies the GRPCRoute rule for an HTTPRoute and a
// GRPCRoute whose hostnames intersect on one listener: the older route (then
// the first by namespace/name) keeps the listener, the other loses it.
// claims are in route precedence order.
func settleKindConflicts(ls *listenerState) {
	for i, c := range ls.claims {
		if c.rt.kind != KindHTTPRoute && c.rt.kind != KindGRPCRoute || !c.rt.hasRules() || c.ps.rejected != nil {
			continue
		}
		for _, prev := range ls.claims[:i] {
			if prev.dropped || prev.rt.kind == c.rt.kind || prev.rt.kind != KindHTTPRoute && prev.rt.kind != KindGRPCRoute || !prev.rt.hasRules() || prev.ps.rejected != nil {
				continue
			}
			if host, ok := hostsOverlap(prev.hosts, c.hosts); ok {
				c.dropped = true
				c.ps.lost = append(c.ps.lost, fmt.Sprintf("on listener %s, %s %s is older (or first by namespace/name) and already serves host %q, and an HTTPRoute and a GRPCRoute cannot share a hostname of a listener; this route is not served there", ls.name(), prev.rt.kind, prev.rt.id(), orAny(host)))
				break
			}
		}
	}
}

// hostsOverlap returns a host pattern both lists serve.
func hostsOverlap(a, b []hostMatch) (string, bool) {
	for _, x := range a {
		for _, y := range b {
			if h, ok := intersect(x.host, y.host); ok {
				return h, true
			}
		}
	}
	return "", false
}

func orAny(h string) string {
	if h == "" {
		return "*"
	}
	return h
}

// finishParent settles a parentRef after conflicts: a parentRef that lost
// every listener it attached to is rejected.
func finishParent(ps *parentState) {
	ps.on = slices.DeleteFunc(ps.on, func(la *listenerAttach) bool { return la.dropped })
	if ps.rejected == nil && len(ps.on) == 0 {
		ps.rejected = &reason{reasonRouteConflicted, sentences(ps.lost...)}
	}
}

// parentStatus is the status of a route for one parentRef.
func (rt *routeObj) parentStatus(ps *parentState) resolve.ParentStatus {
	var conds []metav1.Condition
	switch {
	case ps.rejected != nil:
		conds = append(conds, cond(gwv1.RouteConditionAccepted, false, ps.rejected.reason, ps.rejected.msg, rt.generation))
	case !rt.hasRules():
		conds = append(conds, *rt.compiledCondition(gwv1.RouteConditionAccepted))
	default:
		conds = append(conds, cond(gwv1.RouteConditionAccepted, true, gwv1.RouteReasonAccepted, rt.acceptedMessage(ps), rt.generation))
	}
	if c := rt.compiledCondition(gwv1.RouteConditionResolvedRefs); c != nil {
		conds = append(conds, *c)
	}
	if c := rt.compiledCondition(gwv1.RouteConditionPartiallyInvalid); c != nil && conds[0].Status == metav1.ConditionTrue {
		conds = append(conds, *c)
	}
	return resolve.ParentStatus{Ref: ps.ref, Conditions: conds}
}

func (rt *routeObj) acceptedMessage(ps *parentState) string {
	var on, idle []string
	for _, la := range ps.on {
		var hs []string
		for _, h := range la.hosts {
			hs = append(hs, orAny(h.host))
		}
		s := la.ls.name()
		if rt.kind != KindTCPRoute && la.ls.spec.Protocol != gwv1.TCPProtocolType {
			s += " (" + strings.Join(hs, ", ") + ")"
		}
		on = append(on, s)
		if !la.ls.usable() {
			idle = append(idle, la.ls.name())
		}
	}
	msgs := []string{fmt.Sprintf("attached to Gateway %s, %s", ps.gs.key(), listeners(on))}
	if len(idle) > 0 {
		msgs = append(msgs, fmt.Sprintf("%s %s not programmed (see the Gateway's listener status), so no traffic reaches this route there until that is fixed", listeners(idle), isAre(idle)))
	}
	if !ps.gs.accepted() {
		msgs = append(msgs, fmt.Sprintf("Gateway %s is not accepted, so it serves nothing yet (see its Accepted condition)", ps.gs.key()))
	}
	msgs = append(msgs, ps.lost...)
	if c := rt.compiledCondition(gwv1.RouteConditionAccepted); c != nil {
		msgs = append(msgs, c.Message)
	}
	return sentences(msgs...)
}
