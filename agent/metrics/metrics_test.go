package metrics

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weft-mesh/weft/agent/proxy/limits"
)

// TestNilRecordsNothing: with metrics off (nil) every call is a no-op.
func TestNilRecordsNothing(t *testing.T) {
	var p *Proxy
	p.HTTPRequest(&Peer{}, 200, "", time.Millisecond)
	p.TCPConnection(&Peer{}, 1, 2)
	p.InboundAccepted()
	p.InboundRefused(limits.NotTLS)
	p.Redirected(RedirectL7)
	p.HandedOff(HandoffRoute)
	var a *Agent
	a.Applied(1)
	a.Refused()
	a.Enrolled(3)
}

// TestRequestSeries: one request is one counter series with its code and
// one histogram observation under the same peer labels; refusals are
// exported from limits.Refusals as they are.
func TestRequestSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	ref := limits.NewRefusals(limits.RefusalsConfig{})
	m := NewProxy(reg, ref)
	peer := &Peer{SourceNamespace: "shop", SourceWorkload: "cart", DestNamespace: "pay", DestService: "api", Route: "pay/r", Backend: "pay/api-v2:8080"}
	m.HTTPRequest(peer, 503, "", 2*time.Millisecond)
	m.HTTPRequest(peer, 200, "0", time.Millisecond)
	m.HTTPRequest(peer, 200, "0", time.Millisecond)
	m.HTTPRequest(peer, 999, "", time.Millisecond) // outside the cached codes
	ref.Refuse(limits.NoRoute, "")
	ref.Refuse(limits.NoRoute, "")
	series := func(code, grpc string) string {
		return fmt.Sprintf(`backend="pay/api-v2:8080",code=%q,destination_namespace="pay",destination_service="api",grpc_status=%q,route="pay/r",source_namespace="shop",source_workload="cart"`, code, grpc)
	}
	want := fmt.Sprintf(`
# HELP weft_http_requests_total L7 requests (HTTP/1.1, h2c, gRPC) answered to callers on this node, counted at the source node once the answer is done: by caller, Service, route, chosen backend, HTTP status and gRPC status (empty for non-gRPC).
# TYPE weft_http_requests_total counter
weft_http_requests_total{%s} 2
weft_http_requests_total{%s} 1
weft_http_requests_total{%s} 1
`, series("200", "0"), series("503", ""), series("999", ""))
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weft_http_requests_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(m.duration); n != 1 {
		t.Errorf("%d duration series, want 1", n)
	}
	if got := testutil.ToFloat64(refusalCollectorFor(t, reg, "no_route")); got != 2 {
		t.Errorf("weft_proxy_refusals_total{reason=no_route} = %v", got)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

// refusalCollectorFor returns a collector of the one refusal series of reason.
func refusalCollectorFor(t *testing.T, reg *prometheus.Registry, reason string) prometheus.Collector {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != "weft_proxy_refusals_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
			}
		}
	}
	t.Fatalf("no refusal series %q", reason)
	return nil
}

// BenchmarkHTTPRequest is what counting one request costs the proxy.
func BenchmarkHTTPRequest(b *testing.B) {
	m := NewProxy(prometheus.NewRegistry(), nil)
	peer := &Peer{SourceNamespace: "shop", SourceWorkload: "cart", DestNamespace: "pay", DestService: "api", Route: "pay/r", Backend: "pay/api-v2:8080"}
	b.ReportAllocs()
	for b.Loop() {
		m.HTTPRequest(peer, 200, "", time.Millisecond)
	}
}

// BenchmarkSeriesMemory reports the heap one (caller, Service, route,
// backend) combination costs with 3 status codes seen: 3 counter series and
// the 18 series of its histogram (README.md, Metrics, cardinality).
func BenchmarkSeriesMemory(b *testing.B) {
	const combos = 2000
	var per float64
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m := NewProxy(prometheus.NewRegistry(), nil)
		for i := range combos {
			peer := &Peer{SourceNamespace: "ns", SourceWorkload: fmt.Sprintf("workload-%d", i%50), DestNamespace: "ns",
				DestService: fmt.Sprintf("service-%d", i/50), Route: fmt.Sprintf("ns/route-%d", i/50), Backend: fmt.Sprintf("ns/backend-%d:8080", i/50)}
			for _, code := range []int{200, 404, 503} {
				m.HTTPRequest(peer, code, "", time.Millisecond)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		per = float64(after.HeapAlloc-before.HeapAlloc) / combos
		runtime.KeepAlive(m)
	}
	b.ReportMetric(per, "bytes/combination")
	b.ReportMetric(per/21, "bytes/series")
}
