package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/test/echo"
	"github.com/weft-mesh/weft/test/echo/echopb"
)

func TestH2CPriorKnowledge(t *testing.T) {
	e, caller := routedEnv(t)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DialContext: func(context.Context, string, string) (net.Conn, error) { return e.dialErr(caller, vip) }}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for i := range 3 { // several streams on one h2c connection
		resp, err := c.Get(fmt.Sprintf("http://%s/only/%d", vip, i))
		if err != nil {
			t.Fatal(err)
		}
		var a echo.Answer
		json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || a.Path != fmt.Sprintf("/only/%d", i) || a.Headers["X-Added"][0] != "yes" {
			t.Fatalf("h2c: %s %d %+v", resp.Proto, resp.StatusCode, a)
		}
	}
	resp, err := c.Get("http://" + vip + "/nothing")
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("h2c 404: %v %v", resp, err)
	}
	resp.Body.Close()
}

func grpcEnv(t *testing.T) (*env, *grpc.ClientConn, []*weftv1.Endpoint) {
	e := newEnv(t)
	a := e.grpcPod("rpc", "rpc")
	b := e.grpcPod("rpc", "rpc")
	e.cluster("rpc/a:9090", weftv1.Protocol_PROTOCOL_GRPC, a)
	e.cluster("rpc/b:9090", weftv1.Protocol_PROTOCOL_GRPC, b)
	sp := e.service("rpc", "rpc", "10.96.0.30", 9090, weftv1.Protocol_PROTOCOL_GRPC, "rpc/a:9090")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_GRPC,
		Rules: []*weftv1.Rule{
			{Route: "rpc/g", RouteKind: weftv1.RouteKind_ROUTE_KIND_GRPC, Backends: backends("rpc/b:9090", 1)},
			{Route: "rpc/g", RouteKind: weftv1.RouteKind_ROUTE_KIND_GRPC, Index: 1, Backends: backends("rpc/a:9090", 1)},
		},
		Matches: []*weftv1.Match{
			{Rule: 0, Grpc: &weftv1.GRPCMatch{Type: weftv1.MatchType_MATCH_TYPE_EXACT, Service: "weft.echo.v1.Echo", Method: "Ping"}},
			{Rule: 1, Grpc: &weftv1.GRPCMatch{}},
		}}
	e.apply()
	caller := e.caller("app")
	cc, err := grpc.NewClient("passthrough:///10.96.0.30:9090",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return e.dialErr(caller, "10.96.0.30:9090") }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return e, cc, []*weftv1.Endpoint{a, b}
}

func TestGRPCUnaryRoutingAndStatus(t *testing.T) {
	_, cc, eps := grpcEnv(t)
	cl := echopb.NewEchoClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cl.Echo(ctx, &echopb.EchoRequest{Message: "hi"})
	if err != nil || r.GetPod() != eps[0].Pod || r.GetMessage() != "hi" {
		t.Fatalf("Echo: %v %v", r, err)
	}
	r, err = cl.Ping(ctx, &echopb.EchoRequest{Message: "p"})
	if err != nil || r.GetPod() != eps[1].Pod {
		t.Fatalf("Ping routed to %v %v, want %s", r.GetPod(), err, eps[1].Pod)
	}
	// a gRPC error travels in the trailers
	var trailer metadata.MD
	_, err = cl.Echo(ctx, &echopb.EchoRequest{Code: uint32(codes.PermissionDenied)}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("status %v", err)
	}
}

func TestGRPCBidiStreaming(t *testing.T) {
	_, cc, eps := grpcEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := echopb.NewEchoClient(cc).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// interleaved: each reply must arrive before the next message is sent
	for i := 1; i <= 5; i++ {
		if err := st.Send(&echopb.EchoRequest{Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
		r, err := st.Recv()
		if err != nil || r.GetSeq() != uint64(i) || r.GetMessage() != fmt.Sprint(i) || r.GetPod() != eps[0].Pod {
			t.Fatalf("reply %d: %v %v", i, r, err)
		}
	}
	st.CloseSend()
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
}

func TestWebSocketThroughL7(t *testing.T) {
	e, caller := routedEnv(t)
	conn := e.dial(caller, vip)
	defer conn.Close()
	// the header route (x-canary) sends any path to v2; the echo pod
	// serves its WebSocket on /ws
	cfg, err := websocket.NewConfig("ws://"+vip+"/ws", "http://"+vip)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Header = http.Header{"X-Canary": {"yes"}}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("handshake through the proxy: %v", err)
	}
	defer ws.Close()
	var a echo.Answer
	if err := websocket.JSON.Receive(ws, &a); err != nil || a.Path != "/ws" {
		t.Fatalf("first message %+v %v", a, err)
	}
	for _, m := range []string{"one", "two"} {
		if err := websocket.Message.Send(ws, m); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != m {
			t.Fatalf("echo %q %v", got, err)
		}
	}
}
