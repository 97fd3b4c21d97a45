package policy

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
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

// controller is a scripted policy server: it sends what the test queues and
// records every request the agent sends.
type controller struct {
	weftv1.UnimplementedPolicyServer
	send  chan *weftv1.PolicySnapshot
	reqs  chan *weftv1.PolicyRequest
	mu    sync.Mutex
	token string
}

func (s *controller) Stream(st weftv1.Policy_StreamServer) error {
	if md, ok := metadata.FromIncomingContext(st.Context()); ok && len(md["authorization"]) > 0 {
		s.mu.Lock()
		s.token = md["authorization"][0]
		s.mu.Unlock()
	}
	errc := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			s.reqs <- r
		}
	}()
	for {
		select {
		case snap := <-s.send:
			if err := st.Send(snap); err != nil {
				return err
			}
		case err := <-errc:
			return err
		}
	}
}

func start(t *testing.T, apply Applier, store *Store) (*controller, *Client, context.CancelFunc) {
	t.Helper()
	return startCfg(t, func(c *Config) { c.Apply, c.Store = apply, store })
}

// startCfg starts a client of node n1 with Config edited by edit.
func startCfg(t *testing.T, edit func(*Config)) (*controller, *Client, context.CancelFunc) {
	t.Helper()
	return startWith(t, edit, nil)
}

// startWith is startCfg that calls before (when set) on the client before
// running it.
func startWith(t *testing.T, edit func(*Config), before func(*Client)) (*controller, *Client, context.CancelFunc) {
	t.Helper()
	ctl, lis := serve(t)
	conn := dial(t, func(ctx context.Context) (net.Conn, error) { return lis.DialContext(ctx) })
	cfg := Config{
		Node:  "n1",
		Conn:  conn,
		Token: func() (string, error) { return "tok", nil },
	}
	edit(&cfg)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if before != nil {
		before(c)
	}
	return ctl, c, run(t, c)
}

// serve starts a scripted controller on an in-memory listener.
func serve(t *testing.T) (*controller, *bufconn.Listener) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	ctl := &controller{send: make(chan *weftv1.PolicySnapshot, 8), reqs: make(chan *weftv1.PolicyRequest, 8)}
	weftv1.RegisterPolicyServer(srv, ctl)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return ctl, lis
}

// dial is a client connection whose transport dial calls d.
func dial(t *testing.T, d func(context.Context) (net.Conn, error)) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return d(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// run runs c until the test ends or the returned cancel is called.
func run(t *testing.T, c *Client) context.CancelFunc {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return cancel
}

func recv(t *testing.T, ch chan *weftv1.PolicyRequest) *weftv1.PolicyRequest {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no request from the agent")
		return nil
	}
}

func snapshot(version uint64, services ...string) *weftv1.PolicySnapshot {
	p := &weftv1.NodePolicy{Node: "n1"}
	for _, s := range services {
		p.Services = append(p.Services, &weftv1.ServicePort{Namespace: "ns", Name: s, Port: 80})
	}
	return &weftv1.PolicySnapshot{Version: version, ControllerNonce: "c1", Policy: p}
}

func TestClientACKsAppliedAndNACKsRefusedKeepingLastGood(t *testing.T) {
	var mu sync.Mutex
	var applied []string
	apply := func(p *weftv1.NodePolicy) error {
		for _, s := range p.GetServices() {
			if s.GetName() == "bad" {
				return errors.New("route table does not compile")
			}
		}
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, p.GetServices()[0].GetName())
		return nil
	}
	store := &Store{Path: filepath.Join(t.TempDir(), "policy.pb")}
	ctl, c, _ := start(t, apply, store)

	sub := recv(t, ctl.reqs)
	if sub.GetNode() != "n1" || sub.GetVersion() != 0 || sub.GetError() != "" {
		t.Fatalf("subscribe = %v", sub)
	}
	ctl.mu.Lock()
	if ctl.token != "Bearer tok" {
		t.Errorf("authorization metadata = %q", ctl.token)
	}
	ctl.mu.Unlock()

	ctl.send <- snapshot(1, "good")
	if r := recv(t, ctl.reqs); r.GetVersion() != 1 || r.GetError() != "" {
		t.Fatalf("want ACK of 1, got %v", r)
	}
	ctl.send <- snapshot(2, "bad")
	r := recv(t, ctl.reqs)
	if r.GetVersion() != 2 || r.GetError() == "" {
		t.Fatalf("want NACK of 2, got %v", r)
	}
	if cur := c.Current(); cur.GetVersion() != 1 {
		t.Fatalf("in force after NACK: version %d, want 1", cur.GetVersion())
	}
	if st := c.Status(); st.LastNACK != 2 || st.LastNACKReason == "" {
		t.Fatalf("status = %+v", st)
	}
	stored, err := store.Load()
	if err != nil || stored.GetVersion() != 1 {
		t.Fatalf("stored = %v, %v; want version 1", stored, err)
	}
	// An old version from the same controller is refused.
	ctl.send <- snapshot(1, "older")
	if r := recv(t, ctl.reqs); r.GetError() == "" {
		t.Fatalf("stale version ACKed: %v", r)
	}
	// The version in force resent (as after a reconnect) is ACKed; the
	// same version with another policy is refused.
	ctl.send <- snapshot(1, "good")
	if r := recv(t, ctl.reqs); r.GetVersion() != 1 || r.GetError() != "" {
		t.Fatalf("resent version in force: want ACK, got %v", r)
	}
	ctl.send <- snapshot(1, "other")
	if r := recv(t, ctl.reqs); r.GetError() == "" {
		t.Fatalf("same version, different policy ACKed: %v", r)
	}
	ctl.send <- snapshot(3, "next")
	if r := recv(t, ctl.reqs); r.GetVersion() != 3 || r.GetError() != "" {
		t.Fatalf("want ACK of 3, got %v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != 2 || applied[0] != "good" || applied[1] != "next" {
		t.Fatalf("applied = %v", applied)
	}
}

func TestClientRestoresLastGoodBeforeTheControllerAnswers(t *testing.T) {
	store := &Store{Path: filepath.Join(t.TempDir(), "policy.pb")}
	if err := store.Save(snapshot(7, "kept")); err != nil {
		t.Fatal(err)
	}
	var got *weftv1.NodePolicy
	c, err := New(Config{Node: "n1", Conn: &grpc.ClientConn{}, Store: store, Apply: func(p *weftv1.NodePolicy) error { got = p; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, snapshot(7, "kept").GetPolicy()) || c.Current().GetVersion() != 7 {
		t.Fatalf("restored %v (version %d)", got, c.Current().GetVersion())
	}
}

// A restored policy is not the controller's: Status says so until the
// controller sends one, even the very same policy (nothing applied then).
func TestStatusFromControllerAfterRestore(t *testing.T) {
	store := &Store{Path: filepath.Join(t.TempDir(), "policy.pb")}
	if err := store.Save(snapshot(7, "kept")); err != nil {
		t.Fatal(err)
	}
	applied := 0
	c, err := New(Config{Node: "n1", Conn: &grpc.ClientConn{}, Store: store, Apply: func(*weftv1.NodePolicy) error { applied++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Restore(); err != nil {
		t.Fatal(err)
	}
	if c.Status().FromController {
		t.Fatal("FromController after a restore from disk")
	}
	if ack := c.handle(snapshot(8, "kept")); ack.GetError() != "" {
		t.Fatalf("NACK: %s", ack.GetError())
	}
	if !c.Status().FromController || applied != 1 {
		t.Fatalf("after the controller's same policy: FromController %v, applied %d times (want true, 1)", c.Status().FromController, applied)
	}
}

func TestRestoreRefusesAnotherNodesSnapshot(t *testing.T) {
	store := &Store{Path: filepath.Join(t.TempDir(), "policy.pb")}
	s := snapshot(1, "x")
	s.Policy.Node = "n2"
	if err := store.Save(s); err != nil {
		t.Fatal(err)
	}
	c, _ := New(Config{Node: "n1", Conn: &grpc.ClientConn{}, Store: store, Apply: func(*weftv1.NodePolicy) error {
		t.Fatal("applied another node's policy")
		return nil
	}})
	if err := c.Restore(); err == nil {
		t.Fatal("restore accepted another node's snapshot")
	}
}

func TestClientAcceptsANewControllerStartingOver(t *testing.T) {
	applied := make(chan uint64, 8)
	ctl, c, _ := start(t, func(p *weftv1.NodePolicy) error {
		applied <- uint64(len(p.GetServices()))
		return nil
	}, nil)
	recv(t, ctl.reqs)
	ctl.send <- snapshot(1, "a")
	recv(t, ctl.reqs)
	<-applied
	// A new controller process (new nonce) starts again at version 1.
	s := snapshot(1, "a", "b")
	s.ControllerNonce = "c2"
	ctl.send <- s
	if r := recv(t, ctl.reqs); r.GetError() != "" {
		t.Fatalf("new controller's snapshot refused: %v", r)
	}
	if n := <-applied; n != 2 {
		t.Fatalf("applied %d services, want 2", n)
	}
	if c.Status().ControllerNonce != "c2" {
		t.Fatalf("status = %+v", c.Status())
	}
}

func TestClientNACKsAnInvalidPolicyWithoutApplyingIt(t *testing.T) {
	applied := make(chan uint64, 8)
	ctl, c, _ := start(t, func(p *weftv1.NodePolicy) error {
		applied <- uint64(len(p.GetServices()))
		return nil
	}, nil)
	recv(t, ctl.reqs)
	s := snapshot(1, "a")
	s.Policy.Services[0].Producer = &weftv1.RouteTable{
		Kind:  weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules: []*weftv1.Rule{{Backends: []*weftv1.BackendRef{{Cluster: "c", Weight: 1}}}},
		Matches: []*weftv1.Match{{Http: &weftv1.HTTPMatch{
			Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_REGEX, Value: "(("},
		}}},
	}
	ctl.send <- s
	r := recv(t, ctl.reqs)
	if !strings.Contains(r.GetError(), "invalid regular expression") {
		t.Fatalf("invalid policy answered %v, want a NACK naming the regular expression", r)
	}
	select {
	case <-applied:
		t.Fatal("an invalid policy reached the applier")
	default:
	}
	if st := c.Status(); st.LastNACK != 1 {
		t.Fatalf("status = %+v", st)
	}
}

// TestClientReconnectsSoonAfterALongOutage: after the controller has been
// unreachable long enough for gRPC's own dial backoff to grow to seconds,
// the client is back within its MaxBackoff of the controller's return, not
// when gRPC's backoff would next dial.
func TestClientReconnectsSoonAfterALongOutage(t *testing.T) {
	ctl, lis := serve(t)
	var (
		mu    sync.Mutex
		down  bool
		conns []net.Conn
		dials int
	)
	conn := dial(t, func(ctx context.Context) (net.Conn, error) {
		mu.Lock()
		defer mu.Unlock()
		dials++
		if down {
			return nil, errors.New("connection refused")
		}
		c, err := lis.DialContext(ctx)
		if err == nil {
			conns = append(conns, c)
		}
		return c, err
	})
	c, err := New(Config{Node: "n1", Conn: conn, Apply: func(*weftv1.NodePolicy) error { return nil },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	run(t, c)
	recv(t, ctl.reqs)
	ctl.send <- snapshot(1, "a")
	if r := recv(t, ctl.reqs); r.GetError() != "" {
		t.Fatalf("snapshot refused: %v", r)
	}

	// The controller goes away for 6s: gRPC alone would wait about 4s
	// between dials by then (1s, 1.6s, 2.56s, 4.1s, ±20%).
	mu.Lock()
	down = true
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()
	time.Sleep(6 * time.Second)
	mu.Lock()
	down = false
	failed := dials
	mu.Unlock()
	back := time.Now()
	r := recv(t, ctl.reqs)
	if took := time.Since(back); took > 1500*time.Millisecond || r.GetVersion() != 1 {
		t.Fatalf("resubscribed %s after the controller came back (with version %d, want 1); want within 1.5s", took, r.GetVersion())
	}
	if failed < 10 {
		t.Fatalf("%d dials during the outage; the client should have kept trying every 100ms", failed)
	}
}

// endedStream is a stream the controller ended: Recv gives what was queued,
// then the status it ended with.
type endedStream struct {
	queued int
	end    error
}

func (s *endedStream) Recv() (*weftv1.PolicySnapshot, error) {
	if s.queued > 0 {
		s.queued--
		return snapshot(1), nil
	}
	return nil, s.end
}

// A Send that fails with io.EOF (the controller ended the stream, say on an
// unknown token, before the subscription went out) reports the status the
// controller ended it with, not EOF; other Send errors are reported as they
// are.
func TestSendEOFReportsTheControllersStatus(t *testing.T) {
	refused := status.Error(codes.Unauthenticated, "unknown token")
	if got := endedWith(&endedStream{queued: 2, end: refused}, io.EOF); status.Code(got) != codes.Unauthenticated || !strings.Contains(got.Error(), "unknown token") {
		t.Errorf("after EOF: %v, want the controller's Unauthenticated", got)
	}
	if got := endedWith(&endedStream{end: io.EOF}, io.EOF); !errors.Is(got, io.EOF) {
		t.Errorf("ended with OK: %v, want EOF", got)
	}
	other := errors.New("transport is closing")
	if got := endedWith(&endedStream{end: refused}, other); got != other {
		t.Errorf("another error: %v, want it unchanged", got)
	}
}
