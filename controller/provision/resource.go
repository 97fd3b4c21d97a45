package provision

import (
	"context"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// res is the client of one wanted object: get the live one, create it, or
// update the live one to it (keeping what the cluster assigned).
type res struct {
	get    func(context.Context) (metav1.Object, error)
	create func(context.Context) error
	update func(context.Context, metav1.Object) error
}

func withMeta(live, want metav1.Object) {
	live.SetLabels(want.GetLabels())
	live.SetAnnotations(want.GetAnnotations())
	live.SetOwnerReferences(want.GetOwnerReferences())
}

func resource(kube kubernetes.Interface, obj metav1.Object) res {
	ctx0 := metav1.GetOptions{}
	switch o := obj.(type) {
	case *corev1.ServiceAccount:
		c := kube.CoreV1().ServiceAccounts(o.Namespace)
		return res{
			get:    func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, o.Name, ctx0) },
			create: func(ctx context.Context) error { _, err := c.Create(ctx, o, metav1.CreateOptions{}); return err },
			update: func(ctx context.Context, live metav1.Object) error {
				l := live.(*corev1.ServiceAccount).DeepCopy()
				withMeta(l, o)
				l.AutomountServiceAccountToken = o.AutomountServiceAccountToken
				_, err := c.Update(ctx, l, metav1.UpdateOptions{})
				return err
			},
		}
	case *corev1.ConfigMap:
		c := kube.CoreV1().ConfigMaps(o.Namespace)
		return res{
			get:    func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, o.Name, ctx0) },
			create: func(ctx context.Context) error { _, err := c.Create(ctx, o, metav1.CreateOptions{}); return err },
			update: func(ctx context.Context, live metav1.Object) error {
				l := live.(*corev1.ConfigMap).DeepCopy()
				withMeta(l, o)
				l.Data, l.BinaryData = o.Data, nil
				_, err := c.Update(ctx, l, metav1.UpdateOptions{})
				return err
			},
		}
	case *corev1.Service:
		c := kube.CoreV1().Services(o.Namespace)
		return res{
			get:    func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, o.Name, ctx0) },
			create: func(ctx context.Context) error { _, err := c.Create(ctx, o, metav1.CreateOptions{}); return err },
			update: func(ctx context.Context, live metav1.Object) error {
				l := live.(*corev1.Service).DeepCopy()
				withMeta(l, o)
				l.Spec.Type, l.Spec.Selector = o.Spec.Type, o.Spec.Selector
				l.Spec.Ports = keepNodePorts(l.Spec.Ports, o.Spec.Ports)
				_, err := c.Update(ctx, l, metav1.UpdateOptions{})
				return err
			},
		}
	case *appsv1.Deployment:
		c := kube.AppsV1().Deployments(o.Namespace)
		return res{
			get:    func(ctx context.Context) (metav1.Object, error) { return c.Get(ctx, o.Name, ctx0) },
			create: func(ctx context.Context) error { _, err := c.Create(ctx, o, metav1.CreateOptions{}); return err },
			update: func(ctx context.Context, live metav1.Object) error {
				l := live.(*appsv1.Deployment).DeepCopy()
				withMeta(l, o)
				l.Spec = o.Spec
				_, err := c.Update(ctx, l, metav1.UpdateOptions{})
				return err
			},
		}
	}
	panic("provision: unknown object type")
}

// keepNodePorts returns want with the node ports the cluster assigned to
// live ports of the same name (changing them would break clients).
func keepNodePorts(live, want []corev1.ServicePort) []corev1.ServicePort {
	out := make([]corev1.ServicePort, len(want))
	for i, w := range want {
		for _, l := range live {
			if l.Name == w.Name && l.Port == w.Port {
				w.NodePort = l.NodePort
			}
		}
		out[i] = w
	}
	return out
}
