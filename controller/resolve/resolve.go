package resolve

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// objKey names a namespaced object.
type objKey struct{ ns, name string }

func (k objKey) String() string { return k.ns + "/" + k.name }

// index holds the input objects keyed the way resolution looks them up.
type index struct {
	opts     Options
	td       spiffeid.TrustDomain
	enrolled map[string]bool
	// namespaces by name (their annotations decide enrollment and mTLS).
	namespaces map[string]*corev1.Namespace
	services   map[objKey]*corev1.Service
	slices     map[objKey][]*discoveryv1.EndpointSlice
	// podsByNS (and pods, for input not sorted) are built on first use
	// (podMaps): a round that reuses clusters and workloads may never look
	// a pod up, and there can be 100k of them.
	pods     map[objKey]*Pod
	podsByNS map[string][]*Pod
	in       *Input
	only     map[string]bool
	backends map[objKey]*gwxv1a1.XBackend
	// byIP maps namespace/ip to a pod, built on first use.
	byIP map[objKey]*Pod
}

// podByIP finds the pod that owns an IP in a namespace.
func (ix *index) podByIP(ns, ip string) *Pod {
	ix.podMaps()
	if ix.byIP == nil {
		ix.byIP = map[objKey]*Pod{}
		for ns, pods := range ix.podsByNS {
			for _, p := range pods {
				if p.HostNetwork {
					continue
				}
				for _, pip := range podIPs(p) {
					if k := (objKey{ns, canonicalIP(pip)}); ix.byIP[k] == nil || p.Name < ix.byIP[k].Name {
						ix.byIP[k] = p
					}
				}
			}
		}
	}
	return ix.byIP[objKey{ns, ip}]
}

func newIndex(in *Input) *index { return newIndexIn(in, nil) }

// listingMaps are an index's maps of Services and of EndpointSlices, kept
// for the next resolution: it takes a map over when its listing is the very
// slice the map was built from (the source hands out the same slice while
// nothing of that kind changed). At issue #17's scale building them was
// 1.7 MB of garbage and 20,000 map inserts per round, route changes included.
type listingMaps struct {
	services builtFrom[corev1.Service, map[objKey]*corev1.Service]
	slices   builtFrom[*discoveryv1.EndpointSlice, map[objKey][]*discoveryv1.EndpointSlice]
}

// builtFrom is a map m and the listing it indexes, known by the address
// of its first element and its length (a patched listing is a new slice
// even where its elements are the same pointers). It keeps the listing's
// array alive: the map points into it (Services) or holds the same
// objects (EndpointSlices, whose array is then only pointers).
type builtFrom[E, M any] struct {
	first *E
	n     int
	m     M
}

func newBuiltFrom[E, M any](s []E, m M) builtFrom[E, M] {
	b := builtFrom[E, M]{n: len(s), m: m}
	if len(s) > 0 {
		b.first = &s[0]
	}
	return b
}

// of reports whether s is the listing the map was built from.
func (b *builtFrom[E, M]) of(s []E) bool {
	return b.n == len(s) && (len(s) == 0 && b.first == nil || len(s) > 0 && &s[0] == b.first)
}

// maps returns the index's listing maps, nil when it indexes only some
// namespaces.
func (ix *index) maps() *listingMaps {
	if ix.only != nil {
		return nil
	}
	return &listingMaps{services: newBuiltFrom(ix.in.Services, ix.services), slices: newBuiltFrom(ix.in.EndpointSlices, ix.slices)}
}

// podMaps builds podsByNS (and pods) the first time they are needed. With
// Input.PodsSorted (the source lists pods sorted by namespace and name) a
// namespace's pods are a range of the list, found by binary search, and
// pods stays nil (a pod is found by binary search in its namespace's
// range). A round of endpoint churn otherwise hashed 100,000 pods into two
// maps to look up a few dozen.
func (ix *index) podMaps() {
	if ix.podsByNS != nil {
		return
	}
	ix.podsByNS = map[string][]*Pod{}
	pods := ix.in.Pods
	if ix.in.PodsSorted {
		for i := 0; i < len(pods); {
			ns := pods[i].Namespace
			j := i + sort.Search(len(pods)-i, func(k int) bool { return pods[i+k].Namespace > ns })
			if ix.only == nil || ix.only[ns] {
				ix.podsByNS[ns] = pods[i:j:j]
			}
			i = j
		}
		return
	}
	ix.pods = map[objKey]*Pod{}
	for _, p := range pods {
		if ix.only != nil && !ix.only[p.Namespace] {
			continue
		}
		ix.pods[objKey{p.Namespace, p.Name}] = p
		ix.podsByNS[p.Namespace] = append(ix.podsByNS[p.Namespace], p)
	}
}

func comparePods(a, b *Pod) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// pod is the pod namespace/name.
func (ix *index) pod(ns, name string) *Pod {
	ix.podMaps()
	if ix.pods != nil {
		return ix.pods[objKey{ns, name}]
	}
	in := ix.podsByNS[ns]
	if i, ok := slices.BinarySearchFunc(in, name, func(p *Pod, name string) int { return strings.Compare(p.Name, name) }); ok {
		return in[i]
	}
	return nil
}

// nsPods are the pods of a namespace.
func (ix *index) nsPods(ns string) []*Pod {
	ix.podMaps()
	return ix.podsByNS[ns]
}

// newIndexIn is newIndex of the Services, EndpointSlices and pods of the
// namespaces in only (all when nil), and of every namespace and backend.
func newIndexIn(in *Input, only map[string]bool) *index {
	ix := &index{
		opts:       in.Options,
		enrolled:   map[string]bool{},
		namespaces: map[string]*corev1.Namespace{},
		services:   map[objKey]*corev1.Service{},
		slices:     map[objKey][]*discoveryv1.EndpointSlice{},
		backends:   map[objKey]*gwxv1a1.XBackend{},
	}
	td, err := mesh.ParseTrustDomain(ix.opts.TrustDomain)
	if err != nil {
		td, _ = mesh.ParseTrustDomain("")
	}
	ix.td, ix.opts.TrustDomain = td, td.Name()
	if ix.opts.TunnelPort == 0 || ix.opts.TunnelPort > 65535 {
		ix.opts.TunnelPort = mesh.TunnelPort
	}
	for i := range in.Namespaces {
		ns := &in.Namespaces[i]
		ix.namespaces[ns.Name] = ns
		if mesh.NamespaceEnrolled(ns) {
			ix.enrolled[ns.Name] = true
		}
	}
	var prev *listingMaps
	if in.Reuse != nil && only == nil {
		prev = in.Reuse.maps
	}
	if prev != nil && prev.services.of(in.Services) {
		ix.services = prev.services.m
	} else {
		for i := range in.Services {
			s := &in.Services[i]
			if only != nil && !only[s.Namespace] {
				continue
			}
			ix.services[objKey{s.Namespace, s.Name}] = s
		}
	}
	if prev != nil && prev.slices.of(in.EndpointSlices) {
		ix.slices = prev.slices.m
	} else {
		for _, es := range in.EndpointSlices {
			svc := es.Labels[discoveryv1.LabelServiceName]
			if svc == "" || only != nil && !only[es.Namespace] {
				continue
			}
			k := objKey{es.Namespace, svc}
			ix.slices[k] = append(ix.slices[k], es)
		}
	}
	ix.in, ix.only = in, only
	for i := range in.Backends {
		b := &in.Backends[i]
		ix.backends[objKey{b.Namespace, b.Name}] = b
	}
	return ix
}

// compileAll compiles every route of in, in precedence order (oldest first,
// then namespace/name: attachment, conflict resolution and table building
// all walk routes in this order). permitted, unless nil, decides backend
// references to other namespaces (see CompileTable).
func compileAll(in *Input, permitted RefPermitted) (*resolver, []*route) {
	// about as many clusters as last time: sized once, not grown
	nc := 0
	if in.Reuse != nil {
		nc = len(in.Reuse.Clusters)
	}
	r := &resolver{ix: newIndex(in), clusters: make(map[string]*clusterSource, nc), clusterNames: make(map[svcPort]string, nc), clusterRefs: make(map[string]int, nc), ids: map[objKey]string{}, permitted: permitted}
	r.policies = r.indexPolicies(in.BackendTrafficPolicies)
	n := len(in.HTTPRoutes) + len(in.GRPCRoutes) + len(in.TCPRoutes)
	if in.Reuse != nil && in.Reuse.RoutesValid {
		r.prevRoutes, r.prevPorts, r.prevStatuses = in.Reuse.routes, in.Reuse.ports, in.Reuse.statuses
	}
	r.nextRoutes = newLayered[routeKey, *compiledRoute](n)
	r.nextPorts = newLayered[portKey, builtPort](r.prevPorts.len())
	r.nextStatuses = newLayered[*compiledRoute, builtStatus](n)
	routes := make([]*route, 0, n)
	for _, hr := range in.HTTPRoutes {
		routes = append(routes, r.compiled(kindHTTP, &hr.ObjectMeta, func() *route { return r.compileHTTPRoute(hr) }))
	}
	for _, gr := range in.GRPCRoutes {
		routes = append(routes, r.compiled(kindGRPC, &gr.ObjectMeta, func() *route { return r.compileGRPCRoute(gr) }))
	}
	for _, tr := range in.TCPRoutes {
		routes = append(routes, r.compiled(kindTCP, &tr.ObjectMeta, func() *route { return r.compileTCPRoute(tr) }))
	}
	slices.SortStableFunc(routes, compareRoutes)
	return r, routes
}

// Resolve turns one consistent snapshot of objects into the policy of every
// node and the status of every route and policy. It is pure and
// deterministic: the same Input always gives an equal Output.
func Resolve(in Input) Output {
	if in.Reuse != nil && in.Reuse.OnlyEndpoints && in.Reuse.Previous != nil {
		if out, ok := resolveEndpoints(&in); ok {
			return out
		}
	}
	if rv := in.Reuse; rv != nil && rv.OnlyPods && rv.pods != nil && rv.Previous != nil {
		if out, ok := resolvePods(&in); ok {
			return out
		}
	}
	if rv := in.Reuse; rv != nil && rv.OnlyAuthz && rv.WorkloadsValid && rv.Previous != nil {
		if out, ok := resolveAuthzOnly(&in); ok {
			return out
		}
	}
	if rv := in.Reuse; rv != nil && rv.OnlyRoutes && rv.RoutesValid && rv.WorkloadsValid && rv.Previous != nil && rv.Previous.delta != nil {
		if out, ok := resolveRoutes(&in); ok {
			return out
		}
	}
	r, routes := compileAll(&in, nil)
	ix := r.ix
	// authorization first: its regular expressions take their share of the
	// node budget before routes are fitted into the rest
	var workloads map[string][]*weftv1.Workload
	var invalidMTLS []string
	if in.Reuse != nil && in.Reuse.WorkloadsValid {
		workloads, invalidMTLS = in.Reuse.Workloads, in.Reuse.InvalidMTLS
	} else {
		workloads, invalidMTLS = r.workloadsByNode(in.Pods, in.Reuse)
	}
	authz, authzStatuses, authzInForce := r.resolveAuthz(&in, workloads)

	ports, claims, dropped := r.attachWithinBudget(routes)
	services := r.buildServicePorts(ports)

	out := Output{Nodes: map[string]*weftv1.NodePolicy{}, maps: ix.maps()}
	clusters := r.buildClusters(in.Reuse)
	tunnels := nodeTunnels(in.Nodes, ix.opts.TunnelPort)
	for i := range in.Nodes {
		n := in.Nodes[i].Name
		if n == "" {
			continue
		}
		p := &weftv1.NodePolicy{
			Node:        n,
			TrustDomain: ix.opts.TrustDomain,
			Workloads:   workloads[n],
			Authz:       authz[n],
		}
		// What a node's pods can use: a node with no enrolled workload has
		// no caller to route for and nothing to deliver to, so it gets no
		// Services, Clusters or tunnels (at 10k Services, megabytes it
		// would otherwise hold and receive every change of). Its first
		// enrolled pod brings them in the same version as its workload,
		// which is what releases the pod's held connections.
		if len(p.Workloads) > 0 {
			p.Services, p.Clusters, p.NodeTunnels = services, clusters, tunnels
		}
		out.Nodes[n] = p
	}
	out.Statuses = r.statuses(routes)
	out.AuthzStatuses, out.AuthzInForce = authzStatuses, authzInForce
	out.InvalidMTLS = invalidMTLS
	out.routes, out.ports, out.statuses = r.nextRoutes, r.nextPorts, r.nextStatuses
	out.delta = r.newDeltaState(routes, claims, dropped, services, clusters)
	return out
}

// resolver carries the state of one resolution.
type resolver struct {
	ix       *index
	policies *policyIndex
	// clusters referenced so far, by Cluster.name.
	clusters map[string]*clusterSource
	// clusterNames caches the name of a Service port's cluster.
	clusterNames map[svcPort]string
	// clusterRefs, when not nil, counts the uses of each cluster
	// (deltaState.clusterRefs).
	clusterRefs map[string]int
	// ids caches SPIFFE IDs by namespace/service account.
	ids map[objKey]string
	// permitted decides cross-namespace backend references (CompileTable);
	// nil permits them all, as mesh routes are.
	permitted RefPermitted
	// authzRegex is the program size of the distinct regular expressions
	// of the authorization policies in force (routes get the rest)
	authzRegex int
	// prevRoutes are the reused resolution's compiled routes (nil: none
	// may be reused); nextRoutes this one's, for the next.
	prevRoutes, nextRoutes compiledRoutes
	// prevPorts are the reused resolution's Service ports (nil: none may
	// be reused); nextPorts this one's, for the next.
	prevPorts, nextPorts builtPorts
	// prevStatuses are the reused resolution's route statuses (nil: none
	// may be reused); nextStatuses this one's, for the next.
	prevStatuses, nextStatuses builtStatuses
	// recording: a route is being compiled, and recorded receives the
	// clusters it registers.
	recording bool
	recorded  []clusterUse
}

type svcPort struct {
	svc  *corev1.Service
	port int32
}

// spiffeID is the identity of a service account; "" when the names cannot
// form a SPIFFE ID (never the case for names the API server accepted).
func (r *resolver) spiffeID(ns, sa string) string {
	if sa == "" {
		sa = mesh.DefaultServiceAccount
	}
	k := objKey{ns, sa}
	if id, ok := r.ids[k]; ok {
		return id
	}
	id := ""
	if sid, err := mesh.WorkloadID(r.ix.td, ns, sa); err == nil {
		id = sid.String()
	}
	r.ids[k] = id
	return id
}

// ErrInvalidTrustDomain is returned by ValidateOptions.
var ErrInvalidTrustDomain = errors.New("invalid trust domain")

// ValidateOptions checks Options; callers validate their configuration once
// at startup. Resolve itself falls back to mesh.DefaultTrustDomain for an
// invalid trust domain and to mesh.TunnelPort for an invalid port.
func ValidateOptions(o Options) error {
	if _, err := mesh.ParseTrustDomain(o.TrustDomain); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidTrustDomain, err)
	}
	if o.TunnelPort > 65535 {
		return fmt.Errorf("tunnel port %d is out of range 1-65535", o.TunnelPort)
	}
	return nil
}

// podEnrolled reports whether a pod's traffic is redirected into the proxy:
// it is in the mesh (mesh.PodFieldsEnrolled: mesh.PodEnrolled, the
// predicate the CA authorizes by) and has an address to redirect from yet.
func (r *resolver) podEnrolled(p *Pod) bool {
	return mesh.PodFieldsEnrolled(r.ix.enrolled[p.Namespace], p.Annotations, p.NodeName, p.HostNetwork, p.Phase) && len(podIPs(p)) > 0
}

func podIPs(p *Pod) []string {
	var ips []string
	for _, ip := range p.PodIPs {
		if ip != "" && !slices.Contains(ips, ip) {
			ips = append(ips, ip)
		}
	}
	if p.PodIP != "" && !slices.Contains(ips, p.PodIP) {
		ips = append([]string{p.PodIP}, ips...)
	}
	return ips
}

// workloadsByNode lists the enrolled pods of every node as workloads, with
// their mTLS mode (mesh.PodMTLSStrict). invalid holds one message per pod
// whose mTLS annotation (its own or its namespace's) is invalid, sorted;
// such a pod fails safe to strict.
func (r *resolver) workloadsByNode(pods []*Pod, reuse *Reuse) (out map[string][]*weftv1.Workload, invalid []string) {
	out = map[string][]*weftv1.Workload{}
	// after pods changed on some nodes only, the others' are as they were
	var stale map[string]bool
	if reuse != nil && reuse.pods != nil {
		stale = reuse.pods.nodes
		for n, ws := range reuse.Workloads {
			if !stale[n] {
				out[n] = ws
			}
		}
	}
	for _, p := range pods {
		if !r.podEnrolled(p) {
			continue
		}
		if stale != nil && !stale[p.NodeName] {
			// kept, but every invalid annotation is reported each round
			if _, err := mesh.PodMTLSStrict(r.ix.namespaces[p.Namespace], p); err != nil &&
				r.spiffeID(p.Namespace, mesh.ServiceAccountOrDefault(p.ServiceAccountName)) != "" {
				invalid = append(invalid, fmt.Sprintf("pod %s/%s: %v", p.Namespace, p.Name, err))
			}
			continue
		}
		sa := mesh.ServiceAccountOrDefault(p.ServiceAccountName)
		id := r.spiffeID(p.Namespace, sa)
		if id == "" {
			continue
		}
		kind, owner := mesh.PodWorkload(p)
		strict, err := mesh.PodMTLSStrict(r.ix.namespaces[p.Namespace], p)
		if err != nil {
			invalid = append(invalid, fmt.Sprintf("pod %s/%s: %v", p.Namespace, p.Name, err))
		}
		out[p.NodeName] = append(out[p.NodeName], &weftv1.Workload{
			Namespace:      p.Namespace,
			Name:           p.Name,
			Uid:            string(p.UID),
			ServiceAccount: sa,
			Identity:       id,
			Ips:            podIPs(p),
			Workload:       owner,
			WorkloadKind:   kind,
			MtlsStrict:     strict,
		})
	}
	for n, ws := range out {
		if stale != nil && !stale[n] {
			continue // kept as it was, sorted
		}
		slices.SortFunc(ws, func(a, b *weftv1.Workload) int {
			return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name), strings.Compare(a.Uid, b.Uid))
		})
	}
	slices.Sort(invalid)
	return out, invalid
}

// nodeTunnels maps every node with a valid InternalIP to its tunnel
// address. IPv4 addresses are preferred over IPv6 ones.
func nodeTunnels(nodes []corev1.Node, port uint32) map[string]string {
	out := map[string]string{}
	for i := range nodes {
		n := &nodes[i]
		var best netip.Addr
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			ip, err := netip.ParseAddr(a.Address)
			if err != nil || ip.Zone() != "" {
				continue
			}
			ip = ip.Unmap()
			if !best.IsValid() || (ip.Is4() && !best.Is4()) {
				best = ip
			}
		}
		if n.Name != "" && best.IsValid() && port > 0 && port < 65536 {
			out[n.Name] = netip.AddrPortFrom(best, uint16(port)).String()
		}
	}
	return out
}
