package source

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	"sigs.k8s.io/gateway-api/pkg/consts"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/resolve"
)

// change is what an update of a watched object asks of the controller.
//
// The controller is level-based: a resolution reads the whole current
// snapshot, never the event. An event only decides WHETHER to resolve, and
// for that it is compared on exactly the fields controller/resolve reads.
// Everything else that changes on a live cluster (Node status heartbeats,
// resourceVersion, managedFields, pod container statuses, condition
// timestamps, our own status writes) costs no resolution.
//
// When resolve starts reading a new field, add it to the kind's comparison
// below; TestIgnoredFieldsDoNotChangeResolution checks that what is ignored
// here leaves the resolver's output alone.
type change int

const (
	// changeNone: nothing resolution or the status writer reads changed.
	changeNone change = iota
	// changeStatus: only the status of a route or policy changed (our own
	// write, or another writer's). Statuses are compared again with what
	// the last resolution decided; nothing is resolved.
	changeStatus
	// changeReadiness: only a pod's Ready condition changed. The mesh's
	// resolution reads it for EndpointSelector XBackends alone, the
	// Gateways' for their data plane pods; Changes.Readiness lets a round
	// without those reuse the last one's workloads and clusters.
	changeReadiness
	// changeResolve: something resolution reads changed.
	changeResolve
)

// classify compares two versions of one watched object. Objects of a kind
// it does not know, or of two different types, are changeResolve.
func classify(oldObj, newObj any) change {
	switch o := oldObj.(type) {
	case *corev1.Node:
		n, ok := newObj.(*corev1.Node)
		return resolveIf(!ok || nodeChanged(o, n))
	case *resolve.Pod:
		n, ok := newObj.(*resolve.Pod)
		switch {
		case !ok || podChanged(o, n):
			return changeResolve
		case o.Ready() != n.Ready():
			return changeReadiness
		}
		return changeNone
	case *corev1.ServiceAccount:
		n, ok := newObj.(*corev1.ServiceAccount)
		return resolveIf(!ok || serviceAccountChanged(o, n))
	case *unstructured.Unstructured:
		n, ok := newObj.(*unstructured.Unstructured)
		if !ok {
			return changeResolve
		}
		return authzChanged(o, n)
	case *corev1.Namespace:
		n, ok := newObj.(*corev1.Namespace)
		return resolveIf(!ok || namespaceChanged(o, n))
	case *corev1.Service:
		n, ok := newObj.(*corev1.Service)
		return resolveIf(!ok || serviceChanged(o, n))
	case *discoveryv1.EndpointSlice:
		n, ok := newObj.(*discoveryv1.EndpointSlice)
		return resolveIf(!ok || sliceChanged(o, n))
	case *gwv1.HTTPRoute:
		return specStatusChange(o, newObj, func(x *gwv1.HTTPRoute) (*metav1.ObjectMeta, any, any) { return &x.ObjectMeta, x.Spec, x.Status })
	case *gwv1.GRPCRoute:
		return specStatusChange(o, newObj, func(x *gwv1.GRPCRoute) (*metav1.ObjectMeta, any, any) { return &x.ObjectMeta, x.Spec, x.Status })
	case *gwv1.TCPRoute:
		return specStatusChange(o, newObj, func(x *gwv1.TCPRoute) (*metav1.ObjectMeta, any, any) { return &x.ObjectMeta, x.Spec, x.Status })
	case *gwxv1a1.XBackendTrafficPolicy:
		return specStatusChange(o, newObj, func(x *gwxv1a1.XBackendTrafficPolicy) (*metav1.ObjectMeta, any, any) {
			return &x.ObjectMeta, x.Spec, x.Status
		})
	case *gwv1.TLSRoute:
		return specStatusChange(o, newObj, func(x *gwv1.TLSRoute) (*metav1.ObjectMeta, any, any) { return &x.ObjectMeta, x.Spec, x.Status })
	case *gwv1.Gateway:
		return specStatusChange(o, newObj, func(x *gwv1.Gateway) (*metav1.ObjectMeta, any, any) { return &x.ObjectMeta, x.Spec, x.Status })
	case *gwv1.GatewayClass:
		return specStatusChange(o, newObj, func(x *gwv1.GatewayClass) (*metav1.ObjectMeta, any, any) { return &x.ObjectMeta, x.Spec, x.Status })
	case *gwv1.BackendTLSPolicy:
		return specStatusChange(o, newObj, func(x *gwv1.BackendTLSPolicy) (*metav1.ObjectMeta, any, any) { return &x.ObjectMeta, x.Spec, x.Status })
	case *gwv1.ReferenceGrant:
		n, ok := newObj.(*gwv1.ReferenceGrant)
		return resolveIf(!ok || !equality.Semantic.DeepEqual(o.Spec, n.Spec))
	case *corev1.Secret:
		n, ok := newObj.(*corev1.Secret)
		return resolveIf(!ok || o.Type != n.Type || !equality.Semantic.DeepEqual(o.Data, n.Data))
	case *corev1.ConfigMap:
		n, ok := newObj.(*corev1.ConfigMap)
		return resolveIf(!ok || !equality.Semantic.DeepEqual(o.Data, n.Data))
	case *metav1.PartialObjectMetadata:
		// CRDs: resolution reads their bundle-version annotation.
		n, ok := newObj.(*metav1.PartialObjectMetadata)
		return resolveIf(!ok || o.Annotations[consts.BundleVersionAnnotation] != n.Annotations[consts.BundleVersionAnnotation])
	case *gwxv1a1.XBackend:
		// Resolution reads the spec; Weft writes no XBackend status.
		n, ok := newObj.(*gwxv1a1.XBackend)
		return resolveIf(!ok || !equality.Semantic.DeepEqual(o.Spec, n.Spec))
	}
	return changeResolve
}

func resolveIf(changed bool) change {
	if changed {
		return changeResolve
	}
	return changeNone
}

// specOrStatus classifies a route or policy: resolution reads its name,
// generation (observedGeneration), creation time (precedence) and spec; the
// status writer reads its status. Labels, annotations and the rest of the
// metadata are read by neither.
func specOrStatus(om, nm *metav1.ObjectMeta, oSpec, nSpec, oStatus, nStatus any) change {
	switch {
	case om.Generation != nm.Generation || !om.CreationTimestamp.Equal(&nm.CreationTimestamp) ||
		!equality.Semantic.DeepEqual(oSpec, nSpec):
		return changeResolve
	case !equality.Semantic.DeepEqual(oStatus, nStatus):
		return changeStatus
	}
	return changeNone
}

// nodeChanged: resolution reads a Node's name and its InternalIP
// addresses (the tunnel address), never its conditions, heartbeats,
// capacity, images or labels.
func nodeChanged(o, n *corev1.Node) bool {
	return !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses)
}

// podChanged: resolution reads a pod's UID, labels (XBackend selectors),
// mesh and mTLS annotations, node, service account, hostNetwork, phase, IPs
// and whether it is terminating, and whether it is Ready (changeReadiness,
// not compared here); never container statuses, condition timestamps or
// other annotations. Cached pods are the slim resolve.Pod (strip), which
// keeps no more than these and the metadata.
func podChanged(o, n *resolve.Pod) bool {
	return o.UID != n.UID ||
		!equality.Semantic.DeepEqual(o.Labels, n.Labels) ||
		o.Annotations[mesh.AnnotationMesh] != n.Annotations[mesh.AnnotationMesh] ||
		!sameAnnotation(o.Annotations, n.Annotations, mesh.AnnotationMTLS) ||
		(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
		o.NodeName != n.NodeName ||
		o.ServiceAccountName != n.ServiceAccountName ||
		o.HostNetwork != n.HostNetwork ||
		o.Phase != n.Phase ||
		o.PodIP != n.PodIP ||
		!equality.Semantic.DeepEqual(o.PodIPs, n.PodIPs)
}

// namespaceChanged: the mesh reads whether a namespace is enrolled and its
// mTLS mode; the Gateway resolution its labels (listeners' allowedRoutes
// selectors).
func namespaceChanged(o, n *corev1.Namespace) bool {
	return o.Annotations[mesh.AnnotationMesh] != n.Annotations[mesh.AnnotationMesh] ||
		!sameAnnotation(o.Annotations, n.Annotations, mesh.AnnotationMTLS) ||
		!equality.Semantic.DeepEqual(o.Labels, n.Labels)
}

// sameAnnotation: key is absent from both or has one value in both (an
// empty value is not the same as none).
func sameAnnotation(o, n map[string]string, key string) bool {
	ov, ook := o[key]
	nv, nok := n[key]
	return ook == nok && ov == nv
}

// serviceChanged: resolution reads a Service's spec (type, cluster IPs,
// ports, session affinity) and, for a Gateway's own Service, its load
// balancer status (the Gateway's addresses). The whole spec is compared:
// it changes only when someone edits it. Metadata is ignored.
func serviceChanged(o, n *corev1.Service) bool {
	return !equality.Semantic.DeepEqual(o.Spec, n.Spec) ||
		!equality.Semantic.DeepEqual(o.Status.LoadBalancer, n.Status.LoadBalancer)
}

// sliceChanged: resolution reads a slice's Service label, address type,
// ports and endpoints (addresses, conditions, node, target pod).
func sliceChanged(o, n *discoveryv1.EndpointSlice) bool {
	return o.Labels[discoveryv1.LabelServiceName] != n.Labels[discoveryv1.LabelServiceName] ||
		o.AddressType != n.AddressType ||
		!equality.Semantic.DeepEqual(o.Ports, n.Ports) ||
		!equality.Semantic.DeepEqual(o.Endpoints, n.Endpoints)
}

// specStatusChange compares an object with its update of the same kind by spec and
// status (specOrStatus); parts picks them out. An update of another type resolves.
func specStatusChange[T any](o *T, newObj any, parts func(*T) (*metav1.ObjectMeta, any, any)) change {
	n, ok := newObj.(*T)
	if !ok {
		return changeResolve
	}
	om, ospec, ostatus := parts(o)
	nm, nspec, nstatus := parts(n)
	return specOrStatus(om, nm, ospec, nspec, ostatus, nstatus)
}
