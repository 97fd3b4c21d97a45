package gatewayclass

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weft-mesh/weft/api/mesh"
)

func class(name, controller string) *gwv1.GatewayClass {
	return &gwv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       gwv1.GatewayClassSpec{ControllerName: gwv1.GatewayController(controller)},
	}
}

func creates(c *fake.Clientset) int {
	n := 0
	for _, a := range c.Actions() {
		if a.GetVerb() == "create" {
			n++
		}
	}
	return n
}

func TestEnsure(t *testing.T) {
	owner := metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "weft-controller", UID: "u1"}
	for _, tc := range []struct {
		name     string
		existing []runtime.Object
		owner    func(context.Context) (metav1.OwnerReference, error)
		created  bool
		wantErr  string
		owned    bool
	}{
		{name: "none: created with its owner", created: true, owned: true,
			owner: func(context.Context) (metav1.OwnerReference, error) { return owner, nil }},
		{name: "owner unreadable: created without one", created: true,
			owner: func(context.Context) (metav1.OwnerReference, error) {
				return metav1.OwnerReference{}, errors.New("forbidden")
			}},
		{name: "other controllers only", created: true, existing: []runtime.Object{class("istio", "istio.io/gateway-controller")}},
		{name: "ours under another name: nothing", existing: []runtime.Object{class("edge", mesh.GatewayControllerName)}},
		{name: "name taken by another controller", existing: []runtime.Object{class("weft", "example.com/gw")}, wantErr: "taken by another controller"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientset(tc.existing...)
			e, err := New(Config{Client: c, Owner: tc.owner})
			if err != nil {
				t.Fatal(err)
			}
			created, err := e.Ensure(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || created != tc.created {
				t.Fatalf("created %v, err %v; want %v", created, err, tc.created)
			}
			if !tc.created {
				if n := creates(c); n != 0 {
					t.Errorf("%d creates, want none", n)
				}
				return
			}
			got, err := c.GatewayV1().GatewayClasses().Get(context.Background(), mesh.GatewayClassName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Spec.ControllerName != mesh.GatewayControllerName {
				t.Errorf("controllerName %q", got.Spec.ControllerName)
			}
			if tc.owned != (len(got.OwnerReferences) == 1 && got.OwnerReferences[0] == owner) {
				t.Errorf("owners %+v, owned want %v", got.OwnerReferences, tc.owned)
			}
			// Idempotent: the next round finds it.
			if created, err := e.Ensure(context.Background()); created || err != nil {
				t.Errorf("second Ensure: created %v, err %v", created, err)
			}
		})
	}
}

func TestEnsureListError(t *testing.T) {
	c := fake.NewClientset()
	c.PrependReactor("list", "gatewayclasses", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("boom")
	})
	e, _ := New(Config{Client: c})
	if _, err := e.Ensure(context.Background()); err == nil {
		t.Fatal("no error from a failed list")
	}
	if creates(c) != 0 {
		t.Error("created a class without knowing the cluster has none")
	}
}

// The replicas start as followers: the class is created within about a second of
// one becoming the leader, not one long Interval later.
func TestRunCreatesSoonAfterLeadership(t *testing.T) {
	cs := fake.NewSimpleClientset()
	var leader atomic.Bool
	e, err := New(Config{Client: cs, IsLeader: leader.Load, Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Run(ctx)
	time.Sleep(1500 * time.Millisecond)
	if n := creates(cs); n != 0 {
		t.Fatalf("a follower created %d classes", n)
	}
	leader.Store(true)
	deadline := time.Now().Add(3 * time.Second)
	for creates(cs) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no class 3s after becoming the leader (Interval is an hour)")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
