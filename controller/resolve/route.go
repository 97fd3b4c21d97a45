package resolve

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// routeKind orders route kinds by the precedence they have when several kinds
// claim one Service port: GRPC > HTTP > TLS > TCP.
type routeKind int

const (
	kindTCP routeKind = iota + 1
	kindTLS
	kindHTTP
	kindGRPC
)

func (k routeKind) String() string {
	switch k {
	case kindTCP:
		return "TCPRoute"
	case kindTLS:
		return "TLSRoute"
	case kindHTTP:
		return "HTTPRoute"
	case kindGRPC:
		return "GRPCRoute"
	}
	return "Route"
}

func (k routeKind) proto() weftv1.RouteKind {
	switch k {
	case kindHTTP:
		return weftv1.RouteKind_ROUTE_KIND_HTTP
	case kindGRPC:
		return weftv1.RouteKind_ROUTE_KIND_GRPC
	case kindTCP:
		return weftv1.RouteKind_ROUTE_KIND_TCP
	}
	return weftv1.RouteKind_ROUTE_KIND_UNSPECIFIED
}

// route is one HTTPRoute, GRPCRoute or TCPRoute compiled independently of
// its parents: its valid rules and everything status needs to say about it.
type route struct {
	kind       routeKind
	ns, name   string
	generation int64
	created    metav1.Time
	parentRefs []gwv1.ParentReference
	// rules that are valid, in spec order.
	rules []*compiledRule
	// totalRules in the spec (valid or not).
	totalRules int
	// dropped explains every rule that is not programmed.
	dropped []string
	// refs are problems with backend references, for ResolvedRefs.
	refs refProblems
	// notes are appended to the Accepted message (ignored fields, renames).
	notes []string
	// parents is filled by attach, one entry per parentRef.
	parents []*parentResult
	// compiled is the compilation this route is a copy of (attachable).
	compiled *compiledRoute
}

func (rt *route) id() string { return rt.ns + "/" + rt.name }

// compiledRule is one valid rule: its proto and its matches with the keys
// the precedence order needs.
type compiledRule struct {
	rule    *weftv1.Rule
	matches []matchEntry
	// patterns are the distinct regular expressions of matches with
	// their program sizes (regexPatterns), nil when none.
	patterns map[string]int
}

// compareRoutes orders routes the way the spec breaks ties across routes:
// the oldest creationTimestamp first, then "{namespace}/{name}".
func compareRoutes(a, b *route) int {
	if c := a.created.Compare(b.created.Time); c != 0 {
		return c
	}
	return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.name, b.name), cmp.Compare(a.kind, b.kind))
}

// drop records that rule i is not programmed and why.
func (rt *route) drop(i int, name *gwv1.SectionName, why string) {
	label := "Dropped Rule " + strconv.Itoa(i)
	if name != nil && *name != "" {
		label += fmt.Sprintf(" (%q)", *name)
	}
	rt.dropped = append(rt.dropped, label+": "+why)
}

// ruleNames checks the uniqueness of rule names; a repeated name is cleared
// (the rule is still programmed) and a note says so.
func (rt *route) ruleNames(names []*gwv1.SectionName) []string {
	out := make([]string, len(names))
	seen := map[string]int{}
	for i, n := range names {
		if n == nil || *n == "" {
			continue
		}
		if first, dup := seen[string(*n)]; dup {
			rt.notes = append(rt.notes, fmt.Sprintf("rule %d repeats the name %q of rule %d (rule names must be unique within a route); its name is ignored", i, *n, first))
			continue
		}
		seen[string(*n)] = i
		out[i] = string(*n)
	}
	return out
}

// portKey names one port of one Service.
type portKey struct {
	ns, name string
	port     int32
}

func (p portKey) String() string { return p.ns + "/" + p.name + ":" + strconv.Itoa(int(p.port)) }

// parentResult is what one parentRef resolved to.
type parentResult struct {
	ref gwv1.ParentReference
	// accepted is nil when the parentRef attached; otherwise why not.
	accepted *metav1.Condition
	// consumer is the caller namespace of a consumer route, "" for producer.
	consumer string
	// idle is set for a consumer route whose namespace is not enrolled:
	// its callers' traffic is not captured, so the route has no effect.
	idle bool
	// ports the parentRef selected on the Service.
	ports []portKey
	// lost explains ports that another route kind (or an older TCPRoute)
	// won; won lists the ports this parentRef is programmed on.
	lost []string
	won  []portKey
}

// isServiceRef reports whether a parentRef names a core Service, and whether
// it looks like a Service reference with the wrong group (a common mistake).
func isServiceRef(ref gwv1.ParentReference) (service, mistaken bool) {
	kind := "Gateway"
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	group := gwv1.GroupName
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if kind != "Service" {
		return false, false
	}
	switch group {
	case "":
		return true, false
	case gwv1.GroupName, "core", "v1":
		return false, true
	}
	return false, false
}

// resolveParent checks one parentRef against the Services.
func (r *resolver) resolveParent(rt *route, ref gwv1.ParentReference) *parentResult {
	pr := &parentResult{ref: ref}
	ns := rt.ns
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	if ns != rt.ns {
		pr.consumer = rt.ns
		pr.idle = !r.ix.enrolled[rt.ns]
	}
	svc := r.ix.services[objKey{ns, string(ref.Name)}]
	switch {
	case svc == nil:
		pr.accepted = condFalse(condAccepted, reasonNoMatchingParent,
			fmt.Sprintf("Service %s/%s does not exist; create it or fix parentRefs name/namespace", ns, ref.Name))
		return pr
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		pr.accepted = condFalse(condAccepted, reasonUnsupportedValue,
			fmt.Sprintf("Service %s/%s is of type ExternalName: it has no cluster IP for the mesh to capture, so it cannot be a route parent; route to it from a parent Service with a ClusterIP instead", ns, ref.Name))
		return pr
	case svc.Spec.ClusterIP == corev1.ClusterIPNone:
		pr.accepted = condFalse(condAccepted, reasonUnsupportedValue,
			fmt.Sprintf("Service %s/%s is headless (clusterIP: None): mesh routes match traffic by Service cluster IP and port, so a headless Service cannot be a route parent; use a Service with a cluster IP as the parent (it may list the headless Service as a backend)", ns, ref.Name))
		return pr
	case len(serviceVIPs(svc)) == 0:
		pr.accepted = condFalse(condAccepted, reasonPending,
			fmt.Sprintf("Service %s/%s has no cluster IP assigned yet", ns, ref.Name))
		return pr
	}
	for _, sp := range svc.Spec.Ports {
		if ref.Port != nil && sp.Port != *ref.Port {
			continue
		}
		if ref.SectionName != nil && sp.Name != string(*ref.SectionName) {
			continue
		}
		if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
			continue // the mesh carries TCP only
		}
		pr.ports = append(pr.ports, portKey{ns, svc.Name, sp.Port})
	}
	if len(pr.ports) == 0 {
		var have []string
		for _, sp := range svc.Spec.Ports {
			s := strconv.Itoa(int(sp.Port))
			if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				s += "/" + string(sp.Protocol) + " (not TCP, not meshed)"
			}
			if sp.Name != "" {
				s += " (" + sp.Name + ")"
			}
			have = append(have, s)
		}
		var want []string
		if ref.Port != nil {
			want = append(want, "port "+strconv.Itoa(int(*ref.Port)))
		}
		if ref.SectionName != nil {
			want = append(want, fmt.Sprintf("sectionName %q", *ref.SectionName))
		}
		pr.accepted = condFalse(condAccepted, reasonNoMatchingParent,
			fmt.Sprintf("Service %s/%s has no port matching %s; its ports are: %s", ns, svc.Name, strings.Join(want, " and "), orNone(have)))
	}
	return pr
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// serviceVIPs returns the cluster IPs of a Service that can be captured.
func serviceVIPs(svc *corev1.Service) []string {
	if svc.Spec.Type == corev1.ServiceTypeExternalName || svc.Spec.ClusterIP == corev1.ClusterIPNone {
		return nil
	}
	if vipsCanonical(svc) {
		return svc.Spec.ClusterIPs // shared with the object: never modified
	}
	var out []string
	for _, ip := range svc.Spec.ClusterIPs {
		if ip = canonicalIP(ip); ip != "" && !containsStr(out, ip) {
			out = append(out, ip)
		}
	}
	if ip := canonicalIP(svc.Spec.ClusterIP); ip != "" && !containsStr(out, ip) {
		out = append([]string{ip}, out...)
	}
	return out
}

// vipsCanonical reports whether a Service's clusterIPs are what
// serviceVIPs would make of them: canonical, distinct, clusterIP (when
// set) first. The API server keeps them so.
func vipsCanonical(svc *corev1.Service) bool {
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 || svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != ips[0] {
		return false
	}
	for i, ip := range ips {
		if canonicalIP(ip) != ip || containsStr(ips[:i], ip) {
			return false
		}
	}
	return true
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
