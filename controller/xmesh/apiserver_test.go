package xmesh

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/controller/resolve"
	"github.com/weft-mesh/weft/test/kubetest"
)

// Against a real apiserver with the pinned experimental CRDs: the status subresource
// and the CRD's validation of supportedFeatures are the real ones.
func TestIntegrationReconcile(t *testing.T) {
	kc := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gw, err := gwclient.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	api := gw.ExperimentalV1alpha1().XMeshes()
	for _, m := range []string{"weft", "other"} {
		ctrl := string(resolve.ControllerName)
		if m == "other" {
			ctrl = "example.com/mesh"
		}
		if _, err := api.Create(ctx, mesh(m, ctrl, 0), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := New(Config{Client: gw, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go r.Run(ctx)

	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := api.Get(ctx, "weft", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		acc := meta.FindStatusCondition(m.Status.Conditions, "Accepted")
		if acc != nil && acc.Status == metav1.ConditionTrue && acc.ObservedGeneration == m.Generation && len(m.Status.SupportedFeatures) == len(SupportedFeatures) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("XMesh weft not accepted with its features: %+v", m.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Level-based and idempotent: no further writes once the status is right.
	before, _ := api.Get(ctx, "weft", metav1.GetOptions{})
	time.Sleep(500 * time.Millisecond)
	after, _ := api.Get(ctx, "weft", metav1.GetOptions{})
	if before.ResourceVersion != after.ResourceVersion {
		t.Errorf("status rewritten although unchanged (resourceVersion %s -> %s)", before.ResourceVersion, after.ResourceVersion)
	}
	other, err := api.Get(ctx, "other", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The CRD defaults Accepted to Unknown/Pending; it must stay so.
	if acc := meta.FindStatusCondition(other.Status.Conditions, "Accepted"); (acc != nil && acc.Status != metav1.ConditionUnknown) || len(other.Status.SupportedFeatures) != 0 {
		t.Errorf("another controller's XMesh got a status from weft: %+v", other.Status)
	}
}
