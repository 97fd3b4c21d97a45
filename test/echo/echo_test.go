package echo

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/test/echo/echopb"
)

var testID = Identity{Pod: "echo-abc", Namespace: "ns1", Node: "lab-node-2"}

func startHTTP(t *testing.T, id Identity) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewHTTPServer(id)
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return l.Addr().String()
}

func startGRPC(t *testing.T, id Identity) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewGRPCServer(id)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

func getAnswer(t *testing.T, c *http.Client, req *http.Request) (int, Answer) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a Answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("decode answer: %v", err)
	}
	return resp.StatusCode, a
}

func TestHTTPAnswerCarriesRequestAndPodFacts(t *testing.T) {
	addr := startHTTP(t, testID)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/some/path?x=1", strings.NewReader("body"))
	req.Host = "echo.ns1.svc.cluster.local"
	req.Header.Set("X-Test", "v1")
	code, a := getAnswer(t, http.DefaultClient, req)
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if a.Pod != "echo-abc" || a.Namespace != "ns1" || a.Node != "lab-node-2" {
		t.Errorf("identity = %q/%q/%q", a.Pod, a.Namespace, a.Node)
	}
	if a.Method != "POST" || a.Path != "/some/path?x=1" || a.Host != "echo.ns1.svc.cluster.local" || a.Proto != "HTTP/1.1" {
		t.Errorf("request facts = %+v", a)
	}
	if got := a.Headers["X-Test"]; len(got) != 1 || got[0] != "v1" {
		t.Errorf("headers[X-Test] = %v", got)
	}
	if a.Remote == "" {
		t.Error("remote is empty")
	}
}

func TestHTTPStatusAndDelay(t *testing.T) {
	addr := startHTTP(t, testID)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/status/503", 503},
		{"/status/204", 204},
		{"/status/42", 400},
		{"/status/abc", 400},
		{"/?delay=10ms", 200},
		{"/?delay=forever", 400},
		{"/?delay=2m", 400},
	} {
		resp, err := http.Get("http://" + addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
	}
}

func TestHTTPH2C(t *testing.T) {
	addr := startHTTP(t, testID)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Transport: &http.Transport{Protocols: p}}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	_, a := getAnswer(t, c, req)
	if a.Proto != "HTTP/2.0" {
		t.Errorf("proto = %q, want HTTP/2.0", a.Proto)
	}
}

func TestWebSocketEcho(t *testing.T) {
	addr := startHTTP(t, testID)
	ws, err := websocket.Dial("ws://"+addr+"/ws", "", "http://"+addr+"/")
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var a Answer
	if err := websocket.JSON.Receive(ws, &a); err != nil {
		t.Fatal(err)
	}
	if a.Pod != "echo-abc" || a.Path != "/ws" {
		t.Errorf("first message = %+v", a)
	}
	for _, msg := range []string{"hello", "again"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil {
			t.Fatal(err)
		}
		if got != msg {
			t.Errorf("echo = %q, want %q", got, msg)
		}
	}
}

func TestGRPCMethods(t *testing.T) {
	addr := startGRPC(t, testID)
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := echopb.NewEchoClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "x-test", "v1")
	for name, call := range map[string]func(context.Context, *echopb.EchoRequest, ...grpc.CallOption) (*echopb.EchoReply, error){
		echopb.Echo_Echo_FullMethodName: c.Echo,
		echopb.Echo_Ping_FullMethodName: c.Ping,
	} {
		rep, err := call(ctx, &echopb.EchoRequest{Message: "hi"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if rep.Pod != "echo-abc" || rep.Namespace != "ns1" || rep.Method != name || rep.Path != name || rep.Message != "hi" || rep.Proto != "HTTP/2.0" {
			t.Errorf("%s: reply %+v", name, rep)
		}
		if rep.Host != addr {
			t.Errorf("%s: host = %q, want %q", name, rep.Host, addr)
		}
		if h := rep.Headers["x-test"]; h == nil || len(h.Values) != 1 || h.Values[0] != "v1" {
			t.Errorf("%s: headers[x-test] = %v", name, h)
		}
	}
	_, err = c.Echo(ctx, &echopb.EchoRequest{Code: uint32(codes.Unavailable)})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("code 14 call: %v, want Unavailable", err)
	}

	stream, err := c.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 3; i++ {
		if err := stream.Send(&echopb.EchoRequest{Message: "m"}); err != nil {
			t.Fatal(err)
		}
		rep, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if rep.Seq != i || rep.Method != echopb.Echo_Stream_FullMethodName {
			t.Errorf("stream reply %d: %+v", i, rep)
		}
	}
	stream.CloseSend()
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("after CloseSend: %v, want EOF", err)
	}
}

func TestClientHTTPTally(t *testing.T) {
	a := startHTTP(t, Identity{Pod: "pod-a"})
	res, err := Run(context.Background(), ClientConfig{URL: "http://" + a + "/status/503", Count: 3, Method: "PUT"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 3 || res.Errors != 0 || res.Pods["pod-a"] != 3 || res.Status["503"] != 3 {
		t.Errorf("result = %+v", res)
	}
	// Nothing listens on a closed listener's port: every request is an error.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	res, err = Run(context.Background(), ClientConfig{URL: "http://" + dead + "/", Count: 2, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 2 || res.Errors != 2 || len(res.Pods) != 0 || res.LastError == "" {
		t.Errorf("result against a dead port = %+v", res)
	}
	if len(res.Failures) != 2 {
		t.Fatalf("failures = %+v, want the 2 refused requests", res.Failures)
	}
	for _, f := range res.Failures {
		if f.Dialed || f.Start.IsZero() || f.End.Before(f.Start) || !strings.Contains(f.Error, "refused") {
			t.Errorf("failure against a dead port = %+v, want not dialed, refused, start <= end", f)
		}
	}
}

// A connection the server accepts and cuts before answering is a failure
// that was dialed: what a request in flight in a killed proxy looks like.
func TestClientFailureCutAfterDial(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 4096))
			c.Close()
		}
	}()
	res, err := Run(context.Background(), ClientConfig{URL: "http://" + l.Addr().String() + "/", Count: 1, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 1 || len(res.Failures) != 1 || !res.Failures[0].Dialed {
		t.Errorf("result = %+v, want one failure after the dial", res)
	}
}

// With a rate, requests start on their own connections at that pace; the
// tally counts the peer address each backend saw.
func TestClientRateAndRemotes(t *testing.T) {
	a := startHTTP(t, Identity{Pod: "pod-r"})
	res, err := Run(context.Background(), ClientConfig{URL: "http://" + a + "/", Count: 20, Rate: 200})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 20 || res.Errors != 0 || res.Pods["pod-r"] != 20 || res.Remotes["127.0.0.1"] != 20 {
		t.Errorf("result = %+v", res)
	}
}

func TestClientSendsHeadersAndKeepsCookies(t *testing.T) {
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, r.Header.Get("X-A")+"|"+r.Host+"|"+r.Header.Get("Cookie"))
		http.SetCookie(w, &http.Cookie{Name: "s", Value: "v1"})
		w.Write([]byte(`{"pod":"p1"}`))
	}))
	defer srv.Close()
	for _, cookies := range []bool{false, true} {
		seen = nil
		res, err := Run(context.Background(), ClientConfig{URL: srv.URL, Count: 2, Cookies: cookies,
			Headers: [][2]string{{"X-A", "1"}, {"Host", "h.example"}}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Pods["p1"] != 2 || res.Status["200"] != 2 {
			t.Errorf("result = %+v", res)
		}
		wantSecond := "1|h.example|"
		if cookies {
			wantSecond += "s=v1"
		}
		if len(seen) != 2 || seen[0] != "1|h.example|" || seen[1] != wantSecond {
			t.Errorf("cookies=%v: server saw %q", cookies, seen)
		}
	}
}

func TestClientConnectionPerRequestUnlessKeepAlive(t *testing.T) {
	var conns []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conns = append(conns, r.RemoteAddr)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		keepAlive bool
		want      int
	}{{false, 3}, {true, 1}} {
		conns = nil
		if _, err := Run(context.Background(), ClientConfig{URL: srv.URL, Count: 3, KeepAlive: tc.keepAlive}); err != nil {
			t.Fatal(err)
		}
		distinct := map[string]bool{}
		for _, c := range conns {
			distinct[c] = true
		}
		if len(conns) != 3 || len(distinct) != tc.want {
			t.Errorf("keepAlive=%v: %d requests over %d connections, want 3 over %d", tc.keepAlive, len(conns), len(distinct), tc.want)
		}
	}
}

func TestClientGRPC(t *testing.T) {
	addr := startGRPC(t, Identity{Pod: "pod-g"})
	for _, m := range []string{"", "Ping", "Stream", echopb.Echo_Echo_FullMethodName} {
		res, err := Run(context.Background(), ClientConfig{URL: addr, GRPC: true, Count: 2, Method: m})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 2 || res.Errors != 0 || res.Pods["pod-g"] != 2 || res.Status["OK"] != 2 {
			t.Errorf("method %q: %+v", m, res)
		}
	}
	res, err := Run(context.Background(), ClientConfig{URL: addr, GRPC: true, Method: "/weft.echo.v1.Echo/Nope"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 1 || res.Status["Unimplemented"] != 1 {
		t.Errorf("unknown method: %+v", res)
	}
}

func TestClientRejectsBadConfig(t *testing.T) {
	for _, cfg := range []ClientConfig{
		{},
		{URL: "ftp://x"},
		{URL: "http://x/", GRPC: true},
		{URL: "127.0.0.1:1", GRPC: true, Method: "Nope"},
	} {
		if _, err := Run(context.Background(), cfg); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: err = %v, want ErrBadConfig", cfg, err)
		}
	}
}

func TestParseHeader(t *testing.T) {
	for in, want := range map[string][2]string{
		"a:b":      {"a", "b"},
		"X-A: b:c": {"X-A", "b:c"},
		"k:":       {"k", ""},
	} {
		got, err := ParseHeader(in)
		if err != nil || got != want {
			t.Errorf("ParseHeader(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"nocolon", ":v", ""} {
		if _, err := ParseHeader(in); !errors.Is(err, ErrBadConfig) {
			t.Errorf("ParseHeader(%q) err = %v", in, err)
		}
	}
}
