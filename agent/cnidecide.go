package agent

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/agent/cni"
	"github.com/weft-mesh/weft/api/mesh"
)

// kubeDecider reads the pod and its namespace from the API server and
// applies mesh.PodEnrolled. An API server it cannot reach is an error
// (ErrTryAgainLater): the sandbox is not set up, never set up unmeshed.
type kubeDecider struct {
	kube kubernetes.Interface
}

// Decide implements cni.Decider.
func (k kubeDecider) Decide(ctx context.Context, r cni.Request) (cni.Decision, error) {
	pod, err := k.kube.CoreV1().Pods(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
	if err != nil {
		return cni.Decision{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weft agent: cannot read pod %s/%s to decide its enrollment", r.Namespace, r.Name), err.Error())
	}
	if string(pod.UID) != r.UID {
		return cni.Decision{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weft agent: pod %s/%s has UID %s, not %s (replaced?)", r.Namespace, r.Name, pod.UID, r.UID), "")
	}
	ns, err := k.kube.CoreV1().Namespaces().Get(ctx, r.Namespace, metav1.GetOptions{})
	if err != nil {
		return cni.Decision{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weft agent: cannot read namespace %s to decide enrollment", r.Namespace), err.Error())
	}
	return decideEnrollment(ns, pod), nil
}

// decide is the pure decision (api/mesh holds the rule).
func decideEnrollment(ns *corev1.Namespace, pod *corev1.Pod) cni.Decision {
	if !mesh.NamespaceEnrolled(ns) {
		return cni.Decision{Reason: fmt.Sprintf("namespace %s is not annotated %s=%s", ns.Name, mesh.AnnotationMesh, mesh.MeshEnabled)}
	}
	if !mesh.PodEnrolled(true, pod) {
		return cni.Decision{Reason: "pod opted out (" + mesh.AnnotationMesh + "=" + mesh.MeshDisabled + "), hostNetwork or finished"}
	}
	return cni.Decision{Enroll: true}
}
