package resolve

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// maxWeight is the largest weight the API allows.
const maxWeight = 1_000_000

// xGroup is the API group of the experimental resources (XBackend).
const xGroup = "gateway.networking.x-k8s.io"

// clusterSource is what a Cluster's endpoints come from: one Service port or
// one XBackend.
type clusterSource struct {
	svc  *corev1.Service
	port corev1.ServicePort
	xb   *gwxv1a1.XBackend
}

// backendResult is one resolved backend reference.
type backendResult struct {
	// cluster is empty when the reference is invalid.
	cluster string
	svc     *corev1.Service
	xb      *gwxv1a1.XBackend
	// proto is the protocol the backend declares (appProtocol, XBackend
	// protocol); unspecified when it declares none.
	proto weftv1.Protocol
	// reason and problem say why it is invalid (ResolvedRefs).
	reason  string
	problem string
}

// resolveBackendRef resolves a backend reference (a Service port or an
// XBackend). It does not record the problem; callers do.
func (r *resolver) resolveBackendRef(rt *route, rule int, ref gwv1.BackendObjectReference, what string) backendResult {
	group, kind := "", "Service"
	if ref.Group != nil {
		group = string(*ref.Group)
	}
	if ref.Kind != nil {
		kind = string(*ref.Kind)
	}
	ns := rt.ns
	if ref.Namespace != nil && *ref.Namespace != "" {
		ns = string(*ref.Namespace)
	}
	label := fmt.Sprintf("rule %d %s %s/%s", rule, what, ns, ref.Name)
	bad := func(reason, format string, args ...any) backendResult {
		return backendResult{reason: reason, problem: label + ": " + fmt.Sprintf(format, args...)}
	}
	if ns != rt.ns && r.permitted != nil && !r.permitted(rt.kind.String(), rt.ns, ref) {
		return bad(reasonRefNotPermitted, "no ReferenceGrant in namespace %s allows %ss in namespace %s to refer to %s %s; create one there (from: group %s, kind %s, namespace %s; to: group %q, kind %s)",
			ns, rt.kind, rt.ns, kind, ref.Name, gwv1.GroupName, rt.kind, rt.ns, group, kind)
	}
	switch {
	case group == "" && kind == "Service":
		svc := r.ix.services[objKey{ns, string(ref.Name)}]
		if svc == nil {
			return bad(reasonBackendNotFound, "Service %s/%s does not exist", ns, ref.Name)
		}
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			return bad(reasonUnsupportedValue, "Service is of type ExternalName, which Weft does not route to; use an XBackend or a Service with endpoints")
		}
		if ref.Port == nil {
			return bad(reasonUnsupportedValue, "port is required when referring to a Service")
		}
		other := corev1.Protocol("")
		for _, sp := range svc.Spec.Ports {
			if sp.Port == *ref.Port && sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
				other = sp.Protocol
			}
			if sp.Port == *ref.Port && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP) {
				res := backendResult{cluster: r.serviceCluster(svc, sp), svc: svc, proto: appProtocol(sp.AppProtocol)}
				if msg := protocolMismatch(rt.kind, res.proto); msg != "" {
					what := "appProtocol (none)"
					if sp.AppProtocol != nil {
						what = fmt.Sprintf("appProtocol %q", *sp.AppProtocol)
					}
					return bad(reasonUnsupportedProtocol, "Service port %d has %s, %s", sp.Port, what, msg)
				}
				return res
			}
		}
		if other != "" {
			return bad(reasonUnsupportedProtocol, "Service port %d is %s; the mesh carries TCP only", *ref.Port, other)
		}
		return bad(reasonBackendNotFound, "Service %s/%s has no port %d", ns, ref.Name, *ref.Port)
	case group == xGroup && (kind == "XBackend" || kind == "Backend"):
		xb := r.ix.backends[objKey{ns, string(ref.Name)}]
		if xb == nil {
			return bad(reasonBackendNotFound, "XBackend %s/%s does not exist", ns, ref.Name)
		}
		if xb.Spec.Type != gwxv1a1.BackendTypeEndpointSelector || xb.Spec.EndpointSelector == nil {
			return bad(reasonInvalidKind, "XBackend type %q is not supported by Weft; only EndpointSelector is", xb.Spec.Type)
		}
		if xb.Spec.TLS != nil && xb.Spec.TLS.Mode != "" && xb.Spec.TLS.Mode != gwxv1a1.BackendTLSModeNone {
			return bad(reasonUnsupportedProtocol, "XBackend tls mode %s is not supported: the mesh already encrypts traffic with mTLS between nodes; set tls.mode None", xb.Spec.TLS.Mode)
		}
		if _, ok := backendProtocol(xb.Spec.Protocol); !ok {
			return bad(reasonUnsupportedProtocol, "XBackend protocol %s is not supported; use HTTP, HTTP11, H2C, GRPC or TCP", *xb.Spec.Protocol)
		}
		port := int32(xb.Spec.Port.Number)
		if ref.Port != nil && *ref.Port != port {
			return bad(reasonBackendNotFound, "backendRef port %d does not match the XBackend's port %d", *ref.Port, port)
		}
		if port < 1 || port > 65535 {
			return bad(reasonUnsupportedValue, "XBackend port %d is out of range 1-65535", port)
		}
		res := backendResult{cluster: r.xbackendCluster(xb), xb: xb}
		res.proto, _ = backendProtocol(xb.Spec.Protocol)
		if msg := protocolMismatch(rt.kind, res.proto); msg != "" {
			return bad(reasonUnsupportedProtocol, "XBackend protocol %s: %s", *xb.Spec.Protocol, msg)
		}
		return res
	}
	g := group
	if g == "" {
		g = "core"
	}
	return bad(reasonInvalidKind, "kind %s in group %s is not supported; use a Service (group \"\") or an XBackend (group %s)", kind, g, xGroup)
}

// backendRef converts one route backend reference into its proto. filters
// are the converted backendRef filters.
func (r *resolver) backendRef(rt *route, rule int, ref gwv1.BackendRef, filters []*weftv1.Filter) *weftv1.BackendRef {
	w := int32(1)
	if ref.Weight != nil {
		w = *ref.Weight
	}
	if w < 0 {
		rt.notes = append(rt.notes, fmt.Sprintf("rule %d backendRef %s has negative weight %d; treated as 0", rule, ref.Name, w))
		w = 0
	}
	if w > maxWeight {
		rt.notes = append(rt.notes, fmt.Sprintf("rule %d backendRef %s weight %d is above the maximum %d; clamped", rule, ref.Name, w, maxWeight))
		w = maxWeight
	}
	res := r.resolveBackendRef(rt, rule, ref.BackendObjectReference, "backendRef")
	br := &weftv1.BackendRef{Cluster: res.cluster, Weight: uint32(w), Filters: filters}
	if res.cluster == "" {
		rt.refs.add(res.reason, res.problem)
		br.InvalidReason = res.problem
		br.Filters = nil
		return br
	}
	switch {
	case res.svc != nil:
		br.Session = r.policies.sessionFor(objKey{res.svc.Namespace, res.svc.Name})
	case res.xb != nil && res.xb.Spec.SessionPersistence != nil:
		sp, err := r.convertSession(res.xb.Spec.SessionPersistence, "XBackend/"+res.xb.Namespace+"/"+res.xb.Name)
		if err != nil {
			msg := fmt.Sprintf("rule %d backendRef XBackend %s/%s sessionPersistence: %v", rule, res.xb.Namespace, res.xb.Name, err)
			rt.refs.add(reasonUnsupportedValue, msg)
			return &weftv1.BackendRef{Weight: uint32(w), InvalidReason: msg}
		}
		br.Session = sp
	}
	return br
}

// serviceCluster registers the cluster of one Service port.
func (r *resolver) serviceCluster(svc *corev1.Service, sp corev1.ServicePort) string {
	r.record(clusterUse{ns: svc.Namespace, name: svc.Name, port: sp.Port})
	k := svcPort{svc, sp.Port}
	name, ok := r.clusterNames[k]
	if !ok {
		name = serviceClusterName(svc.Namespace, svc.Name, sp.Port)
		if _, ok := r.clusters[name]; !ok {
			r.clusters[name] = &clusterSource{svc: svc, port: sp}
		}
		r.clusterNames[k] = name
	}
	r.countUse(name)
	return name
}

// countUse counts one use of a cluster, when the resolution counts them
// (clusterRefs, for a later incremental resolution).
func (r *resolver) countUse(name string) {
	if r.clusterRefs != nil {
		r.clusterRefs[name]++
	}
}

// tcpPort is the port of svc that the number port names for clusters
// (a backend reference's, a meshed port's): its first TCP port with that
// number; nil when there is none or no svc.
func tcpPort(svc *corev1.Service, port int32) *corev1.ServicePort {
	if svc == nil {
		return nil
	}
	for i := range svc.Spec.Ports {
		if sp := &svc.Spec.Ports[i]; sp.Port == port && (sp.Protocol == "" || sp.Protocol == corev1.ProtocolTCP) {
			return sp
		}
	}
	return nil
}

func serviceClusterName(ns, name string, port int32) string {
	return ns + "/" + name + ":" + strconv.Itoa(int(port))
}

func xbackendClusterName(xb *gwxv1a1.XBackend) string {
	return xb.Namespace + "/xbackend/" + xb.Name + ":" + strconv.Itoa(int(xb.Spec.Port.Number))
}

// xbackendCluster registers the cluster of an XBackend.
func (r *resolver) xbackendCluster(xb *gwxv1a1.XBackend) string {
	r.record(clusterUse{ns: xb.Namespace, name: xb.Name, xbackend: true})
	name := xbackendClusterName(xb)
	if _, ok := r.clusters[name]; !ok {
		r.clusters[name] = &clusterSource{xb: xb}
	}
	r.countUse(name)
	return name
}

// buildClusters turns every registered cluster into its proto, sorted,
// taking a Service's cluster from reuse when it may.
func (r *resolver) buildClusters(reuse *Reuse) []*weftv1.Cluster {
	names := make([]string, 0, len(r.clusters))
	for n := range r.clusters {
		names = append(names, n)
	}
	slices.Sort(names)
	var podsStale map[objKey]bool
	if reuse != nil && reuse.pods != nil {
		podsStale = r.servicesOfPods(reuse.pods)
	}
	out := make([]*weftv1.Cluster, 0, len(names))
	for _, n := range names {
		out = append(out, r.buildCluster(n, r.clusters[n], reuse, podsStale))
	}
	return out
}

// servicesOfPods lists the Services an endpoint of which names one of the
// pods pc lists (podRef: as endpointPod finds an endpoint's pod).
func (r *resolver) servicesOfPods(pc *podChanges) map[objKey]bool {
	out := map[objKey]bool{}
	for _, es := range r.ix.in.EndpointSlices {
		svc := objKey{es.Namespace, es.Labels[discoveryv1.LabelServiceName]}
		for i := 0; i < len(es.Endpoints) && !out[svc]; i++ {
			ep := &es.Endpoints[i]
			for _, ip := range ep.Addresses {
				if k, byIP, ok := podRef(es.Namespace, ep, canonicalIP(ip)); ok && (byIP && pc.ips[k] || !byIP && pc.keys[k]) {
					out[svc] = true
					break
				}
			}
		}
	}
	return out
}

// buildCluster builds the cluster n from src, or takes it from reuse.
func (r *resolver) buildCluster(n string, src *clusterSource, reuse *Reuse, podsStale map[objKey]bool) *weftv1.Cluster {
	if reuse != nil && src.svc != nil && !reuse.StaleServices[src.svc.Namespace+"/"+src.svc.Name] && !podsStale[objKey{src.svc.Namespace, src.svc.Name}] {
		if c := reuse.cluster(n); c != nil {
			return c
		}
	}
	c := &weftv1.Cluster{Name: n}
	if src.xb != nil {
		c.Protocol, _ = backendProtocol(src.xb.Spec.Protocol)
		c.Endpoints = r.selectorEndpoints(src.xb)
	} else {
		c.Protocol = appProtocol(src.port.AppProtocol)
		c.Endpoints = r.serviceEndpoints(src.svc, src.port)
	}
	return c
}

// serviceEndpoints lists the endpoints of one Service port from its
// EndpointSlices; the target port is found through the slice port that has
// the Service port's name.
func (r *resolver) serviceEndpoints(svc *corev1.Service, sp corev1.ServicePort) []*weftv1.Endpoint {
	esl := slices.Clone(r.ix.slices[objKey{svc.Namespace, svc.Name}])
	slices.SortFunc(esl, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	seen := map[ipPort]bool{}
	var out []*weftv1.Endpoint
	for _, es := range esl {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		port := int32(-1)
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name != sp.Name || p.Port == nil {
				continue
			}
			if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
				continue
			}
			port = *p.Port
			break
		}
		if port < 1 || port > 65535 {
			continue
		}
		for i := range es.Endpoints {
			ep := &es.Endpoints[i]
			for _, ip := range ep.Addresses {
				ip = canonicalIP(ip)
				k := ipPort{ip, port}
				if ip == "" || seen[k] {
					continue
				}
				// Without its pod the endpoint has no identity to check
				// over mTLS; it joins once the pod is known.
				pod := r.endpointPod(es.Namespace, ep, ip)
				if pod == nil || r.spiffeID(pod.Namespace, pod.ServiceAccountName) == "" {
					continue
				}
				seen[k] = true
				out = append(out, r.endpoint(ip, port, ep, pod))
			}
		}
	}
	sortEndpoints(out)
	return out
}

func (r *resolver) endpointPod(ns string, ep *discoveryv1.Endpoint, ip string) *Pod {
	switch k, byIP, ok := podRef(ns, ep, ip); {
	case !ok:
		return nil
	case byIP:
		return r.ix.podByIP(k.ns, k.name)
	default:
		return r.ix.pod(k.ns, k.name)
	}
}

// podRef is how endpoint ep, at ip (canonical) of an EndpointSlice in ns,
// names its pod: by namespace and name (its target reference), or, with
// none, by namespace and IP (byIP: key.name is the IP); ok is false when
// it names something else than a pod.
func podRef(ns string, ep *discoveryv1.Endpoint, ip string) (key objKey, byIP, ok bool) {
	ref := ep.TargetRef
	switch {
	case ref == nil:
		return objKey{ns, ip}, true, true
	case ref.Kind != "" && ref.Kind != "Pod":
		return objKey{}, false, false
	}
	return objKey{cmp.Or(ref.Namespace, ns), ref.Name}, false, true
}

func (r *resolver) endpoint(ip string, port int32, ep *discoveryv1.Endpoint, pod *Pod) *weftv1.Endpoint {
	e := &weftv1.Endpoint{Ip: ip, Port: uint32(port), Ready: true}
	if ep.Conditions.Ready != nil {
		e.Ready = *ep.Conditions.Ready
	}
	e.Serving = e.Ready
	if ep.Conditions.Serving != nil {
		e.Serving = *ep.Conditions.Serving
	}
	if ep.Conditions.Terminating != nil {
		e.Terminating = *ep.Conditions.Terminating
	}
	if ep.NodeName != nil {
		e.Node = *ep.NodeName
	}
	e.Pod = pod.Namespace + "/" + pod.Name
	e.Identity = r.spiffeID(pod.Namespace, pod.ServiceAccountName)
	e.Plaintext = !r.podEnrolled(pod)
	if e.Node == "" {
		e.Node = pod.NodeName
	}
	return e
}

type ipPort struct {
	ip   string
	port int32
}

// selectorEndpoints lists the pods an EndpointSelector XBackend selects.
func (r *resolver) selectorEndpoints(xb *gwxv1a1.XBackend) []*weftv1.Endpoint {
	port := int32(xb.Spec.Port.Number)
	var out []*weftv1.Endpoint
	seen := map[ipPort]bool{}
	for _, p := range r.ix.nsPods(xb.Namespace) {
		if !selects(xb.Spec.EndpointSelector.MatchLabels, p.Labels) {
			continue
		}
		if p.Phase == corev1.PodSucceeded || p.Phase == corev1.PodFailed {
			continue
		}
		ready := p.Ready() == corev1.ConditionTrue
		terminating := p.DeletionTimestamp != nil
		id := r.spiffeID(p.Namespace, p.ServiceAccountName)
		if id == "" {
			continue
		}
		for _, ip := range podIPs(p) {
			if ip = canonicalIP(ip); ip == "" {
				continue
			}
			k := ipPort{ip, port}
			if seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, &weftv1.Endpoint{
				Ip: ip, Port: uint32(port), Node: p.NodeName, Pod: p.Namespace + "/" + p.Name,
				Identity: id, Plaintext: !r.podEnrolled(p),
				Ready: ready && !terminating, Serving: ready, Terminating: terminating,
			})
		}
	}
	sortEndpoints(out)
	return out
}

func selects(sel map[gwv1.LabelKey]gwv1.LabelValue, labels map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[string(k)]; !ok || got != string(v) {
			return false
		}
	}
	return true
}

func sortEndpoints(eps []*weftv1.Endpoint) {
	slices.SortFunc(eps, func(a, b *weftv1.Endpoint) int {
		return cmp.Or(strings.Compare(a.Ip, b.Ip), cmp.Compare(a.Port, b.Port))
	})
}

// appProtocol maps a Service port appProtocol (GEP-1911, KEP-3726) to the
// protocol the proxy speaks to it; unspecified means "as the caller".
func appProtocol(p *string) weftv1.Protocol {
	if p == nil {
		return weftv1.Protocol_PROTOCOL_UNSPECIFIED
	}
	switch strings.ToLower(*p) {
	case "http", "kubernetes.io/ws", "http1", "http/1.1":
		return weftv1.Protocol_PROTOCOL_HTTP
	case "kubernetes.io/h2c", "h2c", "http2":
		return weftv1.Protocol_PROTOCOL_H2C
	case "grpc":
		return weftv1.Protocol_PROTOCOL_GRPC
	case "tcp", "https", "tls", "kubernetes.io/wss", "mysql", "redis", "mongo", "postgres", "postgresql":
		return weftv1.Protocol_PROTOCOL_TCP
	}
	return weftv1.Protocol_PROTOCOL_UNSPECIFIED
}

// backendProtocol maps an XBackend protocol; false when unsupported.
func backendProtocol(p *gwxv1a1.BackendProtocol) (weftv1.Protocol, bool) {
	if p == nil {
		return weftv1.Protocol_PROTOCOL_UNSPECIFIED, true
	}
	switch *p {
	case gwxv1a1.BackendProtocolHTTP, gwxv1a1.BackendProtocolHTTP11:
		return weftv1.Protocol_PROTOCOL_HTTP, true
	case gwxv1a1.BackendProtocolH2C:
		return weftv1.Protocol_PROTOCOL_H2C, true
	case gwxv1a1.BackendProtocolGRPC:
		return weftv1.Protocol_PROTOCOL_GRPC, true
	case gwxv1a1.BackendProtocolTCP:
		return weftv1.Protocol_PROTOCOL_TCP, true
	}
	return weftv1.Protocol_PROTOCOL_UNSPECIFIED, false
}

// protocolMismatch says why a route kind cannot send to a backend that
// declares protocol p; "" when it can (GEP-1911: the backend is then
// invalid, ResolvedRefs=False UnsupportedProtocol).
func protocolMismatch(k routeKind, p weftv1.Protocol) string {
	switch {
	case k == kindGRPC && p == weftv1.Protocol_PROTOCOL_HTTP:
		return "which is HTTP/1.1 and cannot carry gRPC; declare kubernetes.io/h2c or grpc"
	case (k == kindGRPC || k == kindHTTP) && p == weftv1.Protocol_PROTOCOL_TCP:
		return fmt.Sprintf("which is not HTTP, so a %s cannot send to it; use a TCPRoute or fix appProtocol", k)
	}
	return ""
}
