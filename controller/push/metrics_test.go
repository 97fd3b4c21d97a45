package push

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/metrics"
)

// family returns the gathered metrics of name.
func family(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}

// TestMetricsACKLatencyAndNACKs: the time from sending a version to its
// ACK is observed (at least as long as the agent took), per result and for
// the node; a NACK is counted.
func TestMetricsACKLatencyAndNACKs(t *testing.T) {
	reg := prometheus.NewRegistry()
	h, _ := start(t, Config{Metrics: metrics.New(reg, nil)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.1")})
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	s1, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const took = 50 * time.Millisecond
	time.Sleep(took)
	if err := a.Send(&weftv1.PolicyRequest{Node: "node-a", Version: s1.Version}); err != nil {
		t.Fatal(err)
	}
	waitState(t, h.srv, "node-a", func(s NodeState) bool { return s.AckedVersion == s1.Version })
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": policy("node-a", "10.96.0.2")})
	s2, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Send(&weftv1.PolicyRequest{Node: "node-a", Version: s2.Version, Error: "bad"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, h.srv, "node-a", func(s NodeState) bool { return s.NackedVersion == s2.Version })

	byResult := map[string]*dto.Histogram{}
	for _, m := range family(t, reg, "weft_controller_push_ack_duration_seconds") {
		byResult[m.GetLabel()[0].GetValue()] = m.GetHistogram()
	}
	if ack := byResult["ack"]; ack.GetSampleCount() != 1 || ack.GetSampleSum() < took.Seconds() {
		t.Errorf("ack latency: %v samples, sum %vs; want 1 of at least %v", ack.GetSampleCount(), ack.GetSampleSum(), took)
	}
	if nack := byResult["nack"]; nack.GetSampleCount() != 1 {
		t.Errorf("nack latency samples: %v", nack.GetSampleCount())
	}
	if m := family(t, reg, "weft_controller_policy_nacks_total"); len(m) != 1 || m[0].GetCounter().GetValue() != 1 {
		t.Errorf("nacks: %v", m)
	}
	node := family(t, reg, "weft_controller_node_push_ack_seconds")
	if len(node) != 1 || node[0].GetLabel()[0].GetValue() != "node-a" || node[0].GetGauge().GetValue() <= 0 {
		t.Errorf("per-node latency: %v", node)
	}
	// a node that is gone (no policy, no stream) loses its gauge
	cancel()
	waitState(t, h.srv, "node-a", func(s NodeState) bool { return s.Streams == 0 })
	h.srv.Update(map[string]*weftv1.NodePolicy{})
	if node := family(t, reg, "weft_controller_node_push_ack_seconds"); len(node) != 0 {
		t.Errorf("gone node still has a gauge: %v", node)
	}
}

// TestAnsweredForgetsOlderVersions: an ACK answers its version and every
// older one; a version this stream never sent has no latency.
func TestAnsweredForgetsOlderVersions(t *testing.T) {
	sub := &subscriber{}
	t0 := time.Unix(1000, 0)
	for v := uint64(1); v <= maxPending+5; v++ {
		sub.sending(v, t0.Add(time.Duration(v)*time.Second))
	}
	if len(sub.sent) != maxPending {
		t.Fatalf("remembers %d versions, want at most %d", len(sub.sent), maxPending)
	}
	if d := sub.answered(3, t0.Add(time.Hour)); d >= 0 {
		t.Errorf("a forgotten version has latency %v", d)
	}
	if d := sub.answered(40, t0.Add(50*time.Second)); d != 10*time.Second {
		t.Errorf("latency of version 40 = %v, want 10s", d)
	}
	if d := sub.answered(39, t0.Add(50*time.Second)); d >= 0 {
		t.Errorf("an older version answered after a newer one has latency %v", d)
	}
	if sub.sent[0].version != 41 {
		t.Errorf("oldest remembered: %d, want 41", sub.sent[0].version)
	}
}
