package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/weft-mesh/weft/agent/metrics"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// TestClientMetricsFollowACKsAndNACKs: the version gauge shows the policy in
// force, applies count ACKed policies and NACKs refused ones.
func TestClientMetricsFollowACKsAndNACKs(t *testing.T) {
	reg := prometheus.NewRegistry()
	apply := func(p *weftv1.NodePolicy) error {
		if p.GetServices()[0].GetName() == "bad" {
			return errors.New("route table does not compile")
		}
		return nil
	}
	ctl, _, _ := startCfg(t, func(c *Config) { c.Apply, c.Metrics = apply, metrics.NewAgent(reg) })
	recv(t, ctl.reqs) // subscribe
	for _, s := range []*weftv1.PolicySnapshot{snapshot(1, "a"), snapshot(2, "bad"), snapshot(3, "b"), snapshot(4, "bad")} {
		ctl.send <- s
		recv(t, ctl.reqs)
	}
	want := `
# HELP weft_policy_applies_total Node policies applied (proxy, identities and redirect maps) and ACKed to the controller.
# TYPE weft_policy_applies_total counter
weft_policy_applies_total 2
# HELP weft_policy_nacks_total Node policies refused (NACKed): the previous one stayed in force.
# TYPE weft_policy_nacks_total counter
weft_policy_nacks_total 2
# HELP weft_policy_version Version of the node policy in force (the last one applied and ACKed; 0: none yet).
# TYPE weft_policy_version gauge
weft_policy_version 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weft_policy_applies_total", "weft_policy_nacks_total", "weft_policy_version"); err != nil {
		t.Error(err)
	}
}
