package mesh

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Kinds PodWorkload returns.
const (
	KindDeployment  = "Deployment"
	KindReplicaSet  = "ReplicaSet"
	KindStatefulSet = "StatefulSet"
	KindDaemonSet   = "DaemonSet"
	KindJob         = "Job"
	KindCronJob     = "CronJob"
	KindPod         = "Pod"
)

// labelPodTemplateHash is set by a Deployment's ReplicaSets on their pods;
// the ReplicaSet is named <deployment>-<hash>.
const labelPodTemplateHash = "pod-template-hash"

// PodWorkload names the workload a pod belongs to, from its controller
// owner reference alone (no other object is read): a ReplicaSet created by a
// Deployment gives the Deployment (the ReplicaSet's name less the pod's
// pod-template-hash suffix), a Job created by a CronJob gives the CronJob
// (the Job's name less its numeric schedule suffix), a StatefulSet,
// DaemonSet, Job or bare ReplicaSet gives itself, and a pod with no
// controller is its own workload. Metrics label callers with it: its
// cardinality is that of the cluster's workloads, not of their pods.
//
// p is a pod's metadata: a *corev1.Pod, or any other pod type embedding
// metav1.ObjectMeta (the controller's resolve.Pod).
func PodWorkload(p metav1.Object) (kind, name string) {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return KindPod, p.GetName()
	}
	switch ref.Kind {
	case KindReplicaSet:
		if h := p.GetLabels()[labelPodTemplateHash]; h != "" {
			if d, ok := strings.CutSuffix(ref.Name, "-"+h); ok && d != "" {
				return KindDeployment, d
			}
		}
		return KindReplicaSet, ref.Name
	case KindJob:
		if i := strings.LastIndexByte(ref.Name, '-'); i > 0 && isDigits(ref.Name[i+1:]) {
			return KindCronJob, ref.Name[:i]
		}
		return KindJob, ref.Name
	}
	return ref.Kind, ref.Name
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
