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
	switch {
	case !namespaceEnrolled || p == nil:
		return false
	case p.Annotations[AnnotationMesh] == MeshDisabled:
		return false
	case p.Spec.HostNetwork || p.Spec.NodeName == "":
		return false
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		return false
	}
	return true
}

// PodServiceAccount is the service account p runs as (DefaultServiceAccount
// when the spec names none).
func PodServiceAccount(p *corev1.Pod) string {
	if p.Spec.ServiceAccountName == "" {
		return DefaultServiceAccount
	}
	return p.Spec.ServiceAccountName
}
