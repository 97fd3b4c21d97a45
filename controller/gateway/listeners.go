package gateway

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// protoFamily groups listener protocols that can share a port: HTTP
// alone; HTTPS and TLS together (the SNI picks the listener, so a port may
// mix terminated HTTPS, terminated TLS and passthrough TLS listeners); TCP
// alone, one listener per port.
type protoFamily int

const (
	familyNone protoFamily = iota
	familyHTTP
	familyTLS
	familyTCP
)

func family(p gwv1.ProtocolType) protoFamily {
	switch p {
	case gwv1.HTTPProtocolType:
		return familyHTTP
	case gwv1.HTTPSProtocolType, gwv1.TLSProtocolType:
		return familyTLS
	case gwv1.TCPProtocolType:
		return familyTCP
	}
	return familyNone
}

// protocolKinds lists the route kinds a listener protocol carries.
func protocolKinds(p gwv1.ProtocolType) []string {
	switch p {
	case gwv1.HTTPProtocolType, gwv1.HTTPSProtocolType:
		return []string{KindHTTPRoute, KindGRPCRoute}
	case gwv1.TLSProtocolType:
		return []string{KindTLSRoute}
	case gwv1.TCPProtocolType:
		return []string{KindTCPRoute}
	}
	return nil
}

// listenerState is one listener and what was decided about it.
type listenerState struct {
	spec *gwv1.Listener
	// hostname is the listener's hostname, lower case; "" for TCP.
	hostname string
	// kinds are the route kinds that may attach (status supportedKinds).
	kinds []string
	// from and selector say which namespaces' routes may attach.
	from     gwv1.FromNamespaces
	selector labels.Selector
	// notAccepted is why the listener is not accepted (nil: accepted).
	notAccepted *reason
	// conflict is why the listener is conflicted (nil: it is not).
	conflict *reason
	// refs are unresolved references (ResolvedRefs False).
	refs []reason
	// notes are added to the Accepted message.
	notes []string
	// certs are the usable certificates of a terminating listener.
	certs []*Certificate
	// tlsMode is Terminate or Passthrough (HTTPS, TLS).
	tlsMode gwv1.TLSModeType
	// validation is the client certificate validation (HTTPS).
	validation *ClientValidation
	// overlaps names the listeners on the same port whose TLS hostnames
	// overlap this one's.
	overlaps []string
	// claims are the routes attached to the listener, in route
	// precedence order.
	claims []*listenerAttach
	// attached counts the routes accepted on this listener.
	attached int32
}

func (ls *listenerState) name() string { return string(ls.spec.Name) }

// usable reports whether the listener can be programmed: accepted, not
// conflicted, and with a certificate when it terminates TLS.
func (ls *listenerState) usable() bool {
	return ls.notAccepted == nil && ls.conflict == nil && (ls.tlsMode != gwv1.TLSModeTerminate || len(ls.certs) > 0)
}

// allowsKind reports whether routes of kind may attach.
func (ls *listenerState) allowsKind(kind string) bool { return slices.Contains(ls.kinds, kind) }

// allowsNamespace reports whether routes in namespace ns may attach to a
// listener of a Gateway in gwNS.
func (ls *listenerState) allowsNamespace(ix *index, gwNS, ns string) bool {
	switch ls.from {
	case gwv1.NamespacesFromAll:
		return true
	case gwv1.NamespacesFromSame:
		return ns == gwNS
	case gwv1.NamespacesFromSelector:
		n := ix.namespaces[ns]
		return n != nil && ls.selector != nil && ls.selector.Matches(labels.Set(n.Labels))
	}
	return false
}

// newListener checks one listener on its own (everything but conflicts
// with its siblings and the frontend TLS of its port).
func (gs *gatewayState) newListener(l *gwv1.Listener) *listenerState {
	ls := &listenerState{spec: l, from: gwv1.NamespacesFromSame}
	if family(l.Protocol) == familyNone {
		what := fmt.Sprintf("protocol %q is not one Weft's gateway supports", l.Protocol)
		if l.Protocol == gwv1.UDPProtocolType {
			what = "Weft's gateway does not carry UDP"
		}
		ls.notAccepted = &reason{string(gwv1.ListenerReasonUnsupportedProtocol), what + "; use HTTP, HTTPS, TLS or TCP"}
		return ls
	}
	if l.Protocol != gwv1.TCPProtocolType && l.Hostname != nil {
		ls.hostname = strings.ToLower(string(*l.Hostname))
	} else if l.Hostname != nil && *l.Hostname != "" {
		ls.notes = append(ls.notes, "hostname is ignored on TCP listeners: TCP carries no hostname to match")
	}
	gs.checkListenerValues(ls)
	gs.allowedKinds(ls)
	gs.allowedNamespaces(ls)
	gs.listenerTLS(ls)
	return ls
}

// checkListenerValues rejects values Weft cannot serve.
func (gs *gatewayState) checkListenerValues(ls *listenerState) {
	l := ls.spec
	unsupported := func(msg string) {
		if ls.notAccepted == nil {
			ls.notAccepted = &reason{string(gwv1.ListenerReasonUnsupportedValue), msg}
		}
	}
	if gs.ix.reserved[l.Port] {
		ls.notAccepted = &reason{string(gwv1.ListenerReasonPortUnavailable), fmt.Sprintf("port %d is used by Weft's gateway data plane itself; choose another port", l.Port)}
	} else if l.Port < 1 || l.Port > 65535 {
		ls.notAccepted = &reason{string(gwv1.ListenerReasonPortUnavailable), fmt.Sprintf("port %d is out of range 1-65535", l.Port)}
	}
	if ls.hostname != "" {
		if err := checkHostname(gwv1.Hostname(ls.hostname)); err != nil {
			unsupported(err.Error() + "; fix listeners[].hostname")
		}
	}
	if l.Filters != nil && len(l.Filters.Requests) > 0 {
		unsupported("Weft's gateway does not run listener filters (filters.requests); remove them, since ignoring an ExternalAuth filter would let unauthenticated requests through")
	}
}

// allowedKinds resolves allowedRoutes.kinds against what the protocol
// carries (status supportedKinds). Kinds Weft does not route on this
// protocol are InvalidRouteKinds.
func (gs *gatewayState) allowedKinds(ls *listenerState) {
	carried := protocolKinds(ls.spec.Protocol)
	if ls.spec.AllowedRoutes == nil || len(ls.spec.AllowedRoutes.Kinds) == 0 {
		ls.kinds = carried
		return
	}
	var bad []string
	for _, k := range ls.spec.AllowedRoutes.Kinds {
		group := gwv1.GroupName
		if k.Group != nil {
			group = string(*k.Group)
		}
		if group == gwv1.GroupName && slices.Contains(carried, string(k.Kind)) {
			if !slices.Contains(ls.kinds, string(k.Kind)) {
				ls.kinds = append(ls.kinds, string(k.Kind))
			}
			continue
		}
		bad = append(bad, fmt.Sprintf("%s (group %q)", k.Kind, group))
	}
	if len(bad) > 0 {
		ls.refs = append(ls.refs, reason{string(gwv1.ListenerReasonInvalidRouteKinds), fmt.Sprintf("allowedRoutes.kinds lists %s, which a listener of protocol %s does not carry; it carries %s (group %s)",
			strings.Join(bad, ", "), ls.spec.Protocol, strings.Join(carried, ", "), gwv1.GroupName)})
	}
}

// allowedNamespaces resolves allowedRoutes.namespaces.
func (gs *gatewayState) allowedNamespaces(ls *listenerState) {
	ar := ls.spec.AllowedRoutes
	if ar == nil || ar.Namespaces == nil || ar.Namespaces.From == nil {
		return
	}
	ls.from = *ar.Namespaces.From
	switch ls.from {
	case gwv1.NamespacesFromAll, gwv1.NamespacesFromSame, gwv1.NamespacesFromNone:
	case gwv1.NamespacesFromSelector:
		if ar.Namespaces.Selector == nil {
			ls.notAccepted = &reason{string(gwv1.ListenerReasonUnsupportedValue), "allowedRoutes.namespaces.from is Selector but no selector is set; set allowedRoutes.namespaces.selector"}
			return
		}
		sel, err := metav1.LabelSelectorAsSelector(ar.Namespaces.Selector)
		if err != nil {
			ls.notAccepted = &reason{string(gwv1.ListenerReasonUnsupportedValue), fmt.Sprintf("allowedRoutes.namespaces.selector is invalid: %v", err)}
			return
		}
		ls.selector = sel
	default:
		ls.notAccepted = &reason{string(gwv1.ListenerReasonUnsupportedValue), fmt.Sprintf("allowedRoutes.namespaces.from %q is unknown; use Same, All, Selector or None", ls.from)}
	}
}

// describeAllowed says which routes a listener takes, for messages.
func (ls *listenerState) describeAllowed(gwNS string) string {
	who := map[gwv1.FromNamespaces]string{
		gwv1.NamespacesFromAll:  "every namespace",
		gwv1.NamespacesFromSame: "namespace " + gwNS + " (from: Same)",
		gwv1.NamespacesFromNone: "no namespace (from: None)",
	}[ls.from]
	if ls.from == gwv1.NamespacesFromSelector {
		who = "namespaces matching " + fmt.Sprint(ls.selector)
	}
	kinds := "no route kind (see ResolvedRefs)"
	if len(ls.kinds) > 0 {
		kinds = strings.Join(ls.kinds, ", ")
	}
	return fmt.Sprintf("listener %s takes %s from %s", ls.name(), kinds, who)
}

// supportedKinds is the status form of ls.kinds.
func (ls *listenerState) supportedKinds() []gwv1.RouteGroupKind {
	out := make([]gwv1.RouteGroupKind, 0, len(ls.kinds))
	for _, k := range ls.kinds {
		g := gwv1.Group(gwv1.GroupName)
		out = append(out, gwv1.RouteGroupKind{Group: &g, Kind: gwv1.Kind(k)})
	}
	return out
}

// conflicts marks listeners that are not distinct (Gateway spec,
// "Distinct Listeners"): on one port, protocols of different families are
// a ProtocolConflict; within a family, equal hostnames (TCP: any two
// listeners) are a HostnameConflict. Every listener of a conflicting set
// is conflicted; none wins.
func conflicts(ls []*listenerState) {
	byPort := map[int32][]*listenerState{}
	for _, l := range ls {
		if family(l.spec.Protocol) != familyNone {
			byPort[l.spec.Port] = append(byPort[l.spec.Port], l)
		}
	}
	for _, port := range slices.Sorted(maps.Keys(byPort)) {
		group := byPort[port]
		fams := map[protoFamily]bool{}
		for _, l := range group {
			fams[family(l.spec.Protocol)] = true
		}
		if len(fams) > 1 {
			for _, l := range group {
				l.conflict = &reason{string(gwv1.ListenerReasonProtocolConflict), fmt.Sprintf("port %d is shared by listeners of protocols that cannot share a port (%s); HTTP, TCP and the TLS-based HTTPS/TLS each need their own port", port, describe(group))}
			}
			continue
		}
		byHost := map[string][]*listenerState{}
		for _, l := range group {
			byHost[l.hostname] = append(byHost[l.hostname], l)
		}
		for host, same := range byHost {
			if len(same) < 2 {
				continue
			}
			msg := fmt.Sprintf("listeners %s on port %d have the same hostname %q, so a request cannot be matched to one of them; give each a different hostname or port", describe(same), port, host)
			if family(same[0].spec.Protocol) == familyTCP {
				msg = fmt.Sprintf("TCP listeners are told apart by port only, and %s share port %d; give each its own port", describe(same), port)
			}
			for _, l := range same {
				l.conflict = &reason{string(gwv1.ListenerReasonHostnameConflict), msg}
			}
		}
	}
}

func describe(ls []*listenerState) string {
	var parts []string
	for _, l := range ls {
		parts = append(parts, fmt.Sprintf("%s (%s)", l.name(), l.spec.Protocol))
	}
	return strings.Join(parts, ", ")
}

// overlappingTLS finds terminating listeners on one port whose hostnames
// overlap (one matches hosts the other matches too): a client that
// coalesces connections may then reuse one listener's TLS session for the
// other's hosts (ListenerConditionOverlappingTLSConfig).
func overlappingTLS(ls []*listenerState) {
	for i, a := range ls {
		for _, b := range ls[i+1:] {
			if a.spec.Port != b.spec.Port || !a.usable() || !b.usable() || a.tlsMode != gwv1.TLSModeTerminate || b.tlsMode != gwv1.TLSModeTerminate {
				continue
			}
			if _, ok := intersect(a.hostname, b.hostname); ok {
				a.overlaps = append(a.overlaps, b.name())
				b.overlaps = append(b.overlaps, a.name())
			}
		}
	}
}
