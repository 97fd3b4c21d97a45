package push

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// tokens is a table Authenticator: token -> node.
type tokens map[string]string

var errBadToken = errors.New("unknown token")

func (t tokens) Authenticate(_ context.Context, token string) (string, error) {
	if n, ok := t[token]; ok {
		return n, nil
	}
	return "", errBadToken
}

type harness struct {
	srv    *Server
	client weftv1.PolicyClient
}

type logSink struct {
	ch chan string
}

func (b *logSink) Write(p []byte) (int, error) {
	select {
	case b.ch <- string(p):
	default:
	}
	return len(p), nil
}

func start(t *testing.T, cfg Config) (*harness, chan string) {
	t.Helper()
	return startWith(t, cfg, ServerCodec())
}

func startWith(t *testing.T, cfg Config, opts ...grpc.ServerOption) (*harness, chan string) {
	t.Helper()
	before := runtime.NumGoroutine()
	logs := make(chan string, 100)
	cfg.Logger = slog.New(slog.NewTextHandler(&logSink{ch: logs}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if cfg.Authenticator == nil {
		cfg.Authenticator = tokens{"tok-a": "node-a", "tok-b": "node-b"}
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(opts...)
	weftv1.RegisterPolicyServer(gs, srv)
	go func() { _ = gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		lis.Close()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines leaked: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
	return &harness{srv: srv, client: weftv1.NewPolicyClient(conn)}, logs
}

func (h *harness) subscribe(t *testing.T, ctx context.Context, token, node string) grpc.BidiStreamingClient[weftv1.PolicyRequest, weftv1.PolicySnapshot] {
	t.Helper()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	st, err := h.client.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// io.EOF: the server already ended the stream (it refuses a missing
	// token at once); gRPC gives its status to the next Recv
	if err := st.Send(&weftv1.PolicyRequest{Node: node, Deltas: true}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return st
}

func policy(node string, vip string) *weftv1.NodePolicy {
	return &weftv1.NodePolicy{Node: node, TrustDomain: "cluster.local", Services: []*weftv1.ServicePort{{Namespace: "ns", Name: "svc", Vips: []string{vip}, Port: 80}}}
}

type result struct {
	snap *weftv1.PolicySnapshot
	err  error
}

// recv reads the next snapshot with a timeout.
func recv(t *testing.T, st grpc.BidiStreamingClient[weftv1.PolicyRequest, weftv1.PolicySnapshot], wait time.Duration) (*weftv1.PolicySnapshot, error) {
	t.Helper()
	ch := make(chan result, 1)
	go func() {
		s, err := st.Recv()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		return r.snap, r.err
	case <-time.After(wait):
		t.Fatalf("no snapshot within %v", wait)
		return nil, nil
	}
}

// expectNone asserts no message arrives within d; it returns a channel with
// the eventual Recv result so the caller can keep reading in order.
func expectNone(t *testing.T, st grpc.BidiStreamingClient[weftv1.PolicyRequest, weftv1.PolicySnapshot], d time.Duration) chan result {
	t.Helper()
	ch := make(chan result, 1)
	go func() {
		s, err := st.Recv()
		ch <- result{s, err}
	}()
	select {
	case r := <-ch:
		t.Fatalf("unexpected message: %v %v", r.snap, r.err)
	case <-time.After(d):
	}
	return ch
}

func TestSubscribeReceivesSnapshotAndChanges(t *testing.T) {
	h, _ := start(t, Config{Nonce: "n1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1"), "node-b": policy("node-b", "10.96.0.1")})
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	b := h.subscribe(t, ctx, "tok-b", "node-b")

	sa, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sa.ControllerNonce != "n1" || sa.Version == 0 || !proto.Equal(sa.Policy, policy("node-a", "10.96.0.1")) {
		t.Fatalf("first snapshot for node-a: %v", sa)
	}
	sb, err := recv(t, b, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Policy.GetNode() != "node-b" {
		t.Fatalf("node-b got %v", sb)
	}

	// Only node-a changes: node-a gets a higher version, node-b nothing.
	n := h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.2"), "node-b": policy("node-b", "10.96.0.1")})
	if n != 1 {
		t.Fatalf("Update changed %d nodes, want 1", n)
	}
	sa2, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// A delta against the first version, of the one Service that changed.
	if sa2.Version <= sa.Version || sa2.Policy != nil || sa2.BaseVersion != sa.Version || sa2.Delta.Services[0].Vips[0] != "10.96.0.2" {
		t.Fatalf("second snapshot %v after version %d", sa2, sa.Version)
	}
	pending := expectNone(t, b, 200*time.Millisecond)

	// An identical update pushes nothing to anyone.
	if n := h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.2"), "node-b": policy("node-b", "10.96.0.1")}); n != 0 {
		t.Fatalf("identical Update changed %d nodes", n)
	}
	// node-b changes: its pending Recv gets it, with a version above node-a's.
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.2"), "node-b": policy("node-b", "10.96.0.9")})
	select {
	case r := <-pending:
		if r.err != nil || r.snap.Version <= sa2.Version || r.snap.BaseVersion != sb.Version || r.snap.Delta.Services[0].Vips[0] != "10.96.0.9" {
			t.Fatalf("node-b update: %v %v", r.snap, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("node-b got no update")
	}
}

func TestReconnectGetsFullSnapshot(t *testing.T) {
	h, _ := start(t, Config{})
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1")})
	ctx1, cancel1 := context.WithCancel(context.Background())
	a := h.subscribe(t, ctx1, "tok-a", "node-a")
	first, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	a2 := h.subscribe(t, ctx2, "tok-a", "node-a")
	again, err := recv(t, a2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if again.Version != first.Version || !proto.Equal(again.Policy, first.Policy) {
		t.Fatalf("resync %v, want %v", again, first)
	}
}

func TestSubscribeBeforeFirstUpdate(t *testing.T) {
	h, _ := start(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	pending := expectNone(t, a, 100*time.Millisecond)
	if h.srv.Ready() {
		t.Fatal("Ready before any Update")
	}
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1")})
	select {
	case r := <-pending:
		if r.err != nil || r.snap.Policy.GetNode() != "node-a" {
			t.Fatalf("got %v %v", r.snap, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot after first Update")
	}
}

func waitState(t *testing.T, s *Server, node string, ok func(NodeState) bool) NodeState {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, st := range s.Nodes() {
			if st.Node == node && ok(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s never reached the expected state: %+v", node, s.Nodes())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestAckAndNack(t *testing.T) {
	h, logs := start(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1")})
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	s1, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Send(&weftv1.PolicyRequest{Node: "node-a", Version: s1.Version}); err != nil {
		t.Fatal(err)
	}
	waitState(t, h.srv, "node-a", func(s NodeState) bool { return s.AckedVersion == s1.Version && s.Streams == 1 })

	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.2")})
	s2, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Send(&weftv1.PolicyRequest{Node: "node-a", Version: s2.Version, Error: "bad regex in rule 3"}); err != nil {
		t.Fatal(err)
	}
	st := waitState(t, h.srv, "node-a", func(s NodeState) bool { return s.NackedVersion == s2.Version })
	if st.AckedVersion != s1.Version || st.NackReason != "bad regex in rule 3" {
		t.Fatalf("state after NACK: %+v", st)
	}
	found := false
	for !found {
		select {
		case l := <-logs:
			found = strings.Contains(l, "agent rejected policy") && strings.Contains(l, "node=node-a") && strings.Contains(l, "bad regex in rule 3")
		case <-time.After(5 * time.Second):
			t.Fatal("NACK not logged with node and reason")
		}
	}
	// The stream keeps serving after a NACK.
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.3")})
	s3, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s3.Version <= s2.Version || s3.Policy.Services[0].Vips[0] != "10.96.0.3" {
		t.Fatalf("after NACK got %v", s3)
	}
}

func TestAuthentication(t *testing.T) {
	h, _ := start(t, Config{})
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1")})
	tests := []struct {
		name  string
		token string
		node  string
		code  codes.Code
		msg   string
	}{
		{"no token", "", "node-a", codes.Unauthenticated, "bearer token"},
		{"unknown token", "nope", "node-a", codes.Unauthenticated, "unknown token"},
		{"other node", "tok-b", "node-a", codes.PermissionDenied, `authenticated for node "node-b" cannot subscribe to node "node-a"`},
		{"no node", "tok-a", "", codes.InvalidArgument, "name the agent's node"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st := h.subscribe(t, ctx, tc.token, tc.node)
			_, err := recv(t, st, 5*time.Second)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
		})
	}
}

func TestAckForAnotherNodeIsRejected(t *testing.T) {
	h, _ := start(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1"), "node-b": policy("node-b", "10.96.0.1")})
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	if _, err := recv(t, a, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.Send(&weftv1.PolicyRequest{Node: "node-b", Version: 2}); err != nil {
		t.Fatal(err)
	}
	_, err := recv(t, a, 5*time.Second)
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v, want PermissionDenied", err)
	}
	for _, s := range h.srv.Nodes() {
		if s.Node == "node-b" && s.AckedVersion != 0 {
			t.Fatalf("node-b ACK recorded from node-a's stream: %+v", s)
		}
	}
}

func TestSlowStreamIsEvictedAndResyncs(t *testing.T) {
	h, logs := start(t, Config{SendBuffer: 2})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.0"), "node-b": policy("node-b", "10.96.0.0")})
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	b := h.subscribe(t, ctx, "tok-b", "node-b")
	if _, err := recv(t, b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// node-a never reads. Each snapshot is large enough that the transport's
	// flow-control window fills after a few, then the send buffer fills.
	big := func(i int) *weftv1.NodePolicy {
		p := policy("node-a", "10.96.0.1")
		for j := 0; j < 2000; j++ {
			p.Workloads = append(p.Workloads, &weftv1.Workload{Namespace: "ns", Name: strings.Repeat("w", 40), Uid: string(rune('a' + i%26))})
		}
		return p
	}
	var last *weftv1.NodePolicy
	for i := 0; i < 200; i++ {
		last = big(i)
		h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": last, "node-b": policy("node-b", "10.96.0.0")})
	}
	// Reaching this line proves Update never blocked on the stuck stream.
	found := false
	for !found {
		select {
		case l := <-logs:
			found = strings.Contains(l, "fell behind") && strings.Contains(l, "node=node-a")
		case <-time.After(5 * time.Second):
			t.Fatal("eviction not logged")
		}
	}
	// Reading node-a's stream now drains what was delivered, then ends with
	// ResourceExhausted.
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = recv(t, a, 5*time.Second)
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("evicted stream ended with %v", err)
	}
	// The unaffected node keeps its stream.
	waitState(t, h.srv, "node-b", func(s NodeState) bool { return s.Streams == 1 })
	// Reconnecting gets the newest snapshot in full.
	a2 := h.subscribe(t, ctx, "tok-a", "node-a")
	s, err := recv(t, a2, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(s.Policy, last) {
		t.Fatal("resync after eviction did not deliver the newest policy")
	}
}

func TestAgentClosesSend(t *testing.T) {
	h, _ := start(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1")})
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	if _, err := recv(t, a, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := recv(t, a, 5*time.Second); err != io.EOF {
		t.Fatalf("after CloseSend got %v, want io.EOF", err)
	}
	waitState(t, h.srv, "node-a", func(s NodeState) bool { return s.Streams == 0 })
}

func TestBearerToken(t *testing.T) {
	tests := []struct {
		md   metadata.MD
		want string
		err  error
	}{
		{metadata.Pairs("authorization", "Bearer abc"), "abc", nil},
		{metadata.Pairs("authorization", "bearer   abc "), "abc", nil},
		{metadata.Pairs("authorization", "Basic abc"), "", ErrNoToken},
		{metadata.Pairs("authorization", "Bearer "), "", ErrNoToken},
		{metadata.MD{}, "", ErrNoToken},
	}
	for _, tc := range tests {
		got, err := BearerToken(metadata.NewIncomingContext(context.Background(), tc.md))
		if got != tc.want || !errors.Is(err, tc.err) {
			t.Errorf("%v: got %q %v, want %q %v", tc.md, got, err, tc.want, tc.err)
		}
	}
}

func TestNewWithoutAuthenticator(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrNoAuthenticator) {
		t.Fatalf("got %v", err)
	}
}
