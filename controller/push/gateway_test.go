package push

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// gatewayTokens is a table GatewayAuthorizer: token -> the one Gateway
// ("namespace/name") whose data plane it belongs to.
type gatewayTokens map[string]string

func (g gatewayTokens) AuthorizeGateway(_ context.Context, token, namespace, name string) error {
	gw, ok := g[token]
	if !ok {
		return status.Error(codes.PermissionDenied, "token is not a gateway data plane pod's")
	}
	if gw != namespace+"/"+name {
		return status.Errorf(codes.PermissionDenied, "token belongs to the data plane of gateway %s, not %s/%s", gw, namespace, name)
	}
	return nil
}

func gwPolicy(name, host string) *weftv1.GatewayPolicy {
	ns, n, _ := strings.Cut(name, "/")
	return &weftv1.GatewayPolicy{Namespace: ns, Name: n, Ports: []*weftv1.GatewayPort{{Port: 80, Listeners: []*weftv1.GatewayListener{{
		Name: "http", Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTP, Hostname: host,
	}}}}}
}

func (h *harness) subscribeGateway(t *testing.T, ctx context.Context, token, gw string) grpc.BidiStreamingClient[weftv1.PolicyRequest, weftv1.PolicySnapshot] {
	t.Helper()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	st, err := h.client.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&weftv1.PolicyRequest{Gateway: gw}); err != nil {
		t.Fatal(err)
	}
	return st
}

func waitGateway(t *testing.T, s *Server, gw string, ok func(GatewayState) bool) GatewayState {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, st := range s.Gateways() {
			if st.Gateway == gw && ok(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway %s never reached the expected state: %+v", gw, s.Gateways())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestGatewaySnapshotAckUpdateNack(t *testing.T) {
	var refusals atomic.Int32
	h, logs := start(t, Config{Gateways: gatewayTokens{"tok-gw": "ns/gw"}, GatewayRefusalChanged: func() { refusals.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1")})
	h.srv.UpdateGateways(map[string]*weftv1.GatewayPolicy{"ns/gw": gwPolicy("ns/gw", "a.example"), "ns/other": gwPolicy("ns/other", "o.example")})

	st := h.subscribeGateway(t, ctx, "tok-gw", "ns/gw")
	s1, err := recv(t, st, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s1.Policy != nil || !proto.Equal(s1.Gateway, gwPolicy("ns/gw", "a.example")) || s1.Version == 0 {
		t.Fatalf("first gateway snapshot: %v", s1)
	}
	if err := st.Send(&weftv1.PolicyRequest{Gateway: "ns/gw", Version: s1.Version}); err != nil {
		t.Fatal(err)
	}
	waitGateway(t, h.srv, "ns/gw", func(s GatewayState) bool { return s.AckedVersion == s1.Version && s.Streams == 1 })

	// Unchanged: nothing; another Gateway's change: nothing for this one.
	if n := h.srv.UpdateGateways(map[string]*weftv1.GatewayPolicy{"ns/gw": gwPolicy("ns/gw", "a.example"), "ns/other": gwPolicy("ns/other", "x.example")}); n != 1 {
		t.Fatalf("UpdateGateways changed %d, want 1", n)
	}
	pending := expectNone(t, st, 100*time.Millisecond)
	h.srv.UpdateGateways(map[string]*weftv1.GatewayPolicy{"ns/gw": gwPolicy("ns/gw", "b.example")})
	var s2 *weftv1.PolicySnapshot
	select {
	case r := <-pending:
		if r.err != nil || r.snap.Version <= s1.Version || r.snap.Gateway.Ports[0].Listeners[0].Hostname != "b.example" {
			t.Fatalf("update: %v %v", r.snap, r.err)
		}
		s2 = r.snap
	case <-time.After(5 * time.Second):
		t.Fatal("no update")
	}
	if err := st.Send(&weftv1.PolicyRequest{Version: s2.Version, Error: "cannot bind :80"}); err != nil {
		t.Fatal(err)
	}
	got := waitGateway(t, h.srv, "ns/gw", func(s GatewayState) bool { return s.NackedVersion == s2.Version })
	if got.AckedVersion != s1.Version || got.NackReason != "cannot bind :80" {
		t.Fatalf("state after NACK: %+v", got)
	}
	waitLog(t, logs, "agent rejected policy", "gateway=ns/gw", "cannot bind :80")
	if n := refusals.Load(); n != 1 {
		t.Fatalf("GatewayRefusalChanged called %d times by the NACK, want 1", n)
	}
	// the same NACK again changes nothing; an ACK past it ends the refusal
	if err := st.Send(&weftv1.PolicyRequest{Version: s2.Version, Error: "cannot bind :80"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&weftv1.PolicyRequest{Version: s2.Version + 1}); err != nil {
		t.Fatal(err)
	}
	waitGateway(t, h.srv, "ns/gw", func(s GatewayState) bool { return s.AckedVersion == s2.Version+1 })
	if n := refusals.Load(); n != 2 {
		t.Fatalf("GatewayRefusalChanged called %d times after the NACK, its repeat and an ACK, want 2", n)
	}
	if len(h.srv.Nodes()) != 1 {
		t.Fatalf("gateway streams leaked into nodes: %+v", h.srv.Nodes())
	}
}

func waitLog(t *testing.T, logs chan string, parts ...string) {
	t.Helper()
	for {
		select {
		case l := <-logs:
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no log line with %q", parts)
		}
	}
}

func TestInvalidGatewayPolicyKeepsLastGood(t *testing.T) {
	h, logs := start(t, Config{Gateways: gatewayTokens{"tok-gw": "ns/gw"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.srv.UpdateGateways(map[string]*weftv1.GatewayPolicy{"ns/gw": gwPolicy("ns/gw", "a.example")})
	st := h.subscribeGateway(t, ctx, "tok-gw", "ns/gw")
	s1, err := recv(t, st, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	bad := gwPolicy("ns/gw", "a.example")
	bad.Ports[0].Listeners[0].TlsMode = weftv1.TLSMode_TLS_MODE_TERMINATE // HTTP with TLS settings
	if n := h.srv.UpdateGateways(map[string]*weftv1.GatewayPolicy{"ns/gw": bad}); n != 0 {
		t.Fatalf("invalid policy pushed (%d changed)", n)
	}
	waitLog(t, logs, "gateway policy not pushed", "gateway=ns/gw")
	expectNone(t, st, 100*time.Millisecond)
	if got := h.srv.Gateways(); len(got) != 1 || got[0].Version != s1.Version {
		t.Fatalf("state: %+v, want version %d kept", got, s1.Version)
	}
}

func TestGatewayAuthorization(t *testing.T) {
	h, _ := start(t, Config{Gateways: gatewayTokens{"tok-gw": "ns/gw", "tok-gw2": "ns/gw2"}})
	h.srv.UpdateGateways(map[string]*weftv1.GatewayPolicy{"ns/gw": gwPolicy("ns/gw", "a.example")})
	tests := []struct {
		name, token, gateway string
		code                 codes.Code
		msg                  string
	}{
		{"agent token", "tok-a", "ns/gw", codes.PermissionDenied, "not a gateway data plane pod's"},
		{"another gateway's token", "tok-gw2", "ns/gw", codes.PermissionDenied, "gateway ns/gw2, not ns/gw"},
		{"not namespace/name", "tok-gw", "gw", codes.InvalidArgument, "not namespace/name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := recv(t, h.subscribeGateway(t, ctx, tc.token, tc.gateway), 5*time.Second)
			if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tc.code, tc.msg)
			}
		})
	}
	t.Run("no authorizer", func(t *testing.T) {
		h, _ := start(t, Config{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, err := recv(t, h.subscribeGateway(t, ctx, "tok-gw", "ns/gw"), 5*time.Second)
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("got %v, want PermissionDenied", err)
		}
	})
	t.Run("gateway stream sends for a node", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st := h.subscribeGateway(t, ctx, "tok-gw", "ns/gw")
		if _, err := recv(t, st, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&weftv1.PolicyRequest{Node: "node-a", Version: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := recv(t, st, 5*time.Second); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("got %v, want PermissionDenied", err)
		}
	})
}

func TestStreamThatNeverSubscribesIsClosed(t *testing.T) {
	h, _ := start(t, Config{FirstMessageTimeout: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := h.client.Stream(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer tok-a"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recv(t, st, 5*time.Second); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("got %v, want DeadlineExceeded", err)
	}
}
