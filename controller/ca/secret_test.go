package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// intermediate signs a CA certificate for key under parent.
func intermediate(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, key *ecdsa.PrivateKey, isCA bool, now time.Time) *x509.Certificate {
	t.Helper()
	serial, _ := randomSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "intermediate"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(90 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: isCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestUserProvidedIntermediate(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	root, rootKey, err := GenerateRoot(testTD, now, 10*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// cert-manager style: our generated root has path length 0, so build a
	// root that allows one intermediate.
	root.MaxPathLen, root.MaxPathLenZero = 1, false
	serial, _ := randomSerial()
	root.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, root, root, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, _ = x509.ParseCertificate(der)
	interKey := p256(t)
	inter := intermediate(t, root, rootKey, interKey, true, now)
	keyPEM, _ := marshalKey(interKey)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: "weft-system"},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			"tls.crt": certsPEM([]*x509.Certificate{inter}),
			"tls.key": keyPEM,
			"ca.crt":  certsPEM([]*x509.Certificate{root}),
		},
	}
	c, err := New(Config{Client: fake.NewClientset(secret), Namespace: "weft-system",
		Authenticator: tokenNodes{"token-1": "node-1"}, Pods: testCluster(), Now: func() time.Time { return now }, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.Bundle(); len(got) != 1 || string(got[0]) != string(root.Raw) {
		t.Fatal("bundle is not the user's ca.crt")
	}
	key := p256(t)
	resp, err := c.Sign(agentCtx("token-1"), &weftv1.SignRequest{Csr: makeCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/shop/sa/cart")}})})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.CertChain) != 2 || string(resp.CertChain[1]) != string(inter.Raw) {
		t.Fatalf("chain has %d certs, want svid + intermediate", len(resp.CertChain))
	}
	var certs []*x509.Certificate
	for _, d := range resp.CertChain {
		cc, _ := x509.ParseCertificate(d)
		certs = append(certs, cc)
	}
	if _, _, err := x509svid.Verify(certs, x509bundle.FromX509Authorities(testTD, []*x509.Certificate{root}), x509svid.WithTime(now)); err != nil {
		t.Fatalf("svid does not verify against the user's root: %v", err)
	}
	if err := c.StageRoot(context.Background()); !errors.Is(err, ErrUserManaged) {
		t.Fatalf("StageRoot on a user-provided root = %v, want ErrUserManaged", err)
	}
}

func TestBadSecrets(t *testing.T) {
	now := time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)
	root, rootKey, _ := GenerateRoot(testTD, now, 365*24*time.Hour)
	other, otherKey, _ := GenerateRoot(testTD, now, 365*24*time.Hour)
	leafKey := p256(t)
	leaf := intermediate(t, root, rootKey, leafKey, false, now)
	rootKeyPEM, _ := marshalKey(rootKey)
	otherKeyPEM, _ := marshalKey(otherKey)
	leafKeyPEM, _ := marshalKey(leafKey)
	tests := []struct {
		name string
		data map[string][]byte
	}{
		{"empty", map[string][]byte{}},
		{"garbage cert", map[string][]byte{"tls.crt": []byte("junk"), "tls.key": rootKeyPEM}},
		{"no key", map[string][]byte{"tls.crt": certsPEM([]*x509.Certificate{root})}},
		{"key mismatch", map[string][]byte{"tls.crt": certsPEM([]*x509.Certificate{root}), "tls.key": otherKeyPEM}},
		{"not a CA", map[string][]byte{"tls.crt": certsPEM([]*x509.Certificate{leaf}), "tls.key": leafKeyPEM, "ca.crt": certsPEM([]*x509.Certificate{root})}},
		{"does not chain to ca.crt", map[string][]byte{"tls.crt": certsPEM([]*x509.Certificate{root}), "tls.key": rootKeyPEM, "ca.crt": certsPEM([]*x509.Certificate{other})}},
		{"staged root not in bundle", map[string][]byte{"tls.crt": certsPEM([]*x509.Certificate{root}), "tls.key": rootKeyPEM, "next.crt": certsPEM([]*x509.Certificate{other}), "next.key": otherKeyPEM}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "y"}, Data: tt.data}
			if _, err := parseSecret(s, now); !errors.Is(err, ErrBadSecret) {
				t.Fatalf("parseSecret = %v, want ErrBadSecret", err)
			}
		})
	}
	// A bad Secret never replaces a loaded root.
	good := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: DefaultSecretName, Namespace: "weft-system"},
		Data: map[string][]byte{"tls.crt": certsPEM([]*x509.Certificate{root}), "tls.key": rootKeyPEM}}
	client := fake.NewClientset(good)
	c, _ := New(Config{Client: client, Namespace: "weft-system", Now: func() time.Time { return now }, Logger: discard})
	if err := c.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	bad := good.DeepCopy()
	bad.Data["tls.key"] = otherKeyPEM
	if _, err := client.CoreV1().Secrets("weft-system").Update(context.Background(), bad, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Load(context.Background()); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("Load of a bad secret = %v", err)
	}
	if b := c.Bundle(); len(b) != 1 || string(b[0]) != string(root.Raw) {
		t.Fatal("bad secret replaced the loaded root")
	}
}

func TestRotationSteps(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	old := f.ca.Anchors()[0]
	if err := f.ca.ActivateRoot(ctx); !errors.Is(err, ErrNoStagedRoot) {
		t.Fatalf("ActivateRoot without a staged root = %v", err)
	}
	if err := f.ca.StageRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.ca.StageRoot(ctx); !errors.Is(err, ErrRotationInProgress) {
		t.Fatalf("second StageRoot = %v", err)
	}
	if n := len(f.ca.Bundle()); n != 2 {
		t.Fatalf("staged bundle has %d roots, want 2", n)
	}
	if !signerOf(t, f).Equal(old) {
		t.Fatal("staging changed the signer")
	}
	next := f.ca.Anchors()[1]
	f.now = f.now.Add(time.Hour)
	if err := f.ca.ActivateRoot(ctx); err != nil {
		t.Fatal(err)
	}
	if !signerOf(t, f).Equal(next) {
		t.Fatal("activation did not switch the signer")
	}
	if n := len(f.ca.Bundle()); n != 2 {
		t.Fatalf("active bundle has %d roots, want 2", n)
	}
	f.now = f.now.Add(DefaultSVIDTTL - time.Minute)
	if err := f.ca.RetireRoots(ctx); !errors.Is(err, ErrRetireTooEarly) {
		t.Fatalf("early RetireRoots = %v", err)
	}
	f.now = f.now.Add(time.Minute)
	if err := f.ca.RetireRoots(ctx); err != nil {
		t.Fatal(err)
	}
	if a := f.ca.Anchors(); len(a) != 1 || !a[0].Equal(next) {
		t.Fatal("retire did not leave exactly the new root")
	}
	if err := f.ca.RetireRoots(ctx); !errors.Is(err, ErrNothingToRetire) {
		t.Fatalf("second RetireRoots = %v", err)
	}
	// Another replica loading the Secret sees the same state.
	r, _ := New(Config{Client: f.ca.cfg.Client, Namespace: "weft-system", Now: func() time.Time { return f.now }, Logger: discard})
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if a := r.Anchors(); len(a) != 1 || !a[0].Equal(next) {
		t.Fatal("replica disagrees")
	}
}

// signerOf returns the issuer of a freshly signed SVID.
func signerOf(t *testing.T, f *fixture) *x509.Certificate {
	t.Helper()
	csr := makeCSR(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/shop/sa/cart")}})
	resp, err := f.ca.Sign(agentCtx("token-1"), &weftv1.SignRequest{Csr: csr})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(resp.CertChain[0])
	for _, a := range f.ca.Anchors() {
		if leaf.CheckSignatureFrom(a) == nil {
			return a
		}
	}
	t.Fatal("svid signed by no anchor")
	return nil
}
