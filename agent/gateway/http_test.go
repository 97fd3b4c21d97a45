package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func TestHostMatches(t *testing.T) {
	for _, c := range []struct {
		pattern, host string
		want          bool
	}{
		{"", "anything.example", true},
		{"", "", true},
		{"foo.example.com", "foo.example.com", true},
		{"Foo.Example.com", "foo.example.com", true},
		{"foo.example.com", "bar.example.com", false},
		{"*.example.com", "foo.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "fooexample.com", false},
		{"*.example.com", "", false},
	} {
		if got := HostMatches(c.pattern, c.host); got != c.want {
			t.Errorf("HostMatches(%q, %q) = %v", c.pattern, c.host, got)
		}
	}
	for in, want := range map[string]string{"Foo.Example.com.:8080": "foo.example.com", "x:80": "x", "[::1]:80": "::1", "[::1]": "::1", "": ""} {
		if got := NormalizeHost(in); got != want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPickListenerAndVHost(t *testing.T) {
	p := &Port{Listeners: []*Listener{
		{Name: "exact", Hostname: "foo.example.com", VHosts: []VHost{{Hostname: "foo.example.com"}}},
		{Name: "wild", Hostname: "*.example.com", VHosts: []VHost{{Hostname: "bar.example.com"}, {Hostname: "*.example.com"}}},
		{Name: "any", VHosts: []VHost{{Hostname: "other.test"}}},
	}}
	for _, c := range []struct{ host, listener, vhost string }{
		{"foo.example.com", "exact", "foo.example.com"},
		{"bar.example.com", "wild", "bar.example.com"},
		{"baz.example.com", "wild", "*.example.com"},
		{"other.test", "any", "other.test"},
		{"nothing.test", "any", ""},
		{"", "any", ""},
	} {
		l := p.PickListener(c.host)
		if l == nil || l.Name != c.listener {
			t.Errorf("PickListener(%q) = %v, want %s", c.host, l, c.listener)
			continue
		}
		vh := l.PickVHost(c.host)
		if got := ""; vh != nil {
			got = vh.Hostname
			if got != c.vhost {
				t.Errorf("PickVHost(%q) = %q, want %q", c.host, got, c.vhost)
			}
		} else if c.vhost != "" {
			t.Errorf("PickVHost(%q) = nil, want %q", c.host, c.vhost)
		}
	}
	noAny := &Port{Listeners: []*Listener{{Name: "named", Hostname: "a.test"}}}
	if l := noAny.PickListener(""); l != nil {
		t.Errorf("no SNI picked %s, want none", l.Name)
	}
}

func TestHTTPRoutingThroughTheRouteEngine(t *testing.T) {
	a, b, c := echoServer(t, "a"), echoServer(t, "b"), echoServer(t, "c")
	filtered := httpTableTo("/filtered", be("c", 1))
	filtered.Rules[0].Filters = []*weftv1.Filter{
		{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &weftv1.HeaderModifier{Set: []*weftv1.HeaderModifier_Header{{Name: "X-Added", Value: "yes"}}}}},
		{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &weftv1.HeaderModifier{Add: []*weftv1.HeaderModifier_Header{{Name: "X-Gateway", Value: "weft"}}}}},
		{Kind: &weftv1.Filter_UrlRewrite{UrlRewrite: &weftv1.URLRewrite{Path: &weftv1.PathModifier{Type: weftv1.PathModifier_TYPE_PREFIX, Value: "/rewritten"}}}},
	}
	redirect := httpTableTo("/old", be("a", 1))
	redirect.Rules[0].Backends = nil
	redirect.Rules[0].Filters = []*weftv1.Filter{{Kind: &weftv1.Filter_RequestRedirect{RequestRedirect: &weftv1.RequestRedirect{Hostname: "new.example.com", StatusCode: 301}}}}
	p := policy([]*weftv1.GatewayPort{gport(80,
		httpListener("foo", "foo.example.com", vhost("foo.example.com", httpTableTo("/only-foo", be("a", 1)))),
		httpListener("any", "",
			vhost("weighted.example.com", httpTableTo("/", be("a", 1), be("b", 3))),
			vhost("*.example.com", filtered, redirect, httpTableTo("/", be("b", 1))),
		),
	)}, cluster("a", a), cluster("b", b), cluster("c", c))
	g, _ := newTestGateway(t, p)

	for _, tc := range []struct {
		host, path string
		code       int
		body       string
	}{
		{"foo.example.com:80", "/only-foo/x", 200, "a /only-foo/x foo.example.com:80"},
		{"foo.example.com", "/elsewhere", 404, ""},                      // listener found, no rule
		{"nomatch.test", "/", 404, ""},                                  // listener "any", no virtual host
		{"x.example.com", "/filtered/p?q=1", 200, "c /rewritten/p?q=1"}, // first table
		{"x.example.com", "/other", 200, "b /other"},                    // third table
		{"x.example.com", "/old/page", 301, ""},                         // second table: redirect
	} {
		code, body, h := get(t, g, 80, tc.host, tc.path)
		if code != tc.code || !strings.HasPrefix(body, tc.body) {
			t.Errorf("%s%s = %d %q, want %d %q", tc.host, tc.path, code, body, tc.code, tc.body)
		}
		if tc.code == 301 && h.Get("Location") != "http://new.example.com/old/page" {
			t.Errorf("Location = %q", h.Get("Location"))
		}
		if strings.HasPrefix(tc.body, "c ") && (h.Get("X-Saw-Added") != "yes" || h.Get("X-Gateway") != "weft") {
			t.Errorf("filters not applied: %v", h)
		}
	}
	counts := map[string]int{}
	for range 200 {
		_, body, _ := get(t, g, 80, "weighted.example.com", "/")
		counts[body[:1]]++
	}
	if counts["a"] < 20 || counts["a"] > 90 || counts["a"]+counts["b"] != 200 {
		t.Errorf("weights 1:3 gave %v", counts)
	}
}

func TestHTTPEnrolledEndpointNeverPlaintext(t *testing.T) {
	a := echoServer(t, "a")
	cl := cluster("a", a)
	cl.Endpoints[0].Plaintext = false
	cl.Endpoints[0].Node = "n1"
	p := policy([]*weftv1.GatewayPort{gport(80, httpListener("any", "", vhost("", httpTableTo("/", be("a", 1)))))}, cl)
	p.NodeTunnels = map[string]string{"n1": "127.0.0.1:1"}
	g, _ := newTestGateway(t, p)
	if code, body, _ := get(t, g, 80, "x", "/"); code != http.StatusBadGateway || strings.HasPrefix(body, "a ") {
		t.Fatalf("enrolled endpoint without a tunnel or SVID: %d %q, want 502 and no backend answer", code, body)
	}
}

// h2cGateway routes every request on port 80 to cluster name (proto) at
// addr, and returns a client of cleartext HTTP/2 with prior knowledge.
func h2cGateway(t *testing.T, name string, proto weftv1.Protocol, addr netip.AddrPort) (*Gateway, *http.Client) {
	cl := cluster(name, addr)
	cl.Protocol = proto
	p := policy([]*weftv1.GatewayPort{gport(80, httpListener("any", "", vhost("", httpTableTo("/", be(name, 1)))))}, cl)
	g, _ := newTestGateway(t, p)
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	t.Cleanup(tr.CloseIdleConnections)
	return g, &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func TestH2CAndGRPCStyleRequests(t *testing.T) {
	a := echoServer(t, "a")
	g, c := h2cGateway(t, "a", weftv1.Protocol_PROTOCOL_H2C, a)
	req, _ := http.NewRequest(http.MethodPost, "http://"+g.Addr(80).String()+"/pkg.Svc/Method", strings.NewReader("x"))
	req.Header.Set("Content-Type", "application/grpc")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("X-Backend") != "a" {
		t.Fatalf("h2c: %d proto %d backend %q", resp.StatusCode, resp.ProtoMajor, resp.Header.Get("X-Backend"))
	}
}

// TestH2CStreamsAndTrailersThroughTheGateway: a gRPC-style exchange with
// an h2c backend, both bodies streamed and the backend's status in
// trailers (gRPC's grpc-status), and concurrent streams on one client
// connection, each answered with its own body.
func TestH2CStreamsAndTrailersThroughTheGateway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			t.Errorf("backend request over %s", r.Proto)
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
		w.Header().Set("Content-Type", "application/grpc")
		w.Write(append([]byte("echo:"), body...))
		w.(http.Flusher).Flush()
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set("Grpc-Message", "ok "+r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	g, c := h2cGateway(t, "g", weftv1.Protocol_PROTOCOL_GRPC, netip.MustParseAddrPort(ln.Addr().String()))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			path := fmt.Sprintf("/pkg.Svc/M%d", i)
			req, _ := http.NewRequest(http.MethodPost, "http://"+g.Addr(80).String()+path, strings.NewReader(path))
			req.Header.Set("Content-Type", "application/grpc")
			resp, err := c.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(b) != "echo:"+path ||
				resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Grpc-Message") != "ok "+path {
				t.Errorf("%s: %d over HTTP/%d, body %q (%v), trailers %v", path, resp.StatusCode, resp.ProtoMajor, b, err, resp.Trailer)
			}
		})
	}
	wg.Wait()
}

// TestWebSocketThroughTheGateway: an upgrade is completed end to end (the
// 101's connection stays writable through the attempt's body wrapper).
func TestWebSocketThroughTheGateway(t *testing.T) {
	srv := httptest.NewServer(websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	t.Cleanup(srv.Close)
	ap := srv.Listener.Addr().(*net.TCPAddr).AddrPort()
	p := policy([]*weftv1.GatewayPort{gport(80, httpListener("web", "", vhost("", httpTableTo("/", be("ws", 1)))))}, cluster("ws", ap))
	g, _ := newTestGateway(t, p)
	addr := g.Addr(80).String()
	cfg, err := websocket.NewConfig("ws://ws.example.com/ws", "http://ws.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, raw)
	if err != nil {
		t.Fatalf("websocket handshake through the gateway: %v", err)
	}
	defer ws.Close()
	for _, msg := range []string{"hello", "again"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		ws.SetDeadline(time.Now().Add(5 * time.Second))
		if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
			t.Fatalf("echo of %q: %q %v", msg, got, err)
		}
	}
}
