package identity

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/ca"
)

var (
	discard = slog.New(slog.NewTextHandler(io.Discard, nil))
	td      = spiffeid.RequireTrustDomainFromString("cluster.local")
	idCart  = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart")
	idPay   = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/pay")
	idShip  = spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/ship")
)

// tokenNodes authenticates "token-<node>" as the agent of that node (the
// real TokenReview path is tested in controller/agentauth).
type tokenNodes map[string]string

func (t tokenNodes) Authenticate(_ context.Context, token string) (string, error) {
	if n, ok := t[token]; ok {
		return n, nil
	}
	return "", status.Error(codes.Unauthenticated, "unknown token")
}

// cluster is a fixed view: cart on node-1, pay and ship on node-2.
type cluster struct{}

func (cluster) NodePods(_ context.Context, namespace, node string) ([]*corev1.Pod, error) {
	all := []*corev1.Pod{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-1"}, Spec: corev1.PodSpec{ServiceAccountName: "cart", NodeName: "node-1"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "pay-1"}, Spec: corev1.PodSpec{ServiceAccountName: "pay", NodeName: "node-2"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ship-1"}, Spec: corev1.PodSpec{ServiceAccountName: "ship", NodeName: "node-2"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}},
	}
	var out []*corev1.Pod
	for _, p := range all {
		if p.Namespace == namespace && p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out, nil
}

func (cluster) Namespace(_ context.Context, name string) (*corev1.Namespace, error) {
	if name != "shop" {
		return nil, apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, name)
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}}, nil
}

// caEnv is the controller's CA served over an in-memory gRPC connection.
type caEnv struct {
	ca     *ca.CA
	kube   *fake.Clientset
	client weftv1.IdentityClient
	down   *atomic.Bool
	caNow  atomic.Int64 // offset added to the CA's clock (ns)
}

// flaky fails every call while down is set, like an unreachable controller.
type flaky struct {
	weftv1.IdentityClient
	down *atomic.Bool
}

func (f flaky) Sign(ctx context.Context, in *weftv1.SignRequest, opts ...grpc.CallOption) (*weftv1.SignResponse, error) {
	if f.down.Load() {
		return nil, status.Error(codes.Unavailable, "controller unreachable")
	}
	return f.IdentityClient.Sign(ctx, in, opts...)
}

func startCA(t *testing.T, svidTTL time.Duration) *caEnv {
	t.Helper()
	env := &caEnv{down: &atomic.Bool{}, kube: fake.NewClientset()}
	c, err := ca.New(ca.Config{
		Client:        env.kube,
		Namespace:     "weft-system",
		SVIDTTL:       svidTTL,
		Authenticator: tokenNodes{"token-1": "node-1", "token-2": "node-2"},
		Pods:          cluster{},
		Logger:        discard,
		Now:           func() time.Time { return time.Now().Add(time.Duration(env.caNow.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnsureRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	c.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	env.ca = c
	env.client = flaky{IdentityClient: weftv1.NewIdentityClient(conn), down: env.down}
	return env
}

// agent is one node's Manager running on a fake clock.
type agent struct {
	m     *Manager
	clock *clocktesting.FakeClock
}

func startAgent(t *testing.T, env *caEnv, node string) *agent {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Now())
	m, err := New(Config{
		Client: env.client, Node: node, Clock: clk, Logger: discard,
		Token:    func() (string, error) { return "token-" + node[len("node-"):], nil },
		RetryMin: time.Second, RetryMax: 4 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.SetTrustAnchors(td, env.ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = m.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return &agent{m: m, clock: clk}
}

// eventually polls cond in real time.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// step advances the agent's clock once its loop is parked on a timer.
func (a *agent) step(t *testing.T, d time.Duration) {
	t.Helper()
	eventually(t, "the manager to wait on its clock", a.clock.HasWaiters)
	a.clock.Step(d)
}

func serial(t *testing.T, m *Manager, id spiffeid.ID) string {
	t.Helper()
	s, err := m.SVID(id)
	if err != nil {
		return ""
	}
	return s.Certificates[0].SerialNumber.String()
}

// server is an mTLS listener on loopback presenting srvID's SVID from m and
// accepting any SPIFFE ID of the trust domain; it echoes lines.
type server struct {
	addr  string
	mu    sync.Mutex
	conns []net.Conn
}

func startServer(t *testing.T, m *Manager, srvID spiffeid.ID) *server {
	t.Helper()
	cfg := tlsconfig.MTLSServerConfig(tunnel.SVIDSource(m, srvID), tunnel.BundleSource(m), tlsconfig.AuthorizeMemberOf(td))
	cfg.MinVersion = tls.VersionTLS13
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: lis.Addr().String()}
	t.Cleanup(func() {
		lis.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			go func() { _, _ = io.Copy(c, c) }()
		}
	}()
	return s
}

// dial opens an mTLS connection as cliID expecting srvID, and checks an echo.
func dial(m *Manager, cliID, srvID spiffeid.ID, addr string) (*tls.Conn, error) {
	cfg := tlsconfig.MTLSClientConfig(tunnel.SVIDSource(m, cliID), tunnel.BundleSource(m), tlsconfig.AuthorizeID(srvID))
	cfg.MinVersion = tls.VersionTLS13
	d := net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(&d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := echo(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func echo(c *tls.Conn) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("ping\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != string(msg) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// peerSerial is the serial of the certificate the server presented.
func peerSerial(c *tls.Conn) string {
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}
