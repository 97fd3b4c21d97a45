package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/agent/proxy"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/test/echo"
	"github.com/weft-mesh/weft/test/echo/echopb"
)

// withMetrics turns the proxy's metrics on, on reg.
func withMetrics(reg *prometheus.Registry) func(*proxy.Config) {
	return func(c *proxy.Config) { c.Metrics = reg }
}

// callerOf enrolls a client workload of namespace ns owned by workload.
func (e *env) callerOf(ns, workload string) uint64 {
	cookie := e.caller(ns)
	e.callers.mu.Lock()
	e.callers.m[cookie].Workload = workload
	e.callers.m[cookie].WorkloadKind = "Deployment"
	e.callers.mu.Unlock()
	return cookie
}

// series is one sample of a gathered metric: its labels and value (a
// counter's value, a histogram's count).
type series struct {
	labels map[string]string
	value  float64
}

func gather(t *testing.T, reg *prometheus.Registry, name string) []series {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []series
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			s := series{labels: map[string]string{}}
			for _, l := range m.GetLabel() {
				s.labels[l.GetName()] = l.GetValue()
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				s.value = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				s.value = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				s.value = float64(m.GetHistogram().GetSampleCount())
			}
			out = append(out, s)
		}
	}
	return out
}

// sumBy adds the values of name's series that match want, keyed by the
// values of the labels in by ("|"-joined).
func sumBy(t *testing.T, reg *prometheus.Registry, name string, want map[string]string, by ...string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
next:
	for _, s := range gather(t, reg, name) {
		for k, v := range want {
			if s.labels[k] != v {
				continue next
			}
		}
		key := make([]string, len(by))
		for i, b := range by {
			key[i] = s.labels[b]
		}
		out[strings.Join(key, "|")] += s.value
	}
	return out
}

// metricsEnv: service web/web:80; cluster web/v1:80 has two pods and
// web/v2:80 one; route web/split sends /ok and /status to v1:v2 = 1:1.
// Anything else matches no route (404).
func metricsEnv(t *testing.T) (*env, *prometheus.Registry, map[string]string) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, withMetrics(reg))
	v1a, v1b := e.httpPod("web", "web"), e.httpPod("web", "web")
	v2 := e.httpPod("web", "web")
	e.cluster("web/v1:80", weftv1.Protocol_PROTOCOL_HTTP, v1a, v1b)
	e.cluster("web/v2:80", weftv1.Protocol_PROTOCOL_HTTP, v2)
	sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/v1:80")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules:   []*weftv1.Rule{{Route: "web/split", Backends: backends("web/v1:80", 1, "web/v2:80", 1)}},
		Matches: []*weftv1.Match{{Rule: 0, Http: prefix("/ok")}, {Rule: 0, Http: prefix("/status")}},
	}
	e.apply()
	backendOf := map[string]string{v1a.Pod: "web/v1:80", v1b.Pod: "web/v1:80", v2.Pod: "web/v2:80"}
	return e, reg, backendOf
}

func h2cClient(e *env, cookie uint64, dst string) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p, DialContext: func(context.Context, string, string) (net.Conn, error) { return e.dialErr(cookie, dst) }}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestMetricsHTTPCountsEachBackendExactly sends N requests over HTTP/1.1
// and h2c through a route with two backends (answered 200 and 503) and
// some that match no route: per backend and status, the counter equals
// what the client saw answered by that backend's pods, and the sum over
// backends is N.
func TestMetricsHTTPCountsEachBackendExactly(t *testing.T) {
	e, reg, backendOf := metricsEnv(t)
	caller := e.callerOf("app", "shop")
	clients := []*http.Client{e.client(caller, vip), h2cClient(e, caller, vip)}
	const n = 240
	seen := map[string]float64{} // backend|code as the client saw it
	for i := range n {
		path := "/ok"
		switch i % 4 {
		case 1:
			path = "/status/503"
		case 3:
			path = "/nothing"
		}
		resp, err := clients[i%2].Get("http://" + vip + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		backend := "" // answered by the proxy itself
		if resp.StatusCode != http.StatusNotFound {
			var a echo.Answer
			if err := json.Unmarshal(body, &a); err != nil {
				t.Fatalf("%s: %d %q: %v", path, resp.StatusCode, body, err)
			}
			backend = backendOf[a.Pod]
			if backend == "" {
				t.Fatalf("answered by unknown pod %q", a.Pod)
			}
		}
		seen[fmt.Sprintf("%s|%d", backend, resp.StatusCode)]++
	}
	caller1 := map[string]string{"source_namespace": "app", "source_workload": "shop", "destination_namespace": "web", "destination_service": "web"}
	got := sumBy(t, reg, "weft_http_requests_total", caller1, "backend", "code")
	if fmt.Sprint(got) != fmt.Sprint(seen) {
		t.Errorf("weft_http_requests_total by backend|code = %v, the client saw %v", got, seen)
	}
	if seen["web/v1:80|200"] == 0 || seen["web/v2:80|200"] == 0 || seen["web/v2:80|503"] == 0 {
		t.Fatalf("the split did not reach both backends: %v", seen)
	}
	// the route label: web/split for the routed requests, empty for the 404s
	routed := sumBy(t, reg, "weft_http_requests_total", caller1, "route")
	if routed["web/split"] != n*3/4 || routed[""] != n/4 {
		t.Errorf("by route: %v", routed)
	}
	total := 0.0
	for _, v := range sumBy(t, reg, "weft_http_requests_total", map[string]string{"route": "web/split"}, "backend") {
		total += v
	}
	if total != n*3/4 {
		t.Errorf("sum over backends of the route's requests = %v, want %d", total, n*3/4)
	}
	// one duration observation per request, under the same labels
	dur := sumBy(t, reg, "weft_http_request_duration_seconds", caller1, "backend")
	for b, c := range sumBy(t, reg, "weft_http_requests_total", caller1, "backend") {
		if dur[b] != c {
			t.Errorf("duration count of backend %q = %v, requests %v", b, dur[b], c)
		}
	}
	// no pod name, path or gRPC status on plain HTTP
	for _, s := range gather(t, reg, "weft_http_requests_total") {
		for k, v := range s.labels {
			if strings.Contains(v, "pod-") || strings.Contains(v, "/ok") || strings.Contains(v, "/status") {
				t.Errorf("label %s=%q names a pod or a path", k, v)
			}
		}
		if s.labels["grpc_status"] != "" {
			t.Errorf("grpc_status %q on an HTTP request", s.labels["grpc_status"])
		}
	}
	if r := sumBy(t, reg, "weft_redirected_connections_total", nil, "result"); r["l7"] < 2 {
		t.Errorf("redirected: %v", r)
	}
	if r := sumBy(t, reg, "weft_proxy_refusals_total", nil, "reason"); r["no_route"] != n/4 {
		t.Errorf("refusals no_route = %v, want %d", r["no_route"], n/4)
	}
	if r := sumBy(t, reg, "weft_inbound_connections_total", nil, "result"); r["accepted"] < 1 {
		t.Errorf("inbound: %v", r)
	}
}

// TestMetricsGRPCStatus: gRPC calls through a route with two backends are
// counted per backend with the gRPC status the client got, and a call that
// matches no rule (answered 404 by the proxy) is counted with the status
// gRPC derives from it (UNIMPLEMENTED).
func TestMetricsGRPCStatus(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, withMetrics(reg))
	a, b := e.grpcPod("rpc", "rpc"), e.grpcPod("rpc", "rpc")
	e.cluster("rpc/a:9090", weftv1.Protocol_PROTOCOL_GRPC, a)
	e.cluster("rpc/b:9090", weftv1.Protocol_PROTOCOL_GRPC, b)
	sp := e.service("rpc", "rpc", "10.96.0.30", 9090, weftv1.Protocol_PROTOCOL_GRPC, "rpc/a:9090")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_GRPC,
		Rules: []*weftv1.Rule{{Route: "rpc/g", RouteKind: weftv1.RouteKind_ROUTE_KIND_GRPC, Backends: backends("rpc/a:9090", 1, "rpc/b:9090", 1)}},
		// only Echo is routed: Ping matches no rule
		Matches: []*weftv1.Match{{Rule: 0, Grpc: &weftv1.GRPCMatch{Type: weftv1.MatchType_MATCH_TYPE_EXACT, Service: "weft.echo.v1.Echo", Method: "Echo"}}},
	}
	e.apply()
	caller := e.callerOf("app", "checkout")
	cc, err := grpc.NewClient("passthrough:///10.96.0.30:9090",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return e.dialErr(caller, "10.96.0.30:9090") }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cl := echopb.NewEchoClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	backendOf := map[string]string{a.Pod: "rpc/a:9090", b.Pod: "rpc/b:9090"}
	seen := map[string]float64{} // backend|code|grpc_status
	const n = 120
	for i := range n {
		code := []codes.Code{codes.OK, codes.PermissionDenied, codes.NotFound}[i%3]
		r, err := cl.Echo(ctx, &echopb.EchoRequest{Message: "m", Code: uint32(code)})
		st := status.Convert(err)
		if st.Code() != code {
			t.Fatalf("Echo asked %v, got %v", code, err)
		}
		pod := r.GetPod()
		if err != nil { // "asked to fail with code N by pod P"
			pod = st.Message()[strings.LastIndex(st.Message(), " ")+1:]
		}
		if backendOf[pod] == "" {
			t.Fatalf("answered by unknown pod %q (%v)", pod, err)
		}
		seen[fmt.Sprintf("%s|200|%d", backendOf[pod], code)]++
	}
	const unrouted = 7
	for range unrouted {
		_, err := cl.Ping(ctx, &echopb.EchoRequest{})
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("unrouted Ping: %v", err)
		}
	}
	seen[fmt.Sprintf("|404|%d", codes.Unimplemented)] += unrouted
	got := sumBy(t, reg, "weft_http_requests_total", map[string]string{"source_workload": "checkout", "destination_service": "rpc"}, "backend", "code", "grpc_status")
	if fmt.Sprint(got) != fmt.Sprint(seen) {
		t.Errorf("weft_http_requests_total by backend|code|grpc_status = %v, the client saw %v", got, seen)
	}
	if seen[fmt.Sprintf("rpc/a:9090|200|%d", codes.OK)] == 0 || seen[fmt.Sprintf("rpc/b:9090|200|%d", codes.OK)] == 0 {
		t.Fatalf("the split did not reach both backends: %v", seen)
	}
}

// TestMetricsTCP: an L4 connection is counted once, with the exact bytes
// each way.
func TestMetricsTCP(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, withMetrics(reg))
	ep := e.tcpPod("db", "db", func(c net.Conn) {
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		io.WriteString(c, "0123456789")
	})
	e.cluster("db/db:5432", weftv1.Protocol_PROTOCOL_TCP, ep)
	e.service("db", "db", "10.96.0.21", 5432, weftv1.Protocol_PROTOCOL_TCP, "db/db:5432")
	e.apply()
	caller := e.callerOf("app", "api")
	for range 3 {
		c := e.dial(caller, "10.96.0.21:5432")
		io.WriteString(c, "hello")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "0123456789" {
			t.Fatalf("read %q %v", got, err)
		}
	}
	want := map[string]string{"source_workload": "api", "destination_service": "db", "backend": "db/db:5432", "route": ""}
	deadline := time.Now().Add(5 * time.Second) // counted when the proxy closes its side
	for {
		conns := sumBy(t, reg, "weft_tcp_connections_total", want)[""]
		bytes := sumBy(t, reg, "weft_tcp_bytes_total", want, "direction")
		if conns == 3 && bytes["sent"] == 15 && bytes["received"] == 30 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections %v bytes %v, want 3, sent 15, received 30", conns, bytes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsInboundRefusedAndNoRecord: a tunnel connection that does not
// speak TLS is counted refused (not_tls) and as a handshake failure; a
// captured connection with no redirect record is counted no_record.
func TestMetricsInboundRefusedAndNoRecord(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, withMetrics(reg))
	c, err := net.Dial("tcp", e.in)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(c)
	c.Close()
	c, err = net.Dial("tcp", e.out) // from 127.0.0.1: no record
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.ReadAll(c)
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		in := sumBy(t, reg, "weft_inbound_connections_total", nil, "result")
		hs := sumBy(t, reg, "weft_tls_handshake_failures_total", nil, "reason")
		red := sumBy(t, reg, "weft_redirected_connections_total", nil, "result")
		if in["not_tls"] == 1 && hs["not_tls"] == 1 && red["no_record"] == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbound %v handshake failures %v redirected %v", in, hs, red)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsLoopHandoffs: with the outbound's event loops, a request the
// loop serves counts no hand-off, and one it gives to the goroutine server
// (an Expect, a chunked body) counts under its reason, once per connection;
// both are answered.
func TestMetricsLoopHandoffs(t *testing.T) {
	if *outboundLoops == 0 {
		t.Skip("the suite runs with a goroutine per connection (-outbound-loops=0): no loop hands anything over")
	}
	e, reg, _ := metricsEnv(t)
	caller := e.callerOf("app", "shop")
	send := func(req string) string {
		c, err := e.dialErr(caller, "10.96.0.10:80")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%q: %v", req, err)
		}
		resp.Body.Close()
		return resp.Status
	}
	for _, req := range []string{
		"GET /ok HTTP/1.1\r\nHost: web\r\n\r\n",
		"POST /ok HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
		"POST /ok HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
		"POST /ok HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
	} {
		if st := send(req); st == "" {
			t.Fatalf("%q: no answer", req)
		}
	}
	got := sumBy(t, reg, "weft_outbound_handoffs_total", nil, "reason")
	if got["upgrade"] != 1 || got["body"] != 2 || len(got) != 2 {
		t.Fatalf("hand-offs %v, want upgrade 1 (the Expect) and body 2 (the chunked bodies), nothing for the plain GET", got)
	}
}
