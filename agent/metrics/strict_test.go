package metrics

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The strict-mTLS counters are exported as read at scrape time, one series
// per reason; a read error makes the scrape report it, not a zero.
func TestStrictRefusals(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewAgent(reg)
	var fail bool
	if err := m.Strict(func() (StrictCounts, error) {
		if fail {
			return StrictCounts{}, errors.New("map gone")
		}
		return StrictCounts{Connect: 3, SYN: 7, Egress: 1}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP weft_strict_refused_total Plaintext connections to strict-mTLS pods of this node refused by the datapath, by reason (connect: from a pod of this node, refused at connect; syn: from another host, SYN dropped; egress: from a pod of this node through a Service, SYN dropped). Counted in BPF; kept across agent restarts.
# TYPE weft_strict_refused_total counter
weft_strict_refused_total{reason="connect"} 3
weft_strict_refused_total{reason="egress"} 1
weft_strict_refused_total{reason="syn"} 7
`), "weft_strict_refused_total"); err != nil {
		t.Error(err)
	}
	fail = true
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "map gone") {
		t.Errorf("gather with a failing read: %v, want the error", err)
	}
	var nilAgent *Agent
	if err := nilAgent.Strict(nil); err != nil {
		t.Errorf("nil agent: %v", err)
	}
}
