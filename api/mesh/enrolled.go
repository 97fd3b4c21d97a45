package mesh

import corev1 "k8s.io/api/core/v1"

// NamespaceEnrolled reports whether ns enrolls its pods (AnnotationMesh is
// MeshEnabled). A nil namespace (one that does not exist) is not enrolled.
func NamespaceEnrolled(ns *corev1.Namespace) bool {
	return ns != nil && ns.Annotations[AnnotationMesh] == MeshEnabled
}

// PodEnrolled reports whether p is in the mesh, given whether its namespace
// is enrolled (NamespaceEnrolled): it is bound to a node, not opted out
// (AnnotationMesh: MeshDisabled), not hostNetwork (it would share the node
// proxy's network namespace) and not finished (phase Succeeded or Failed).
// A terminating pod stays in the mesh: it keeps calling out while it
// drains. Only a pod in the mesh gets an identity.
func PodEnrolled(namespaceEnrolled bool, p *corev1.Pod) bool {
	return p != nil && PodFieldsEnrolled(namespaceEnrolled, p.Annotations, p.Spec.NodeName, p.Spec.HostNetwork, p.Status.Phase)
}

// PodFieldsEnrolled is PodEnrolled of a pod given by the fields it reads:
// the pod's annotations, spec.nodeName, spec.hostNetwork and status.phase.
// It is for pods kept as another type than corev1.Pod (the controller's
// slim resolve.Pod), which must be enrolled by the very same predicate.
func PodFieldsEnrolled(namespaceEnrolled bool, annotations map[string]string, nodeName string, hostNetwork bool, phase corev1.PodPhase) bool {
	switch {
	case !namespaceEnrolled:
		return false
	case annotations[AnnotationMesh] == MeshDisabled:
		return false
	case hostNetwork || nodeName == "":
		return false
	case phase == corev1.PodSucceeded || phase == corev1.PodFailed:
		return false
	}
	return true
}

// PodServiceAccount is the service account p runs as (DefaultServiceAccount
// when the spec names none).
func PodServiceAccount(p *corev1.Pod) string {
	return ServiceAccountOrDefault(p.Spec.ServiceAccountName)
}

// ServiceAccountOrDefault is PodServiceAccount of a pod whose
// spec.serviceAccountName is name.
func ServiceAccountOrDefault(name string) string {
	if name == "" {
		return DefaultServiceAccount
	}
	return name
}
