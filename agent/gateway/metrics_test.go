package gateway

import (
	"context"
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weft-mesh/weft/agent/metrics"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// sumBy adds name's counter values whose labels match want, keyed by the
// values of the labels in by.
func sumBy(t *testing.T, reg *prometheus.Registry, name string, want map[string]string, by ...string) map[string]float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			for k, v := range want {
				if l[k] != v {
					continue next
				}
			}
			key := make([]string, len(by))
			for i, b := range by {
				key[i] = l[b]
			}
			out[strings.Join(key, "|")] += m.GetCounter().GetValue()
		}
	}
	return out
}

func metricsGateway(t *testing.T, p *weftv1.GatewayPolicy) (*Gateway, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	tl := &testListens{fail: map[uint32]bool{}}
	g, err := New(Config{Listen: tl.listen, DialTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second, Metrics: metrics.NewProxy(reg, nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	if err := g.Apply(p); err != nil {
		t.Fatal(err)
	}
	return g, reg
}

// TestGatewayMetricsCountEachBackendExactly: a Gateway's requests are
// counted under the node proxy's names, the Gateway as their source: per
// backend exactly what the client saw answered by it, and the requests no
// rule matched under no route and no backend.
func TestGatewayMetricsCountEachBackendExactly(t *testing.T) {
	a, b := echoServer(t, "a"), echoServer(t, "b")
	p := policy([]*weftv1.GatewayPort{gport(80, httpListener("any", "", vhost("w.example.com", httpTableTo("/w", be("a", 1), be("b", 1)))))},
		cluster("a", a), cluster("b", b))
	g, reg := metricsGateway(t, p)
	seen := map[string]float64{}
	const n = 120
	for i := range n {
		path := "/w"
		if i%5 == 0 {
			path = "/nothing"
		}
		code, body, _ := get(t, g, 80, "w.example.com", path)
		backend := ""
		if code == 200 {
			backend = body[:1]
		}
		seen[backend+"|"+strconv.Itoa(code)]++
	}
	got := sumBy(t, reg, "weft_http_requests_total", map[string]string{"source_namespace": "infra", "source_workload": "gw"}, "backend", "code")
	if seen["a|200"] == 0 || seen["b|200"] == 0 || seen["|404"] != n/5 || !maps.Equal(got, seen) {
		t.Errorf("counted %v, the client saw %v", got, seen)
	}
	if r := sumBy(t, reg, "weft_http_requests_total", nil, "route"); r["app/r"] != n*4/5 || r[""] != n/5 {
		t.Errorf("by route: %v", r)
	}
}

// TestGatewayTraceHeadersPassThroughUnchanged: trace context and B3
// headers reach the backend as sent, and none is added when none is sent.
func TestGatewayTraceHeadersPassThroughUnchanged(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { json.NewEncoder(w).Encode(r.Header) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p := policy([]*weftv1.GatewayPort{gport(80, httpListener("any", "", vhost("t.example.com", httpTableTo("/", be("h", 1)))))},
		cluster("h", netip.MustParseAddrPort(ln.Addr().String())))
	g, _ := metricsGateway(t, p)
	trace := map[string]string{
		"Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "Tracestate": "rojo=00f067aa0ba902b7",
		"B3": "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1", "X-B3-Traceid": "80f198ee56343ba864fe8b2a57d3eff7",
		"X-B3-Spanid": "e457b5a2e4d86bd1", "X-B3-Parentspanid": "05e3ac9a4f6e3b90", "X-B3-Sampled": "1", "X-B3-Flags": "1",
	}
	for _, sent := range []map[string]string{trace, nil} {
		var hdr []string
		for k, v := range sent {
			hdr = append(hdr, k, v)
		}
		code, body, _ := get(t, g, 80, "t.example.com", "/", hdr...)
		var got http.Header
		if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 {
			t.Fatalf("%d %q: %v", code, body, err)
		}
		for k, want := range trace {
			v, ok := got[k]
			switch {
			case sent == nil && ok:
				t.Errorf("the gateway invented %s: %q", k, v)
			case sent != nil && !slices.Equal(v, []string{want}):
				t.Errorf("%s arrived as %q, sent %q", k, v, want)
			}
		}
	}
}
