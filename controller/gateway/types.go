package gateway

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/resolve"
)

// ControllerName is the controllerName of Weft's GatewayClasses, and the
// one Weft writes into every route parent and policy ancestor status that
// concerns a Gateway. (Mesh statuses carry resolve.ControllerName.)
const ControllerName gwv1.GatewayController = mesh.GatewayControllerName

// ClassName is the name of the GatewayClass Weft installs. Any class with
// ControllerName is Weft's, whatever its name.
const ClassName = mesh.GatewayClassName

// Options are the settings of one resolution that do not come from objects.
type Options struct {
	// Mesh are the mesh settings backend endpoints are resolved with
	// (trust domain of their identities, tunnel port).
	Mesh resolve.Options
	// BundleVersions maps every installed Gateway API CRD (by name) to its
	// gateway.networking.k8s.io/bundle-version annotation, "" when it has
	// none. GatewayClass SupportedVersion is derived from it.
	BundleVersions map[string]string
	// SupportedFeatures are published in the status of every accepted
	// GatewayClass (what the conformance run proves).
	SupportedFeatures []gwv1.FeatureName
	// ReservedPorts cannot be listener ports: the gateway data plane uses
	// them itself (a listener there is PortUnavailable).
	ReservedPorts []int32
}

// Provisioned is what provisioning (elsewhere) reports about the data
// plane of one Gateway.
type Provisioned struct {
	Namespace, Name string
	// Addresses the data plane can be reached on (its Service's load
	// balancer ingress or cluster IP), in the order to publish them.
	Addresses []gwv1.GatewayStatusAddress
	// Unusable maps a requested spec.addresses value to why it cannot be
	// assigned (for example: not in the load balancer's pool, in use).
	Unusable map[string]string
	// ReadyPods counts the data plane's Ready pods: a pod is Ready once it
	// applied the Gateway's configuration. With none the Gateway is not
	// Programmed, whatever its addresses.
	ReadyPods int
	// Workload names the data plane's pods for messages ("Deployment
	// infra/gw-weft-gateway").
	Workload string
	// Refused is why the data plane refused its newest configuration (its
	// NACK); "" while it applies what it was sent.
	Refused string
}

// Input is a consistent snapshot of every object this package reads. It
// is never modified, nor any object it points to: routes, EndpointSlices
// and Pods are the informer cache's own.
type Input struct {
	Options            Options
	GatewayClasses     []gwv1.GatewayClass
	Gateways           []gwv1.Gateway
	HTTPRoutes         []*gwv1.HTTPRoute
	GRPCRoutes         []*gwv1.GRPCRoute
	TLSRoutes          []*gwv1.TLSRoute
	TCPRoutes          []*gwv1.TCPRoute
	ReferenceGrants    []gwv1.ReferenceGrant
	BackendTLSPolicies []gwv1.BackendTLSPolicy
	Namespaces         []corev1.Namespace
	Secrets            []corev1.Secret
	ConfigMaps         []corev1.ConfigMap
	// Services, EndpointSlices, Pods, XBackends and XBackendTrafficPolicies
	// resolve backends exactly as the mesh does (clusters, endpoints,
	// session persistence).
	Services               []corev1.Service
	EndpointSlices         []*discoveryv1.EndpointSlice
	Pods                   []*resolve.Pod
	Backends               []gwxv1a1.XBackend
	BackendTrafficPolicies []gwxv1a1.XBackendTrafficPolicy
	// Provisioned reports the data plane of each Gateway; a Gateway
	// without an entry is not provisioned yet.
	Provisioned []Provisioned
}

// Output is everything this package decided. Conditions carry Type,
// Status, Reason, Message and ObservedGeneration; LastTransitionTime is
// left zero for the status writer to manage. Every list is sorted.
type Output struct {
	// GatewayClasses holds the status of every class with ControllerName.
	GatewayClasses []GatewayClassStatus
	// Gateways holds the status of every Gateway of such a class.
	Gateways []GatewayStatus
	// Routes holds, for every route with a parentRef to one of those
	// Gateways, one ParentStatus per such parentRef in spec order (Ref is
	// the parentRef as written). Kind is HTTPRoute, GRPCRoute, TLSRoute or
	// TCPRoute. The shape is the mesh's (resolve.ObjectStatus); entries
	// are written with ControllerName next to the mesh's entries, which
	// carry resolve.ControllerName, so a route with both kinds of parent
	// gets both lists, told apart by controllerName and keyed by parentRef.
	Routes []resolve.ObjectStatus
	// Policies holds the status of every BackendTLSPolicy that targets a
	// backend of a route attached to one of those Gateways: Kind
	// "BackendTLSPolicy", one ParentStatus per Gateway (the ancestor).
	Policies []resolve.ObjectStatus
	// IR is the configuration of the data plane of every accepted Gateway.
	IR []*Gateway
}

// GatewayClassStatus is the status Weft wants on one GatewayClass.
type GatewayClassStatus struct {
	Name       string
	Generation int64
	Status     gwv1.GatewayClassStatus
}

// GatewayStatus is the status Weft wants on one Gateway.
type GatewayStatus struct {
	Namespace, Name string
	Generation      int64
	Status          gwv1.GatewayStatus
}

// Kinds of Output.Routes and Output.Policies.
const (
	KindHTTPRoute        = "HTTPRoute"
	KindGRPCRoute        = "GRPCRoute"
	KindTLSRoute         = "TLSRoute"
	KindTCPRoute         = "TCPRoute"
	KindBackendTLSPolicy = "BackendTLSPolicy"
)
