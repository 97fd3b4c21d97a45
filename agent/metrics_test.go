package agent

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/api/promserve"
)

// TestMetricsEndpointServesTheAgentsMetrics: /metrics answers the text
// format with the agent's own metrics and the Go runtime's; the metrics
// listener is one of the agent's handed-over listeners when configured.
func TestMetricsEndpointServesTheAgentsMetrics(t *testing.T) {
	reg := promserve.Registry()
	m := metrics.NewAgent(reg)
	m.Applied(7)
	m.Enrolled(3)
	mux, stop := metricsMux(reg)
	defer stop()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"\nweft_policy_version 7\n", "\nweft_enrolled_pods 3\n", "\nweft_policy_applies_total 1\n", "\ngo_goroutines "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}

	a := &Agent{cfg: Config{HealthAddr: ":15021"}}
	if _, ok := a.listenAddrs()[lnMetrics]; ok {
		t.Error("a metrics listener without MetricsAddr")
	}
	a.cfg.MetricsAddr = ":15020"
	if got := a.listenAddrs()[lnMetrics]; got != ":15020" {
		t.Errorf("metrics listener address %q", got)
	}
}
