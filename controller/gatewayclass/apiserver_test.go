package gatewayclass

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/test/kubetest"
)

// Against a real apiserver with the pinned CRDs: the CRD's validation accepts the
// default class, and a deleted class comes back.
func TestIntegrationEnsure(t *testing.T) {
	kc := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gw, err := gwclient.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Client: gw, Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go e.Run(ctx)
	api := gw.GatewayV1().GatewayClasses()
	wait := func(what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			c, err := api.Get(ctx, mesh.GatewayClassName, metav1.GetOptions{})
			if err == nil && c.DeletionTimestamp == nil && c.Spec.ControllerName == mesh.GatewayControllerName {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: GatewayClass %s not there: %v", what, mesh.GatewayClassName, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	wait("created")
	if err := api.Delete(ctx, mesh.GatewayClassName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait("after delete")
}
