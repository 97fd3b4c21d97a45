package inbound_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/agent/proxy/authz"
	"github.com/weft-mesh/weft/agent/proxy/inbound"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/agent/proxy/tunnel/tunneltest"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

var frontendID = spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/frontend")

// policies makes an inbound.Config.Authz of a swappable table for the
// workload b/server-0 at the pod's address.
type policies struct {
	pod netip.Addr
	tab atomic.Pointer[authz.Table]
}

func (p *policies) set(t *testing.T, authzs ...*weftv1.AuthzPolicy) {
	t.Helper()
	for _, a := range authzs {
		a.Workloads = []string{"b/server-0"}
	}
	tab, err := authz.Compile(&weftv1.NodePolicy{
		TrustDomain: "cluster.local",
		Workloads:   []*weftv1.Workload{{Namespace: "b", Name: "server-0", Identity: serverID.String(), Ips: []string{p.pod.String()}}},
		Authz:       authzs,
	}, serverID.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	p.tab.Store(tab)
}

func (p *policies) lookup(a netip.Addr) *authz.Workload {
	if a != p.pod {
		return nil
	}
	return p.tab.Load().For("b/server-0")
}

// startPod starts an inbound whose pod is served by serve on l.
func startPod(t *testing.T, pods *policies, serve func(net.Listener)) *fixture {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go serve(l)
	pod := netip.MustParseAddrPort(l.Addr().String())
	pods.pod = pod.Addr()
	ca, err := tunneltest.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	f := startWithCA(t, ca, serverID, nil, func(c *inbound.Config) {
		c.Local = local{pods: map[netip.Addr]spiffeid.ID{pod.Addr(): serverID}, ids: []spiffeid.ID{serverID}}
		c.Authz = pods.lookup
	})
	f.pod = pod
	return f
}

func allowFrontend(port uint16) *weftv1.AuthzPolicy {
	return &weftv1.AuthzPolicy{Name: "b/callers", Action: weftv1.AuthzAction_AUTHZ_ACTION_ALLOW,
		Rules: []*weftv1.AuthzRule{{Sources: []*weftv1.AuthzSource{{Identity: frontendID.String()}}, Ports: []uint32{uint32(port)}}}}
}

func TestAuthzConnectionRefusedBeforeThePod(t *testing.T) {
	checkGoroutines(t)
	var accepted, bytes atomic.Int64
	pods := &policies{}
	f := startPod(t, pods, func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					bytes.Add(int64(n))
					if err != nil {
						return
					}
					c.Write(buf[:n])
				}
			}()
		}
	})
	pods.set(t, allowFrontend(f.pod.Port()))
	d := dialer(t, f.ca, f.ca.MustIssue(clientID), f.ca.MustIssue(frontendID))
	_, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("a caller no policy allows: %v, want a 403 refusal", err)
	}
	if n := f.server.Refusals().Count(limits.Unauthorized); n != 1 {
		t.Errorf("unauthorized refusals %d, want 1", n)
	}
	// the caller the policy names gets through on the same tunnel node
	c, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: frontendID, Dest: serverID})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	c.Close()
	if got := accepted.Load(); got != 1 {
		t.Fatalf("pod accepted %d connections, want only the allowed one", got)
	}
	if got := bytes.Load(); got != int64(len("hello\n")) {
		t.Fatalf("pod read %d bytes, want only the allowed connection's", got)
	}
	// the policy removed: the next connection of the other caller is allowed
	pods.set(t)
	c, err = d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
	if err != nil {
		t.Fatalf("no policy: %v", err)
	}
	roundTrip(t, c)
	c.Close()
	d.Close()
}

// tunnelTransport is an HTTP client transport whose connections are tunnel
// streams as source; dials counts them.
func tunnelTransport(f *fixture, d *tunnel.Dialer, source spiffeid.ID, h2 bool, dials *atomic.Int64) *http.Transport {
	var p http.Protocols
	if h2 {
		p.SetUnencryptedHTTP2(true)
	} else {
		p.SetHTTP1(true)
	}
	return &http.Transport{Protocols: &p, MaxConnsPerHost: 1, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		dials.Add(1)
		return d.Dial(ctx, tunnel.Target{Node: f.node, Addr: f.pod, Source: source, Dest: serverID})
	}}
}

func TestAuthzHTTPRefusedRequestKeepsConnection(t *testing.T) {
	checkGoroutines(t)
	var mu sync.Mutex
	var seen []string
	pods := &policies{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/verbatim" && (r.URL.RawQuery != "a=1;b=2" || r.Header.Get("X-Forwarded-For") != "10.1.2.3") {
			w.WriteHeader(http.StatusExpectationFailed)
			return
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "pod "+r.URL.Path)
	})}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv.Protocols = &protos
	f := startPod(t, pods, func(l net.Listener) { srv.Serve(l) })
	t.Cleanup(func() { srv.Close() })
	// the issue's two example policies
	pods.set(t, allowFrontend(f.pod.Port()), &weftv1.AuthzPolicy{
		Name: "b/no-admin-writes", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Application: true,
		Rules: []*weftv1.AuthzRule{{
			Sources: []*weftv1.AuthzSource{{Identity: frontendID.String()}},
			Http:    []*weftv1.HTTPMatch{{Method: "POST", Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/admin"}}},
		}},
	})
	d := dialer(t, f.ca, f.ca.MustIssue(frontendID), f.ca.MustIssue(clientID))
	for _, h2 := range []bool{false, true} {
		var dials atomic.Int64
		tr := tunnelTransport(f, d, frontendID, h2, &dials)
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		do := func(method, path string, want int) {
			t.Helper()
			req, _ := http.NewRequest(method, "http://cart"+path, strings.NewReader("body"))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("h2 %v: %s %s: %v", h2, method, path, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Fatalf("h2 %v: %s %s: %d %q, want %d", h2, method, path, resp.StatusCode, b, want)
			}
		}
		do("GET", "/admin", 200)
		do("POST", "/admin/users", 403)
		do("POST", "/cart", 200)
		do("POST", "//admin", 400) // not reachable by another spelling
		do("POST", "/x/../admin", 400)
		do("POST", "/%61dmin", 400)
		do("GET", "/cart", 200)
		req, _ := http.NewRequest("GET", "http://cart/verbatim?a=1;b=2", nil)
		req.Header.Set("X-Forwarded-For", "10.1.2.3")
		if resp, err := c.Do(req); err != nil || resp.StatusCode != 200 {
			t.Fatalf("h2 %v: the request did not reach the pod as sent: %v %v", h2, resp, err)
		} else {
			resp.Body.Close()
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("h2 %v: %d tunnel streams, want the refused requests to keep the first", h2, n)
		}
		tr.CloseIdleConnections()
	}
	mu.Lock()
	for _, s := range seen {
		if strings.Contains(s, "admin") && strings.HasPrefix(s, "POST") {
			t.Errorf("the pod saw a refused request: %s", s)
		}
	}
	mu.Unlock()
	// another caller is refused on connect (no ALLOW rule can match)
	if _, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID}); err == nil {
		t.Error("a caller no ALLOW rule names got a stream")
	}
	// the DENY policy removed: the stream is spliced, POST /admin reaches the pod
	pods.set(t, allowFrontend(f.pod.Port()))
	var dials atomic.Int64
	tr := tunnelTransport(f, d, frontendID, false, &dials)
	resp, err := (&http.Client{Transport: tr}).Post("http://cart/admin/users", "text/plain", strings.NewReader("x"))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after removal: %v %v", resp, err)
	}
	resp.Body.Close()
	tr.CloseIdleConnections()
	d.Close()
}

func TestAuthzGRPCPermissionDenied(t *testing.T) {
	checkGoroutines(t)
	pods := &policies{}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	f := startPod(t, pods, func(l net.Listener) { gs.Serve(l) })
	t.Cleanup(gs.Stop)
	pods.set(t, &weftv1.AuthzPolicy{
		Name: "b/no-intruders", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Application: true,
		Rules: []*weftv1.AuthzRule{{AnySource: true, Http: []*weftv1.HTTPMatch{{
			Path:    &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_EXACT, Value: "/grpc.health.v1.Health/Check"},
			Headers: []*weftv1.StringMatch{{Type: weftv1.MatchType_MATCH_TYPE_EXACT, Name: "x-role", Value: "intruder"}},
		}}}},
	})
	d := dialer(t, f.ca, f.ca.MustIssue(frontendID))
	var dials atomic.Int64
	cc, err := grpc.NewClient("passthrough:///cart", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			dials.Add(1)
			return d.Dial(ctx, tunnel.Target{Node: f.node, Addr: f.pod, Source: frontendID, Dest: serverID})
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	check := func(md ...string) error {
		_, err := hc.Check(metadata.AppendToOutgoingContext(ctx, md...), &healthpb.HealthCheckRequest{})
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("allowed call: %v", err)
	}
	err = check("x-role", "intruder")
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("denied call: %v, want PermissionDenied", err)
	}
	if err := check(); err != nil {
		t.Fatalf("allowed call after a denied one: %v", err)
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("%d tunnel streams, want one", n)
	}
	cc.Close()
	d.Close()
}

func TestAuthzNoPolicyAllows(t *testing.T) {
	checkGoroutines(t)
	pods := &policies{}
	f := startPod(t, pods, func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	})
	// a policy for another workload only
	pods.set(t)
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	c, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	c.Close()
	d.Close()
}

// A policy that refuses a spliced connection closes it when it arrives.
func TestAuthzPolicyChangeClosesRefusedConnections(t *testing.T) {
	checkGoroutines(t)
	pods := &policies{}
	f := startPod(t, pods, func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	})
	pods.set(t) // no policy
	d := dialer(t, f.ca, f.ca.MustIssue(clientID), f.ca.MustIssue(frontendID))
	dial := func(id spiffeid.ID) *tunnel.Conn {
		c, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: id, Dest: serverID})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c)
		return c
	}
	other, front := dial(clientID), dial(frontendID)
	if n := f.server.Reauthorize(); n != 0 {
		t.Fatalf("nothing changed, %d closed", n)
	}
	pods.set(t, allowFrontend(f.pod.Port()))
	if n := f.server.Reauthorize(); n != 1 {
		t.Fatalf("closed %d connections, want the one the policy refuses", n)
	}
	done := make(chan error, 1)
	go func() { _, err := other.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("the refused connection still reads")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the refused connection was not closed")
	}
	roundTrip(t, front) // the allowed one goes on
	other.Close()
	front.Close()
	d.Close()
}
