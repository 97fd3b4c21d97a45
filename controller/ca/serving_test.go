package ca

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestServingCertificateFollowsRotation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, err := f.ca.ServingCertificate(ServingConfig{}); err == nil {
		t.Fatal("serving certificate without DNS names")
	}
	get, err := f.ca.ServingCertificate(ServingConfig{DNSNames: []string{"weft-controller.weft-system.svc"}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := get(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if leaf.DNSNames[0] != "weft-controller.weft-system.svc" || leaf.URIs[0].String() != "spiffe://cluster.local/ns/weft-system/sa/weft-controller" || leaf.IsCA {
		t.Fatalf("serving certificate SANs %v %v", leaf.DNSNames, leaf.URIs)
	}
	if again, _ := get(nil); again != first {
		t.Fatal("reissued before half-life")
	}
	f.now = f.now.Add(13 * time.Hour)
	renewed, _ := get(nil)
	if renewed == first {
		t.Fatal("not reissued after half-life")
	}
	if err := f.ca.StageRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if again, _ := get(nil); again != renewed {
		t.Fatal("staging a root changed the serving certificate")
	}
	if err := f.ca.ActivateRoot(ctx); err != nil {
		t.Fatal(err)
	}
	rotated, _ := get(nil)
	if rotated == renewed || rotated.Leaf.CheckSignatureFrom(f.ca.Anchors()[1]) != nil {
		t.Fatal("serving certificate not reissued by the new signer")
	}
}

func TestPublishBundle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	read := func() string {
		cm, err := f.ca.cfg.Client.CoreV1().ConfigMaps("weft-system").Get(ctx, DefaultBundleConfigMap, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return cm.Data["ca.crt"]
	}
	if err := f.ca.PublishBundle(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), string(certsPEM(f.ca.Anchors())); got != want {
		t.Fatal("published bundle differs from the anchors")
	}
	if err := f.ca.StageRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.ca.PublishBundle(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if certs, err := parseCerts([]byte(read())); err != nil || len(certs) != 2 {
		t.Fatalf("published bundle after staging has %d roots (%v), want 2", len(certs), err)
	}
}

// TestCreatedObjectsAreOwned: the root Secret and the bundle ConfigMap the CA creates
// carry Config.Owner's reference (the garbage collector removes them on uninstall).
func TestCreatedObjectsAreOwned(t *testing.T) {
	ctx := context.Background()
	ref := metav1.OwnerReference{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole", Name: "weft-controller", UID: "u-1"}
	client := fake.NewClientset()
	c, err := New(Config{Client: client, Namespace: "weft-system", Logger: discard,
		Owner: func(context.Context) (metav1.OwnerReference, error) { return ref, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishBundle(ctx, ""); err != nil {
		t.Fatal(err)
	}
	s, err := client.CoreV1().Secrets("weft-system").Get(ctx, DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm, err := client.CoreV1().ConfigMaps("weft-system").Get(ctx, DefaultBundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for what, got := range map[string][]metav1.OwnerReference{"secret": s.OwnerReferences, "configmap": cm.OwnerReferences} {
		if len(got) != 1 || got[0] != ref {
			t.Errorf("%s owner references %+v, want %+v", what, got, ref)
		}
	}
}
