package mesh

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodWorkload(t *testing.T) {
	owned := func(kind, name string, labels map[string]string) *corev1.Pod {
		ctrl := true
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "pod-x7k2q", Labels: labels,
			OwnerReferences: []metav1.OwnerReference{
				{Kind: "ConfigMap", Name: "not-a-controller"},
				{Kind: kind, Name: name, Controller: &ctrl},
			}}}
	}
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		kind, want string
	}{
		{"deployment", owned("ReplicaSet", "cart-5d8f7c9b6", map[string]string{"pod-template-hash": "5d8f7c9b6"}), KindDeployment, "cart"},
		{"bare replicaset", owned("ReplicaSet", "cart-rs", nil), KindReplicaSet, "cart-rs"},
		{"replicaset whose name lacks the hash", owned("ReplicaSet", "cart-rs", map[string]string{"pod-template-hash": "abc"}), KindReplicaSet, "cart-rs"},
		{"statefulset", owned("StatefulSet", "db", nil), KindStatefulSet, "db"},
		{"daemonset", owned("DaemonSet", "logs", nil), KindDaemonSet, "logs"},
		{"job", owned("Job", "migrate", nil), KindJob, "migrate"},
		{"cronjob", owned("Job", "report-29051460", nil), KindCronJob, "report"},
		{"job with a non-numeric suffix", owned("Job", "migrate-v2", nil), KindJob, "migrate-v2"},
		{"other controller", owned("Rollout", "web", nil), "Rollout", "web"},
		{"no owner", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug"}}, KindPod, "debug"},
		{"owner that is not a controller", &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug",
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "x"}}}}, KindPod, "debug"},
	} {
		kind, name := PodWorkload(tc.pod)
		if kind != tc.kind || name != tc.want {
			t.Errorf("%s: PodWorkload = %s %q, want %s %q", tc.name, kind, name, tc.kind, tc.want)
		}
	}
}
