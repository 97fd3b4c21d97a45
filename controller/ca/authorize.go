package ca

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/api/mesh"
)

// ErrNotAuthorized: the node has no enrolled pod running as the requested
// service account.
var ErrNotAuthorized = errors.New("identity not authorized for node")

// Pods is what the CA needs to know about the cluster to authorize a
// request. NewAPIPods reads the apiserver directly; the controller may pass
// an implementation backed by its informers' listers instead.
type Pods interface {
	// NodePods returns the pods of namespace bound to node.
	NodePods(ctx context.Context, namespace, node string) ([]*corev1.Pod, error)
	// Namespace returns the namespace, or an error satisfying
	// apierrors.IsNotFound when it does not exist.
	Namespace(ctx context.Context, name string) (*corev1.Namespace, error)
}

// NewAPIPods returns Pods that asks the apiserver on every call (list pods
// with a spec.nodeName field selector). The controller needs list on pods and
// get on namespaces.
func NewAPIPods(client kubernetes.Interface) Pods { return apiPods{client} }

type apiPods struct{ client kubernetes.Interface }

func (a apiPods) NodePods(ctx context.Context, namespace, node string) ([]*corev1.Pod, error) {
	l, err := a.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s on node %s: %w", namespace, node, err)
	}
	out := make([]*corev1.Pod, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out, nil
}

func (a apiPods) Namespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	return a.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
}

// authorize decides whether node may hold the identity of serviceAccount in
// namespace ns, given the namespace object (nil when it does not exist) and
// the pods of ns bound to node: only a pod in the mesh (mesh.PodEnrolled,
// the predicate the resolver hands out identities by) entitles its node to
// its service account's identity. Pure.
func authorize(node, namespace string, ns *corev1.Namespace, serviceAccount string, pods []*corev1.Pod) error {
	if ns == nil {
		return fmt.Errorf("%w: namespace %s does not exist", ErrNotAuthorized, namespace)
	}
	if !mesh.NamespaceEnrolled(ns) {
		return fmt.Errorf("%w: namespace %s is not enrolled (annotation %s: %s)", ErrNotAuthorized, ns.Name, mesh.AnnotationMesh, mesh.MeshEnabled)
	}
	notInMesh := 0
	for _, p := range pods {
		if p.Spec.NodeName != node || p.Namespace != ns.Name || mesh.PodServiceAccount(p) != serviceAccount {
			continue
		}
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		if !mesh.PodEnrolled(true, p) {
			notInMesh++
			continue
		}
		return nil
	}
	if notInMesh > 0 {
		return fmt.Errorf("%w: the %d pod(s) of service account %s/%s on node %s are not in the mesh (opted out with %s: %s, or hostNetwork)", ErrNotAuthorized, notInMesh, ns.Name, serviceAccount, node, mesh.AnnotationMesh, mesh.MeshDisabled)
	}
	return fmt.Errorf("%w: no running pod of service account %s/%s is bound to node %s", ErrNotAuthorized, ns.Name, serviceAccount, node)
}

// lookupAndAuthorize fetches what authorize needs through pods.
func lookupAndAuthorize(ctx context.Context, pods Pods, node, namespace, serviceAccount string) error {
	ns, err := pods.Namespace(ctx, namespace)
	if apierrors.IsNotFound(err) {
		ns, err = nil, nil
	}
	if err != nil {
		return fmt.Errorf("get namespace %s: %w", namespace, err)
	}
	var list []*corev1.Pod
	if ns != nil {
		if list, err = pods.NodePods(ctx, namespace, node); err != nil {
			return err
		}
	}
	return authorize(node, namespace, ns, serviceAccount, list)
}
