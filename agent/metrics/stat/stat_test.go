package stat

import (
	"bytes"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/api/promserve"
)

// scrape renders reg in the text format and parses it back, as weftctl
// reads an agent.
func scrape(t *testing.T, reg *prometheus.Registry) Families {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range fams {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	out, err := Parse(&b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func peer(route, backend string) *metrics.Peer {
	return &metrics.Peer{SourceNamespace: "faces", SourceWorkload: "client", DestNamespace: "faces", DestService: "color", Route: route, Backend: backend}
}

// TestWindowCountsTheIncrease: two agents, each scraped twice; the rows
// hold only what happened between the scrapes, summed over agents, with
// failures (5xx, gRPC non-OK), rates and percentiles.
func TestWindowCountsTheIncrease(t *testing.T) {
	var pairs []Pair
	for agent := range 2 {
		reg := promserve.Registry()
		m := metrics.NewProxy(reg, nil)
		v1, v2 := peer("faces/canary", "faces/color:80"), peer("faces/canary", "faces/color2:80")
		for range 5 { // before the window: not counted
			m.HTTPRequest(v1, 200, "", time.Second)
		}
		then := scrape(t, reg)
		for i := range 30 {
			code := 200
			if i < 3 {
				code = 503
			}
			m.HTTPRequest(v1, code, "", 3*time.Millisecond) // bucket (2.5ms, 5ms]
		}
		for range 10 {
			m.HTTPRequest(v2, 200, "", 20*time.Millisecond) // bucket (10ms, 25ms]
		}
		m.HTTPRequest(v2, 200, "14", 20*time.Millisecond) // gRPC UNAVAILABLE
		if agent == 1 {
			m.HTTPRequest(peer("", "faces/color:80"), 200, "", time.Millisecond)
		}
		pairs = append(pairs, Pair{Now: scrape(t, reg), Then: then, Seconds: 10})
	}
	rows := Window(pairs, Filter{Namespace: "faces"})
	if len(rows) != 3 {
		t.Fatalf("rows: %+v", rows)
	}
	byBackend := map[string]Row{}
	for _, r := range rows[1:] {
		byBackend[r.Backend] = r
	}
	noRoute, color, color2 := rows[0], byBackend["faces/color:80"], byBackend["faces/color2:80"]
	if noRoute.Route != "" || noRoute.Requests != 1 {
		t.Errorf("no-route row %+v", noRoute)
	}
	if color.Requests != 60 || color.Failures != 6 || color.RPS != 6 || math.Abs(color.Success-0.9) > 1e-9 {
		t.Errorf("color row %+v", color)
	}
	if color.P50 <= 0.0025 || color.P50 > 0.005 || color.P99 <= 0.0025 || color.P99 > 0.005 {
		t.Errorf("color latency p50 %v p99 %v, want within (2.5ms, 5ms]", color.P50, color.P99)
	}
	if color2.Requests != 22 || color2.Failures != 2 || color2.P50 <= 0.01 || color2.P50 > 0.025 {
		t.Errorf("color2 row %+v", color2)
	}
	if got := Window(pairs, Filter{Route: "faces/canary"}); len(got) != 2 {
		t.Errorf("route filter kept %d rows", len(got))
	}
	if got := Window(pairs, Filter{SourceNamespace: "shop"}); len(got) != 0 {
		t.Errorf("caller filter kept %d rows", len(got))
	}
}

// TestWindowAfterARestart: a counter that went down was reset; its value
// is the increase.
func TestWindowAfterARestart(t *testing.T) {
	old := promserve.Registry()
	om := metrics.NewProxy(old, nil)
	for range 50 {
		om.HTTPRequest(peer("faces/canary", "faces/color:80"), 200, "", time.Millisecond)
	}
	restarted := promserve.Registry()
	rm := metrics.NewProxy(restarted, nil)
	for range 7 {
		rm.HTTPRequest(peer("faces/canary", "faces/color:80"), 200, "", time.Millisecond)
	}
	rows := Window([]Pair{{Now: scrape(t, restarted), Then: scrape(t, old), Seconds: 60}}, Filter{})
	if len(rows) != 1 || rows[0].Requests != 7 {
		t.Fatalf("rows %+v", rows)
	}
}

// TestPairsCountsANewAgentFromZero: an agent absent from the older scrape
// appeared since; everything it counted is in the window.
func TestPairsCountsANewAgentFromZero(t *testing.T) {
	reg := promserve.Registry()
	m := metrics.NewProxy(reg, nil)
	for range 3 {
		m.HTTPRequest(peer("faces/canary", "faces/color:80"), 200, "", time.Millisecond)
	}
	pairs := Pairs(map[string]Families{}, map[string]Families{"weft-agent-new": scrape(t, reg)}, 10)
	rows := Window(pairs, Filter{})
	if len(pairs) != 1 || len(rows) != 1 || rows[0].Requests != 3 || rows[0].RPS != 0.3 {
		t.Fatalf("pairs %d, rows %+v", len(pairs), rows)
	}
}
