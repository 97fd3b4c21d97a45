// Package owner names the object that owns what the controller creates at run
// time (the CA's Secret and bundle, the default XMesh and GatewayClass, the
// election Lease): the controller's ClusterRole, so that the garbage collector
// removes those objects when Weft is uninstalled (helm uninstall keeps the CRDs
// and the namespace).
package owner

import (
	"context"
	"fmt"
	"log/slog"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/api/logkey"
)

// Func returns the owner reference for new objects; a nil Func means none.
type Func func(ctx context.Context) (metav1.OwnerReference, error)

// ClusterRole returns the Func of the named ClusterRole (nil when name is empty).
// The reference does not block the owner's deletion (that would need the
// finalizers permission). Namespaced and cluster-scoped objects may both have a
// cluster-scoped owner.
func ClusterRole(kube kubernetes.Interface, name string) Func {
	if name == "" {
		return nil
	}
	return func(ctx context.Context) (metav1.OwnerReference, error) {
		cr, err := kube.RbacV1().ClusterRoles().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return metav1.OwnerReference{}, fmt.Errorf("get owner ClusterRole %s: %w", name, err)
		}
		return metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: cr.Name, UID: cr.UID}, nil
	}
}

// Refs returns the owner references of a new object: f's, or none when f is nil
// or cannot read its owner. The object is created anyway (it is needed); the log
// says, naming what, that an uninstall will leave it behind.
func (f Func) Refs(ctx context.Context, log *slog.Logger, what string) []metav1.OwnerReference {
	if f == nil {
		return nil
	}
	ref, err := f(ctx)
	if err != nil {
		log.Warn(what+" gets no owner: an uninstall will leave it behind", logkey.Error, err)
		return nil
	}
	return []metav1.OwnerReference{ref}
}
