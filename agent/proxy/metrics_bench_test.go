package proxy_test

import (
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// processCPU is the CPU time this process used so far (user + system).
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMetricsCost measures the CPU one HTTP/1.1 request costs through
// the node proxy (outbound, mTLS tunnel, inbound, echo backend, client: all
// in this process) with metrics off and on. The process's CPU includes the
// client's and the backend's, the same for both: on minus off is what
// metrics cost a request (make bench relates it to the proxy's own CPU).
// Compare with -count N and benchstat: the two differ by less than the
// noise of a shared machine.
func BenchmarkMetricsCost(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			var e *env
			if on {
				e = newEnv(b, withMetrics(prometheus.NewRegistry()))
			} else {
				e = newEnv(b)
			}
			ep := e.httpPod("web", "web")
			e.cluster("web/v1:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
			sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/v1:80")
			sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
				Rules:   []*weftv1.Rule{{Route: "web/r", Backends: backends("web/v1:80", 1)}},
				Matches: []*weftv1.Match{{Rule: 0, Http: prefix("/")}}}
			e.apply()
			c := e.client(e.callerOf("app", "shop"), vip)
			get := func() {
				resp, err := c.Get("http://" + vip + "/")
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			get()
			start := processCPU(b)
			n := 0
			for b.Loop() {
				get()
				n++
			}
			b.ReportMetric(float64((processCPU(b)-start).Microseconds())/float64(n), "cpu-us/req")
		})
	}
}
