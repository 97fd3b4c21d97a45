// Package resolve turns Kubernetes and Gateway API objects into the policy
// each node's proxy needs and the status of every route. It is pure: plain
// values in, plain values out; no clients, no logging.
package resolve

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"

	"github.com/weft-mesh/weft/api/mesh"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// ControllerName is mesh.ControllerName as the Gateway API type the status
// writer compares and writes.
const ControllerName gwv1.GatewayController = mesh.ControllerName

// Options are the settings of one resolution.
type Options struct {
	// TrustDomain of SPIFFE IDs; mesh.DefaultTrustDomain when empty.
	TrustDomain string
	// TunnelPort of every node's inbound proxy; mesh.TunnelPort when zero.
	TunnelPort uint32
	// MaxNodeRegexProgramSize lowers the node budget of compiled regular
	// expressions below weftv1.DefaultLimits.MaxNodeRegexProgramSize (the
	// agent's, which a larger value cannot raise); zero: the default.
	MaxNodeRegexProgramSize int
}

// Input is a consistent snapshot of every object resolution reads.
// Resolution never modifies it, nor any object it points to: Pods,
// EndpointSlices and routes are the informer cache's own (a copy of 100k
// pods by value was 118 MB of the controller's live heap at issue #17's
// scale; patching a by-value listing of 20,000 HTTPRoutes and 10,000
// EndpointSlices allocated 800 MB per scale benchmark run). Pods are the
// cache's slim Pods (PodOf), not corev1.Pods.
type Input struct {
	Options        Options
	Namespaces     []corev1.Namespace
	Nodes          []corev1.Node
	Services       []corev1.Service
	EndpointSlices []*discoveryv1.EndpointSlice
	Pods           []*Pod
	// PodsSorted: Pods are sorted by namespace, then name, as the source
	// lists them; a pod is then found by binary search (checking the
	// order would read all 100k of them every round).
	PodsSorted             bool
	HTTPRoutes             []*gwv1.HTTPRoute
	GRPCRoutes             []*gwv1.GRPCRoute
	TCPRoutes              []*gwv1.TCPRoute
	BackendTrafficPolicies []gwxv1a1.XBackendTrafficPolicy
	Backends               []gwxv1a1.XBackend
	AuthorizationPolicies  []policyv1a1.AuthorizationPolicy
	// ServiceAccounts, when not nil, are every ServiceAccount of the
	// cluster: an AuthorizationPolicy source naming another one is
	// UnknownServiceAccount. Nil: not checked.
	ServiceAccounts []corev1.ServiceAccount
	// AuthzInForce is Output.AuthzInForce of the previous round (by
	// policy UID): an AuthorizationPolicy that stops compiling keeps its
	// last accepted generation in force. Nil on a controller's first round.
	AuthzInForce map[types.UID]*AuthzInForce
	// Reuse, when set, holds parts of an earlier resolution that the
	// caller knows still hold for this Input; the Output is the same with
	// or without it, only cheaper (and its reused units are the same
	// objects, which the push server compares by pointer first).
	Reuse *Reuse
}

// ReadsPodReadiness reports whether resolving in reads whether pods are
// Ready: only an EndpointSelector XBackend's endpoints are pods (every
// other endpoint's readiness is its EndpointSlice's). A change of nothing
// but pods' readiness leaves the Output of an Input without one as it was.
func (in *Input) ReadsPodReadiness() bool {
	for i := range in.Backends {
		if in.Backends[i].Spec.Type == gwxv1a1.BackendTypeEndpointSelector {
			return true
		}
	}
	return false
}

// Reuse is what a resolution may take from an earlier one. Which parts
// are valid is for the caller to know: it sees what changed in between.
type Reuse struct {
	// Clusters sorted by name, as a node's policy has them (see cluster).
	// Valid when Services, Pods, Namespaces and XBackends (and the trust
	// domain) are unchanged since they were built; the clusters of the
	// Services in StaleServices ("namespace/name": their EndpointSlices
	// changed), and after ReusePods those naming a changed pod, are built
	// again. XBackend clusters are always built again.
	Clusters      []*weftv1.Cluster
	StaleServices map[string]bool
	// Workloads by node and InvalidMTLS of an earlier Output, used when
	// WorkloadsValid: Pods and Namespaces (and the trust domain) are
	// unchanged. After ReusePods, Workloads are those of the nodes no
	// changed pod was or is on.
	Workloads      map[string][]*weftv1.Workload
	InvalidMTLS    []string
	WorkloadsValid bool
	// Previous is the earlier Output; with OnlyEndpoints (nothing but the
	// EndpointSlices of StaleServices changed since it was resolved) it is
	// the result but for the stale Services' clusters, and routes are not
	// compiled again.
	Previous      *Output
	OnlyEndpoints bool
	// RoutesValid: Services, XBackends, XBackendTrafficPolicies and
	// Namespaces (and the Options) are unchanged; a route whose object has
	// the same UID and resourceVersion as when the earlier resolution
	// compiled it is taken from there, not compiled again.
	RoutesValid bool
	// OnlyRoutes: nothing but routes (HTTPRoutes, GRPCRoutes,
	// TCPRoutes) and the EndpointSlices of StaleServices changed since
	// Previous was resolved; then only the Service ports the changed
	// routes claim, before or now, are attached again (RoutesValid and
	// WorkloadsValid must be set too).
	OnlyRoutes bool
	// OnlyPods: nothing but the pods ReusePods was given and the
	// EndpointSlices of StaleServices changed since Previous was
	// resolved; then only what those pods reach is resolved again.
	OnlyPods bool
	// OnlyAuthz: nothing but AuthorizationPolicies changed since Previous
	// was resolved (WorkloadsValid must be set too); then only
	// authorization is resolved again.
	OnlyAuthz bool
	// routes are the earlier resolution's compiled routes, ports its
	// Service ports, statuses its route statuses.
	routes   compiledRoutes
	ports    builtPorts
	statuses builtStatuses
	maps     *listingMaps
	// pods is set by ReusePods: the pods that changed
	pods *podChanges
}

// podChanges are the pods that changed since the Reuse's resolution, by
// namespace and name and by namespace and IP (the two ways an endpoint
// finds its pod), and the nodes they were and are on.
type podChanges struct {
	keys, ips map[objKey]bool
	nodes     map[string]bool
}

// ReuseOf returns what a later resolution may reuse of out: its clusters
// (every node with workloads shares them), workloads and out itself. The
// caller sets StaleServices, WorkloadsValid, OnlyEndpoints and
// RoutesValid.
func ReuseOf(out Output) *Reuse {
	r := &Reuse{Workloads: map[string][]*weftv1.Workload{}, InvalidMTLS: out.InvalidMTLS, Previous: &out, routes: out.routes, ports: out.ports, statuses: out.statuses, maps: out.maps}
	for n, p := range out.Nodes {
		if len(p.Workloads) > 0 {
			r.Workloads[n] = p.Workloads
		}
		// every node that has clusters has the same, sorted slice: taken
		// as it is, not indexed into a map each round
		if len(r.Clusters) == 0 {
			r.Clusters = p.Clusters
		}
	}
	return r
}

// ReusePods returns what of r a resolution may reuse after pods changed
// (added, deleted, or changed in what resolution reads) and nothing else
// but routes and the EndpointSlices of staleServices: the compiled
// routes, which read no pod, and, when changed lists those pods (each as
// it was and as it is), the clusters whose endpoints name none of them
// and the workloads of the nodes none of them was or is on. Nil changed:
// every cluster and workload is built again.
func ReusePods(r *Reuse, changed []*Pod, staleServices map[string]bool) *Reuse {
	out := &Reuse{RoutesValid: true, routes: r.routes, ports: r.ports, statuses: r.statuses, maps: r.maps}
	if changed == nil {
		return out
	}
	pc := &podChanges{keys: map[objKey]bool{}, ips: map[objKey]bool{}, nodes: map[string]bool{}}
	for _, p := range changed {
		pc.keys[objKey{p.Namespace, p.Name}] = true
		pc.nodes[p.NodeName] = true
		for _, ip := range podIPs(p) {
			pc.ips[objKey{p.Namespace, canonicalIP(ip)}] = true
		}
	}
	out.Clusters, out.StaleServices, out.Workloads, out.pods, out.Previous = r.Clusters, staleServices, r.Workloads, pc, r.Previous
	return out
}

// cluster is the reused cluster named n, nil when there is none.
func (r *Reuse) cluster(n string) *weftv1.Cluster {
	i, ok := weftv1.SearchClusters(r.Clusters, n)
	if !ok {
		return nil
	}
	return r.Clusters[i]
}

// Output is everything resolution decided.
type Output struct {
	// Policy per node name. TrustAnchors are left empty: the controller
	// fills them with WithTrustAnchors.
	Nodes map[string]*weftv1.NodePolicy
	// Status of every route (and policy) Weft has an opinion about, sorted
	// by Kind, Namespace, Name.
	Statuses []ObjectStatus
	// AuthzStatuses of every AuthorizationPolicy, by namespace and name.
	AuthzStatuses []AuthzStatus
	// AuthzInForce is what every AuthorizationPolicy enforces now, by UID:
	// the next round's Input.AuthzInForce.
	AuthzInForce map[types.UID]*AuthzInForce
	// InvalidMTLS has one message per enrolled pod whose weft.dev/mtls
	// annotation (its own or its namespace's) is neither "strict" nor
	// "permissive", sorted. Such a pod is made strict (fail safe); the
	// controller reports these.
	InvalidMTLS []string
	// routes are the routes compiled, ports the Service ports and
	// statuses the route statuses built, for a later resolution to reuse
	// (ReuseOf).
	routes   compiledRoutes
	ports    builtPorts
	statuses builtStatuses
	// maps are the Services and EndpointSlices maps of the index it was
	// resolved with, for the next resolution (ReuseOf) to take over.
	maps *listingMaps
	// delta is what an incremental resolution after a route change
	// builds on (resolveRoutes), nil when it cannot.
	delta *deltaState
}

// ObjectStatus is what Weft wants in one object's status.
type ObjectStatus struct {
	// "HTTPRoute", "GRPCRoute", "TCPRoute", "XBackendTrafficPolicy".
	Kind       string
	Namespace  string
	Name       string
	Generation int64
	// One entry per parentRef (routes) or ancestor (policies) that names a
	// Service, in spec order.
	Parents []ParentStatus
}

// ParentStatus is the set of conditions for one parentRef. Conditions carry
// Type, Status, Reason, Message and ObservedGeneration; LastTransitionTime
// is left zero for the status writer to manage.
type ParentStatus struct {
	Ref        gwv1.ParentReference
	Conditions []metav1.Condition
}
