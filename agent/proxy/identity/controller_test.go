package identity

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/ca"
)

// TestControllerTLS runs the Identity service behind the CA's own serving
// certificate and has a manager fetch an SVID over real TLS, bootstrapped
// from the published bundle file.
func TestControllerTLS(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	getCert, err := env.ca.ServingCertificate(ca.ServingConfig{DNSNames: []string{"weft-controller.weft-system.svc"}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: getCert})))
	env.ca.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	// The bundle as agents get it from the ConfigMap the leader publishes.
	if err := env.ca.PublishBundle(context.Background(), ""); err != nil {
		t.Fatal(err)
	}
	cm, err := env.kube.CoreV1().ConfigMaps("weft-system").Get(context.Background(), ca.DefaultBundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bundleFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(bundleFile, []byte(cm.Data["ca.crt"]), 0o600); err != nil {
		t.Fatal(err)
	}

	dialWith := func(name, file string, bundles func() *x509bundle.Set) (weftv1.IdentityClient, func()) {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ControllerTLSConfig(name, file, bundles))))
		if err != nil {
			t.Fatal(err)
		}
		return weftv1.NewIdentityClient(conn), func() { conn.Close() }
	}
	// The manager has no policy yet: trust comes from the bootstrap file
	// (the agent wires bundles to its manager through a pointer set after
	// New, as here).
	var mp atomic.Pointer[Manager]
	bundles := func() *x509bundle.Set {
		if m := mp.Load(); m != nil {
			return m.Bundle()
		}
		return nil
	}
	client, closeConn := dialWith("weft-controller.weft-system.svc", bundleFile, bundles)
	defer closeConn()
	m, err := New(Config{Client: client, Node: "node-1", Token: func() (string, error) { return "token-1", nil }, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	mp.Store(m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	m.SetWanted([]spiffeid.ID{idCart})
	eventually(t, "svid over TLS", func() bool { return serial(t, m, idCart) != "" })

	// Without the bootstrap file, the policy's bundle is enough.
	if err := m.SetTrustAnchors(td, env.ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	c, closeC := dialWith("weft-controller.weft-system.svc", "", bundles)
	callCtx, callCancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, err = c.Sign(callCtx, &weftv1.SignRequest{})
	callCancel()
	closeC()
	if status.Code(err) != codes.Unauthenticated { // TLS worked; no token sent
		t.Fatalf("with the policy bundle only: %v, want Unauthenticated from the CA", err)
	}

	// Wrong name, or no anchors at all: the connection is refused.
	for _, tc := range []struct {
		name, file string
		bundles    func() *x509bundle.Set
	}{
		{"weft-controller.other.svc", bundleFile, nil},
		{"weft-controller.weft-system.svc", filepath.Join(t.TempDir(), "missing"), nil},
	} {
		c, closeC := dialWith(tc.name, tc.file, tc.bundles)
		callCtx, callCancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.Sign(callCtx, &weftv1.SignRequest{})
		callCancel()
		closeC()
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("name %q file %q: %v, want the TLS handshake to fail (Unavailable)", tc.name, tc.file, err)
		}
	}
}
