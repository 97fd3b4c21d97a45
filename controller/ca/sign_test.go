package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// tokenNodes authenticates "token-<node>" as an agent on <node>.
type tokenNodes map[string]string

func (t tokenNodes) Authenticate(_ context.Context, token string) (string, error) {
	n, ok := t[token]
	if !ok {
		return "", status.Error(codes.Unauthenticated, "unknown token")
	}
	return n, nil
}

// podTable is a fixed cluster view.
type podTable struct {
	ns   []*corev1.Namespace
	pods []*corev1.Pod
}

func (p podTable) NodePods(_ context.Context, namespace, node string) ([]*corev1.Pod, error) {
	var out []*corev1.Pod
	for _, x := range p.pods {
		if x.Namespace == namespace && x.Spec.NodeName == node {
			out = append(out, x)
		}
	}
	return out, nil
}

func (p podTable) Namespace(_ context.Context, name string) (*corev1.Namespace, error) {
	for _, n := range p.ns {
		if n.Name == name {
			return n, nil
		}
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
}

func testCluster() podTable {
	return podTable{
		ns: []*corev1.Namespace{
			{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}},
		},
		pods: []*corev1.Pod{
			pod("shop", "cart-1", "cart", "node-1", corev1.PodRunning, nil),
			pod("shop", "pay-1", "pay", "node-2", corev1.PodRunning, nil),
		},
	}
}

type fixture struct {
	ca  *CA
	now time.Time
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{now: time.Date(2026, 11, 22, 3, 0, 0, 0, time.UTC)}
	c, err := New(Config{
		Client:        fake.NewClientset(),
		Namespace:     "weft-system",
		Authenticator: tokenNodes{"token-1": "node-1", "token-2": "node-2"},
		Pods:          testCluster(),
		Logger:        discard,
		Now:           func() time.Time { return f.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.ca = c
	return f
}

func agentCtx(token string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
}

func TestSignHappyPathProfile(t *testing.T) {
	f := newFixture(t)
	key := p256(t)
	csr := makeCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/shop/sa/cart")}})
	resp, err := f.ca.Sign(agentCtx("token-1"), &weftv1.SignRequest{Csr: csr, Node: "node-1"})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.CertChain[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("leaf is CA or has no basic constraints")
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ext key usage = %v", leaf.ExtKeyUsage)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://cluster.local/ns/shop/sa/cart" || len(leaf.DNSNames) != 0 {
		t.Errorf("SANs = %v %v", leaf.URIs, leaf.DNSNames)
	}
	if got := leaf.NotAfter.Sub(f.now); got != DefaultSVIDTTL {
		t.Errorf("lifetime = %s, want %s", got, DefaultSVIDTTL)
	}
	if !slices.EqualFunc(resp.TrustAnchors, f.ca.Bundle(), func(a, b []byte) bool { return string(a) == string(b) }) {
		t.Errorf("response anchors differ from Bundle()")
	}
	// go-spiffe accepts it as an SVID and verifies it against the bundle.
	svid, err := x509svid.ParseRaw(resp.CertChain[0], mustPKCS8(t, key))
	if err != nil {
		t.Fatalf("go-spiffe rejects the svid: %v", err)
	}
	var anchors []*x509.Certificate
	for _, d := range f.ca.Bundle() {
		c, _ := x509.ParseCertificate(d)
		anchors = append(anchors, c)
	}
	bundle := x509bundle.FromX509Authorities(testTD, anchors)
	if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(f.now)); err != nil {
		t.Fatalf("verify svid: %v", err)
	}
}

func mustPKCS8(t *testing.T, k any) []byte {
	t.Helper()
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignRefusals(t *testing.T) {
	f := newFixture(t)
	key := p256(t)
	csrFor := func(id string) []byte {
		return makeCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, id)}})
	}
	tests := []struct {
		name string
		ctx  context.Context
		req  *weftv1.SignRequest
		code codes.Code
	}{
		{"no token", context.Background(), &weftv1.SignRequest{Csr: csrFor("spiffe://cluster.local/ns/shop/sa/cart")}, codes.Unauthenticated},
		{"bad token", agentCtx("nope"), &weftv1.SignRequest{Csr: csrFor("spiffe://cluster.local/ns/shop/sa/cart")}, codes.Unauthenticated},
		{"identity on other node", agentCtx("token-1"), &weftv1.SignRequest{Csr: csrFor("spiffe://cluster.local/ns/shop/sa/pay")}, codes.PermissionDenied},
		{"node mismatch", agentCtx("token-1"), &weftv1.SignRequest{Csr: csrFor("spiffe://cluster.local/ns/shop/sa/cart"), Node: "node-2"}, codes.PermissionDenied},
		{"namespace missing", agentCtx("token-1"), &weftv1.SignRequest{Csr: csrFor("spiffe://cluster.local/ns/bank/sa/cart")}, codes.PermissionDenied},
		{"malformed csr", agentCtx("token-1"), &weftv1.SignRequest{Csr: []byte("not a csr")}, codes.InvalidArgument},
		{"oversize", agentCtx("token-1"), &weftv1.SignRequest{Csr: make([]byte, 1<<20)}, codes.InvalidArgument},
		{"foreign trust domain", agentCtx("token-1"), &weftv1.SignRequest{Csr: csrFor("spiffe://other.org/ns/shop/sa/cart")}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := f.ca.Sign(tt.ctx, tt.req)
			if resp != nil {
				t.Fatalf("signed: %v", resp)
			}
			st := status.Convert(err)
			if st.Code() != tt.code || st.Message() == "" {
				t.Fatalf("err = %v, want code %v with a message", err, tt.code)
			}
		})
	}
}

func TestEnsureRootConcurrentReplicasAgree(t *testing.T) {
	client := fake.NewClientset()
	var cas []*CA
	for range 4 {
		c, err := New(Config{Client: client, Namespace: "weft-system", Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		cas = append(cas, c)
	}
	errs := make(chan error, len(cas))
	for _, c := range cas {
		go func() { errs <- c.EnsureRoot(context.Background()) }()
	}
	for range cas {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cas[1:] {
		if string(c.Bundle()[0]) != string(cas[0].Bundle()[0]) {
			t.Fatal("replicas loaded different roots")
		}
	}
	// A replica that only loads sees the same root.
	r, _ := New(Config{Client: client, Namespace: "weft-system", Logger: discard})
	if err := r.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	if string(r.Bundle()[0]) != string(cas[0].Bundle()[0]) {
		t.Fatal("loading replica has a different root")
	}
}

func TestLoadWithoutSecret(t *testing.T) {
	c, _ := New(Config{Client: fake.NewClientset(), Namespace: "weft-system", Logger: discard})
	if err := c.Load(context.Background()); !errors.Is(err, ErrNoRoot) {
		t.Fatalf("Load = %v, want ErrNoRoot", err)
	}
	if c.Ready() || c.Bundle() != nil {
		t.Fatal("ready without a root")
	}
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))
