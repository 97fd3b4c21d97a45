package cni

import (
	"context"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/api/mesh"
)

// Decision says whether a pod is to be enrolled, and why not.
type Decision struct {
	Enroll bool
	Reason string
}

// Decider decides whether the pod of a request is in the mesh.
type Decider interface {
	Decide(ctx context.Context, r Request) (Decision, error)
}

// KubeDecider reads the pod and its namespace from the API server and
// applies mesh.PodEnrolled. An API server it cannot reach is an error
// (ErrTryAgainLater): the sandbox is not set up, never set up unmeshed.
type KubeDecider struct {
	Kube kubernetes.Interface
}

// Decide implements Decider.
func (k KubeDecider) Decide(ctx context.Context, r Request) (Decision, error) {
	pod, err := k.Kube.CoreV1().Pods(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
	if err != nil {
		return Decision{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weft agent: cannot read pod %s/%s to decide its enrollment", r.Namespace, r.Name), err.Error())
	}
	if string(pod.UID) != r.UID {
		return Decision{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weft agent: pod %s/%s has UID %s, not %s (replaced?)", r.Namespace, r.Name, pod.UID, r.UID), "")
	}
	ns, err := k.Kube.CoreV1().Namespaces().Get(ctx, r.Namespace, metav1.GetOptions{})
	if err != nil {
		return Decision{}, types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("weft agent: cannot read namespace %s to decide enrollment", r.Namespace), err.Error())
	}
	return decide(ns, pod), nil
}

// decide is the pure decision (api/mesh holds the rule).
func decide(ns *corev1.Namespace, pod *corev1.Pod) Decision {
	if !mesh.NamespaceEnrolled(ns) {
		return Decision{Reason: fmt.Sprintf("namespace %s is not annotated %s=%s", ns.Name, mesh.AnnotationMesh, mesh.MeshEnabled)}
	}
	if !mesh.PodEnrolled(true, pod) {
		return Decision{Reason: "pod opted out (" + mesh.AnnotationMesh + "=" + mesh.MeshDisabled + "), hostNetwork or finished"}
	}
	return Decision{Enroll: true}
}
