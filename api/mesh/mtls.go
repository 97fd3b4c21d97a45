package mesh

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationMTLS sets a workload's mTLS mode, on a Namespace (every pod of
// it) or on a Pod (that pod; it overrides the namespace). Only a pod in the
// mesh (PodEnrolled) can be strict: on any other pod it changes nothing, as
// no mesh path would be left to reach it. A strict pod is reached through
// its Services' cluster IPs (which the mesh redirects); a caller that dials
// its pod IP directly (a headless Service, a StatefulSet's pod DNS name) is
// refused, meshed or not.
const AnnotationMTLS = "weft.dev/mtls"

// Values of AnnotationMTLS.
const (
	// MTLSStrict: the pod accepts TCP connections only through its node
	// proxy's inbound (mTLS from a mesh peer); plaintext connections from
	// outside the mesh are refused by the datapath. The node's kubelet
	// still reaches the pod (its probes come from the node's own address,
	// from outside the pods' cgroup).
	MTLSStrict = "strict"
	// MTLSPermissive (the default): the pod also accepts plaintext
	// connections from outside the mesh.
	MTLSPermissive = "permissive"
)

// ProxyDialMark is the SO_MARK the node proxy sets on the sockets it dials
// pods with; the datapath lets a connect to a strict pod through only when
// (mark & ProxyDialMarkMask) == ProxyDialMark. Bits 16-23: clear of
// kube-proxy's 0x4000 (masquerade) and 0x8000 (drop) bits and of Cilium's
// 0x0f00 magic.
const (
	ProxyDialMark     uint32 = 0x00570000
	ProxyDialMarkMask uint32 = 0x00ff0000
)

// PodMTLSStrict reports whether p requires mTLS, given its namespace (nil
// when unknown): the pod's AnnotationMTLS when set, else the namespace's,
// else permissive. A value other than MTLSStrict or MTLSPermissive fails
// safe: the pod is strict, and err says which annotation is invalid so the
// controller can report it. p is a pod's metadata: a *corev1.Pod, or any
// other pod type embedding metav1.ObjectMeta (the controller's resolve.Pod).
func PodMTLSStrict(ns *corev1.Namespace, p metav1.Object) (strict bool, err error) {
	if v, ok := p.GetAnnotations()[AnnotationMTLS]; ok {
		return mtlsValue(v, "pod")
	}
	if ns != nil {
		if v, ok := ns.Annotations[AnnotationMTLS]; ok {
			return mtlsValue(v, "namespace "+ns.Name)
		}
	}
	return false, nil
}

func mtlsValue(v, where string) (bool, error) {
	switch v {
	case MTLSStrict:
		return true, nil
	case MTLSPermissive:
		return false, nil
	}
	return true, fmt.Errorf("%s annotation %s=%q is neither %q nor %q; treated as %q",
		where, AnnotationMTLS, v, MTLSStrict, MTLSPermissive, MTLSStrict)
}
