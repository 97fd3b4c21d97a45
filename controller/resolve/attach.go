package resolve

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// claim is one route parentRef selecting one Service port.
type claim struct {
	rt *route
	pr *parentResult
}

// portState is what attached to one Service port.
type portState struct {
	key portKey
	// win is the winning route kind, the same for every class; classes
	// are the classes ("" producer, else the consumer namespace) that
	// claimed the port, in order of first claim.
	win     routeKind
	classes []string
	// producer and consumers hold the winning-kind routes per class, in
	// route precedence order, each route once.
	producer  []*route
	consumers map[string][]*route
}

// portClaims are the claims on each Service port, in route precedence
// order.
type portClaims map[portKey][]claim

// attach resolves every parentRef of every route, settles route-kind
// conflicts per Service port and returns the routes programmed per port,
// and the claims they were settled from. routes must be in route
// precedence order; sizeHint is about how many ports they claim.
func (r *resolver) attach(routes []*route, sizeHint int) (map[portKey]*portState, portClaims) {
	claims := make(portClaims, sizeHint)
	for _, rt := range routes {
		for _, ref := range rt.parentRefs {
			svc, mistaken := isServiceRef(ref)
			if !svc && !mistaken {
				continue // a Gateway or another controller's parent: not ours
			}
			var pr *parentResult
			if mistaken {
				pr = &parentResult{ref: ref, accepted: condFalse(condAccepted, reasonNoMatchingParent,
					fmt.Sprintf("parentRef names kind Service in group %q; a Service parent needs group \"\" (the core API group): set parentRefs[].group: \"\"", groupOf(ref)))}
			} else {
				pr = r.resolveParent(rt, ref)
			}
			rt.parents = append(rt.parents, pr)
			if pr.accepted != nil || (rt.totalRules > 0 && len(rt.rules) == 0) {
				continue
			}
			for _, pk := range pr.ports {
				claims[pk] = append(claims[pk], claim{rt, pr})
			}
		}
	}
	out := make(map[portKey]*portState, len(claims))
	// Walk ports in order so that messages come out in a stable order.
	keys := make([]portKey, 0, len(claims))
	for pk := range claims {
		keys = append(keys, pk)
	}
	slices.SortFunc(keys, comparePortKeys)
	for _, pk := range keys {
		ps := &portState{key: pk}
		// GEP-1294: when routes of different kinds bind to one Service
		// port, only the most specific kind applies (across producer and
		// consumer routes alike); routes of one kind merge per class.
		var win routeKind
		for _, c := range claims[pk] {
			win = max(win, c.rt.kind)
		}
		ps.win = win
		for _, cc := range byClass(claims[pk]) {
			class, cs := cc.class, cc.claims
			ps.classes = append(ps.classes, class)
			// The oldest route of the winning kind: it names the winner in
			// messages and is the one route of a TCP port.
			first := winnerOf(cs, win)
			if first == nil {
				first = winnerOf(claims[pk], win)
			}
			who := "callers in every namespace"
			if class != "" {
				who = "callers in namespace " + class
			}
			for _, c := range cs {
				switch {
				case c.rt.kind < win:
					c.pr.lost = appendUnique(c.pr.lost, fmt.Sprintf("%s %s is also attached to Service port %s and %s takes precedence over %s (GRPC > HTTP > TLS > TCP, GEP-1294); this route is not programmed there",
						win, first.id(), pk, win, c.rt.kind))
					continue
				case c.rt.kind == kindTCP && first != c.rt:
					c.pr.lost = appendUnique(c.pr.lost, fmt.Sprintf("TCPRoute %s is older (or first by namespace/name) and already routes Service port %s for %s; a TCP port carries one route",
						first.id(), pk, who))
					continue
				}
				if !slices.Contains(c.pr.won, pk) {
					c.pr.won = append(c.pr.won, pk)
				}
				if class == "" {
					if !slices.Contains(ps.producer, c.rt) {
						ps.producer = append(ps.producer, c.rt)
					}
				} else if !slices.Contains(ps.consumers[class], c.rt) {
					if ps.consumers == nil {
						ps.consumers = map[string][]*route{}
					}
					ps.consumers[class] = append(ps.consumers[class], c.rt)
				}
			}
		}
		out[pk] = ps
	}
	for _, rt := range routes {
		for _, pr := range rt.parents {
			slices.SortFunc(pr.won, comparePortKeys)
		}
	}
	return out, claims
}

// claimed are the ports a route, as attached, claimed (won or lost).
func (rt *route) claimed() []portKey {
	if rt.totalRules > 0 && len(rt.rules) == 0 {
		return nil
	}
	var out []portKey
	for _, pr := range rt.parents {
		if pr.accepted == nil {
			out = append(out, pr.ports...)
		}
	}
	return out
}

// classClaims are the claims of one class ("" producer, else the consumer
// namespace) on a port.
type classClaims struct {
	class  string
	claims []claim
}

// byClass groups a port's claims by class, classes in order of first
// claim. Ports have one class or a few: a slice, not a map.
func byClass(cs []claim) []classClaims {
	if len(cs) > 0 && allOneClass(cs) {
		return []classClaims{{cs[0].pr.consumer, cs}}
	}
	var out []classClaims
	for _, c := range cs {
		i := slices.IndexFunc(out, func(cc classClaims) bool { return cc.class == c.pr.consumer })
		if i < 0 {
			out = append(out, classClaims{class: c.pr.consumer})
			i = len(out) - 1
		}
		out[i].claims = append(out[i].claims, c)
	}
	return out
}

func allOneClass(cs []claim) bool {
	for _, c := range cs[1:] {
		if c.pr.consumer != cs[0].pr.consumer {
			return false
		}
	}
	return true
}

func winnerOf(cs []claim, k routeKind) *route {
	for _, c := range cs {
		if c.rt.kind == k {
			return c.rt
		}
	}
	return nil
}

func appendUnique(s []string, v string) []string {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

func comparePortKeys(a, b portKey) int {
	return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.name, b.name), cmp.Compare(a.port, b.port))
}

func groupOf(ref gwv1.ParentReference) string {
	if ref.Group == nil {
		return gwv1.GroupName
	}
	return string(*ref.Group)
}

// buildServicePorts lists every meshed Service port: one with a programmed
// route, or any TCP port of a Service in an enrolled namespace.
func (r *resolver) buildServicePorts(ports map[portKey]*portState) []*weftv1.ServicePort {
	keys := make([]objKey, 0, len(r.ix.services))
	for k := range r.ix.services {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b objKey) int { return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.name, b.name)) })
	var out []*weftv1.ServicePort
	// claimed guards against two Services with one cluster IP (which the
	// API server never allows, but a bad snapshot might hold): the first
	// Service by namespace/name keeps the address.
	type vipPort struct {
		vip  string // canonical (serviceVIPs)
		port int32
	}
	claimed := make(map[vipPort]bool, r.prevPorts.len())
	for _, k := range keys {
		svc := r.ix.services[k]
		vips := serviceVIPs(svc)
		if len(vips) == 0 {
			continue
		}
		byNumber := func(a, b corev1.ServicePort) int { return cmp.Compare(a.Port, b.Port) }
		sps := svc.Spec.Ports // never modified: sorted in a copy when not in order
		if !slices.IsSortedFunc(sps, byNumber) {
			sps = slices.Clone(sps)
			slices.SortStableFunc(sps, byNumber)
		}
		seenPort := map[int32]bool{}
		for _, sp := range sps {
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				continue
			}
			if seenPort[sp.Port] {
				continue // two TCP ports with one number are invalid; keep the first
			}
			seenPort[sp.Port] = true
			if sp.Port < 1 || sp.Port > 65535 {
				continue
			}
			pk := portKey{svc.Namespace, svc.Name, sp.Port}
			ps := ports[pk]
			if ps == nil && !r.ix.enrolled[svc.Namespace] {
				continue
			}
			// the addresses still free: vips itself, unless one is taken
			free := vips
			for i, v := range vips {
				if claimed[vipPort{v, sp.Port}] {
					free = slices.Clone(vips[:i:i])
					for _, v := range vips[i+1:] {
						if !claimed[vipPort{v, sp.Port}] {
							free = append(free, v)
						}
					}
					break
				}
			}
			for _, v := range free {
				claimed[vipPort{v, sp.Port}] = true
			}
			if len(free) == 0 {
				continue
			}
			b, ok := r.reusedPort(pk, ps, free)
			if ok {
				r.serviceCluster(svc, sp) // registered as building it would
			} else {
				b = builtPort{r.servicePort(svc, sp, free, ps), sourceOf(ps)}
			}
			r.nextPorts.set(pk, b)
			out = append(out, b.sp)
		}
	}
	return out
}

func (r *resolver) servicePort(svc *corev1.Service, sp corev1.ServicePort, vips []string, ps *portState) *weftv1.ServicePort {
	p := &weftv1.ServicePort{
		Namespace:      svc.Namespace,
		Name:           svc.Name,
		Vips:           vips,
		Port:           uint32(sp.Port),
		PortName:       sp.Name,
		DefaultCluster: r.serviceCluster(svc, sp),
	}
	// protocol is what callers without a consumer table get: the producer
	// routes' kind, or else what appProtocol says (TCP when it says
	// nothing). A consumer table's own kind decides for its callers.
	app := appProtocol(sp.AppProtocol)
	switch {
	case ps == nil || len(ps.producer) == 0:
		p.Protocol = app
		if p.Protocol == weftv1.Protocol_PROTOCOL_UNSPECIFIED {
			p.Protocol = weftv1.Protocol_PROTOCOL_TCP
		}
	case ps.win == kindGRPC:
		p.Protocol = weftv1.Protocol_PROTOCOL_GRPC
	case ps.win == kindHTTP && (app == weftv1.Protocol_PROTOCOL_H2C || app == weftv1.Protocol_PROTOCOL_GRPC):
		p.Protocol = weftv1.Protocol_PROTOCOL_H2C
	case ps.win == kindHTTP:
		p.Protocol = weftv1.Protocol_PROTOCOL_HTTP
	default:
		p.Protocol = weftv1.Protocol_PROTOCOL_TCP
	}
	if ps == nil || len(ps.producer) == 0 {
		p.Producer = r.policyTable(svc, p)
	}
	if ps == nil {
		return p
	}
	if len(ps.producer) > 0 {
		p.Producer = buildTable(ps.win, ps.producer)
	}
	if len(ps.consumers) > 0 {
		p.Consumers = make(map[string]*weftv1.RouteTable, len(ps.consumers))
		for ns, rts := range ps.consumers {
			p.Consumers[ns] = buildTable(ps.win, rts)
		}
	}
	return p
}

// policyTable makes plain traffic to an L7 Service port (no producer
// route, appProtocol HTTP, h2c or gRPC) sticky when an
// XBackendTrafficPolicy with sessionPersistence applies to the Service: a
// table with one match-everything rule sending to the default cluster with
// the policy's session. Without it such traffic would bypass the policy.
func (r *resolver) policyTable(svc *corev1.Service, p *weftv1.ServicePort) *weftv1.RouteTable {
	e := r.policies.entryFor(objKey{svc.Namespace, svc.Name})
	if e == nil || e.session == nil {
		return nil
	}
	kind := kindHTTP
	m := &weftv1.Match{Http: &weftv1.HTTPMatch{Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/"}}}
	switch p.Protocol {
	case weftv1.Protocol_PROTOCOL_HTTP, weftv1.Protocol_PROTOCOL_H2C:
	case weftv1.Protocol_PROTOCOL_GRPC:
		kind = kindGRPC
		m = &weftv1.Match{Grpc: &weftv1.GRPCMatch{Type: weftv1.MatchType_MATCH_TYPE_EXACT}}
	default:
		return nil
	}
	e.plain = append(e.plain, svc.Name+":"+strconv.Itoa(int(p.Port)))
	return &weftv1.RouteTable{
		Kind: kind.proto(),
		Rules: []*weftv1.Rule{{
			Route:     KindXBackendTrafficPolicy + "/" + e.p.Namespace + "/" + e.p.Name,
			RouteKind: kind.proto(),
			Backends:  []*weftv1.BackendRef{{Cluster: p.DefaultCluster, Weight: 1, Session: e.session}},
		}},
		Matches: []*weftv1.Match{m},
	}
}

// canonicalIP returns the canonical text of an IP address, "" if invalid:
// s itself, not a copy, when it is canonical already (most are).
func canonicalIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return ""
	}
	var buf [64]byte
	b := a.Unmap().AppendTo(buf[:0])
	if string(b) == s {
		return s
	}
	return string(b)
}
