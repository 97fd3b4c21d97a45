package proxy_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/tunnel/tunneltest"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/test/echo"
)

const node = "lab-node-1"

// lookup is a table OrigDstLookup keyed by the client IP: every test client
// binds its own loopback address.
type lookup struct {
	mu sync.Mutex
	m  map[netip.Addr]outbound.Original
	// hold, when set, stops every lookup (after a send on entered) until
	// it is closed: a connection accepted but not classified yet.
	hold, entered chan struct{}
}

func (l *lookup) Lookup(client, _ netip.AddrPort) (outbound.Original, bool) {
	l.mu.Lock()
	o, ok := l.m[client.Addr()]
	hold, entered := l.hold, l.entered
	l.mu.Unlock()
	if hold != nil {
		entered <- struct{}{}
		<-hold
	}
	return o, ok
}

type callers struct {
	mu sync.Mutex
	m  map[uint64]*weftv1.Workload
}

func (c *callers) ByCookie(k uint64) (*weftv1.Workload, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.m[k]
	return w, ok
}

type env struct {
	t        testing.TB
	ca       *tunneltest.CA
	ids      *tunneltest.Identities
	p        *proxy.Proxy
	out, in  string
	look     *lookup
	callers  *callers
	pol      *weftv1.NodePolicy
	nextIP   int
	nextPod  int
	serveErr chan error
	panics   panicWatch
}

// panicWatch counts log records that report a recovered panic.
type panicWatch struct{ n atomic.Int32 }

func (w *panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (w *panicWatch) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		w.n.Add(1)
	}
	return nil
}
func (w *panicWatch) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w *panicWatch) WithGroup(string) slog.Handler      { return w }

// goroutines counts live goroutines, leaving out the signal loop the fuzzing
// engine starts.
func goroutines() (int, string) {
	buf := make([]byte, 4<<20)
	all := string(buf[:runtime.Stack(buf, true)])
	n := 0
	for g := range strings.SplitSeq(all, "\n\n") {
		if !strings.Contains(g, "os/signal.loop") {
			n++
		}
	}
	return n, all
}

func checkGoroutines(t testing.TB) {
	before, _ := goroutines()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, all := goroutines()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines leaked: %d > %d\n%s", n, before, all)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// outboundLoops is the outbound's HTTP/1.1 event loops in the suite: the
// agent's default; go test ./agent/proxy -args -outbound-loops=0 runs it
// with a goroutine per connection.
var outboundLoops = flag.Int("outbound-loops", proxy.DefaultOutboundLoops(), "serve captured HTTP/1.1 clients in this many event loops (0: a goroutine per connection)")

func newEnv(t testing.TB, opts ...func(*proxy.Config)) *env {
	t.Helper()
	checkGoroutines(t)
	ca, err := tunneltest.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{
		t: t, ca: ca, ids: tunneltest.NewIdentities(ca.Bundle()),
		look:    &lookup{m: make(map[netip.Addr]outbound.Original)},
		callers: &callers{m: make(map[uint64]*weftv1.Workload)},
		nextIP:  1, nextPod: 10,
	}
	cfg := proxy.Config{Node: node, TrustDomain: ca.TD, Lookup: e.look, Callers: e.callers, Identities: e.ids,
		Logger: slog.New(&e.panics), OutboundLoops: *outboundLoops}
	for _, o := range opts {
		o(&cfg)
	}
	e.p, err = proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outL, err := proxy.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	inL, err := proxy.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.out, e.in = outL.Addr().String(), inL.Addr().String()
	e.pol = &weftv1.NodePolicy{Node: node, TrustDomain: "cluster.local", NodeTunnels: map[string]string{node: e.in}}
	e.serveErr = make(chan error, 1)
	go func() { e.serveErr <- e.p.Serve(outL, inL) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var stacks []byte
		dump := time.AfterFunc(4*time.Second, func() {
			buf := make([]byte, 1<<20)
			stacks = buf[:runtime.Stack(buf, true)]
		})
		if err := e.p.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v\nstacks while draining:\n%s", err, stacks)
		}
		dump.Stop()
		if err := <-e.serveErr; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	e.apply()
	return e
}

func (e *env) apply() {
	e.t.Helper()
	if err := e.p.Update(e.pol); err != nil {
		e.t.Fatalf("update: %v", err)
	}
}

func id(ns, sa string) string { return fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, sa) }

// caller enrolls a client workload in namespace ns and returns its netns cookie.
func (e *env) caller(ns string) uint64 {
	e.nextPod++
	w := &weftv1.Workload{Namespace: ns, Name: fmt.Sprintf("client-%d", e.nextPod), ServiceAccount: "client", Identity: id(ns, "client")}
	e.ids.Put(e.ca.MustIssue(spiffeid.RequireFromString(w.Identity)))
	cookie := uint64(1000 + e.nextPod)
	e.callers.mu.Lock()
	e.callers.m[cookie] = w
	e.callers.mu.Unlock()
	return cookie
}

// pod starts a listener on a fresh loopback IP, enrolls it as a workload of
// namespace ns and returns its endpoint.
func (e *env) pod(ns, sa string) (net.Listener, *weftv1.Endpoint) {
	e.t.Helper()
	e.nextPod++
	ip := fmt.Sprintf("127.0.2.%d", e.nextPod)
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { l.Close() })
	ap := netip.MustParseAddrPort(l.Addr().String())
	name := fmt.Sprintf("pod-%d", e.nextPod)
	e.pol.Workloads = append(e.pol.Workloads, &weftv1.Workload{Namespace: ns, Name: name, ServiceAccount: sa, Identity: id(ns, sa), Ips: []string{ip}})
	e.ids.Put(e.ca.MustIssue(spiffeid.RequireFromString(id(ns, sa))))
	return l, &weftv1.Endpoint{Ip: ip, Port: uint32(ap.Port()), Node: node, Pod: ns + "/" + name, Identity: id(ns, sa), Ready: true, Serving: true}
}

// httpPod runs test/echo's handler (HTTP/1.1, h2c, WebSocket) as pod name.
func (e *env) httpPod(ns, sa string) *weftv1.Endpoint {
	l, ep := e.pod(ns, sa)
	srv := echo.NewHTTPServer(echo.Identity{Pod: ep.Pod, Namespace: ns})
	go srv.Serve(l)
	e.t.Cleanup(func() { srv.Close() })
	return ep
}

func (e *env) grpcPod(ns, sa string) *weftv1.Endpoint {
	l, ep := e.pod(ns, sa)
	srv := echo.NewGRPCServer(echo.Identity{Pod: ep.Pod, Namespace: ns})
	go srv.Serve(l)
	e.t.Cleanup(srv.Stop)
	return ep
}

func (e *env) cluster(name string, proto weftv1.Protocol, eps ...*weftv1.Endpoint) {
	e.pol.Clusters = append(e.pol.Clusters, &weftv1.Cluster{Name: name, Protocol: proto, Endpoints: eps})
}

// service adds a meshed service port; vip like "10.96.0.10".
func (e *env) service(ns, name, vip string, port uint32, proto weftv1.Protocol, def string) *weftv1.ServicePort {
	sp := &weftv1.ServicePort{Namespace: ns, Name: name, Vips: []string{vip}, Port: port, Protocol: proto, DefaultCluster: def}
	e.pol.Services = append(e.pol.Services, sp)
	return sp
}

// dial opens a "captured" connection from caller to vip:port: it binds a
// fresh client loopback IP and records the original destination for it.
func (e *env) dial(cookie uint64, dst string) net.Conn {
	e.t.Helper()
	c, err := e.dialErr(cookie, dst)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) dialErr(cookie uint64, dst string) (net.Conn, error) {
	e.look.mu.Lock()
	e.nextIP++
	n := e.nextIP % (200 * 250)
	ip := netip.AddrFrom4([4]byte{127, byte(3 + n/250), byte(1 + n%250), 1})
	e.look.m[ip] = outbound.Original{Dst: netip.MustParseAddrPort(dst), NetnsCookie: cookie}
	e.look.mu.Unlock()
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)), Timeout: 5 * time.Second}
	return d.Dial("tcp", e.out)
}

// client is an HTTP/1.1 client whose connections are captured from caller
// towards dst.
func (e *env) client(cookie uint64, dst string) *http.Client {
	tr := &http.Transport{
		DialContext:        func(ctx context.Context, _, _ string) (net.Conn, error) { return e.dialErr(cookie, dst) },
		DisableCompression: true,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func prefix(p string) *weftv1.HTTPMatch {
	return &weftv1.HTTPMatch{Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: p}}
}

func backends(pairs ...any) []*weftv1.BackendRef {
	var out []*weftv1.BackendRef
	for i := 0; i < len(pairs); i += 2 {
		out = append(out, &weftv1.BackendRef{Cluster: pairs[i].(string), Weight: uint32(pairs[i+1].(int))})
	}
	return out
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// requestLoad sends requests from n goroutines, one after another in each,
// until stop, and counts them and their failures.
type requestLoad struct {
	stopc        chan struct{}
	wg           sync.WaitGroup
	sent, failed atomic.Int64
	mu           sync.Mutex
	errs         []string
}

// startRequests runs do (one request: nil when it was answered as
// expected) from n goroutines.
func startRequests(n int, do func() error) *requestLoad {
	l := &requestLoad{stopc: make(chan struct{})}
	for range n {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stopc:
					return
				default:
				}
				l.sent.Add(1)
				if err := do(); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, err.Error())
					l.mu.Unlock()
				}
			}
		})
	}
	return l
}

// stop ends the load; it returns the requests sent, those that failed and
// the first errors.
func (l *requestLoad) stop() (sent, failed int64, errs []string) {
	close(l.stopc)
	l.wg.Wait()
	return l.sent.Load(), l.failed.Load(), l.errs[:min(len(l.errs), 5)]
}
