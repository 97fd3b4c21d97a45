package controller

import (
	"context"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/controller/owner"
	"github.com/weft-mesh/weft/test/kubetest"
)

// The election Lease is owned by the controller's ClusterRole, so the garbage
// collector removes it on uninstall: created with the owner, or given it when an
// earlier version created it without; once, however often it is asked.
func TestIntegrationLeaseOwned(t *testing.T) {
	kc := kubetest.Start(t)
	ctx := context.Background()
	cr, err := kc.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "weft-controller"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kc.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	leases := kc.Client.CoordinationV1().Leases("weft-system")
	if _, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "old"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"new", "old"} {
		c := &Controller{cfg: Config{Namespace: "weft-system", LeaseName: name}, kube: kc.Client, owner: owner.ClusterRole(kc.Client, "weft-controller")}
		for range 2 {
			if err := c.ownLease(ctx); err != nil {
				t.Fatalf("lease %s: %v", name, err)
			}
		}
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(l.OwnerReferences) != 1 || l.OwnerReferences[0].UID != cr.UID || l.OwnerReferences[0].Kind != "ClusterRole" {
			t.Errorf("lease %s owners %+v, want the ClusterRole %s once", name, l.OwnerReferences, cr.UID)
		}
	}
}
