package install

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	agentmetrics "github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	ctlmetrics "github.com/weft-mesh/weft/controller/metrics"
	"github.com/weft-mesh/weft/test/kubetest"
)

// TestGrafanaDashboardUsesExportedMetrics: manifests/grafana/weft.json is
// valid JSON, every panel has a query, and every weft_* metric its queries
// name is one the agent or the controller exports (a renamed metric fails
// here, not on a blank dashboard).
func TestGrafanaDashboardUsesExportedMetrics(t *testing.T) {
	root, err := kubetest.Root()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "manifests", "grafana", "weft.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	exported := exportedMetrics(t)
	name := regexp.MustCompile(`weft_[a-z_]+`)
	used := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			for _, m := range name.FindAllString(q.Expr, -1) {
				used++
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if s, ok := strings.CutSuffix(m, suffix); ok && slices.Contains(exported, s) {
						base = s
					}
				}
				if !slices.Contains(exported, base) {
					t.Errorf("panel %q queries %s, which nothing exports", p.Title, m)
				}
			}
		}
	}
	if dash.UID == "" || used == 0 {
		t.Errorf("dashboard uid %q, %d metric references", dash.UID, used)
	}
}

// exportedMetrics are the names of every metric the agent, its proxy and
// the controller register, each series touched once so vectors show.
func exportedMetrics(t *testing.T) []string {
	reg := prometheus.NewRegistry()
	p := agentmetrics.NewProxy(reg, limits.NewRefusals(limits.RefusalsConfig{}))
	peer := &agentmetrics.Peer{}
	p.HTTPRequest(peer, 200, "", time.Millisecond)
	p.TCPConnection(peer, 1, 1)
	p.InboundAccepted()
	p.InboundRefused(limits.NotTLS)
	p.Redirected(agentmetrics.RedirectL7)
	agentmetrics.NewAgent(reg)
	c := ctlmetrics.New(reg, func() []ctlmetrics.NodeState { return []ctlmetrics.NodeState{{Node: "n"}} })
	c.Answered("n", false, false, time.Millisecond)
	c.Signed(errors.New("refused"))
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fams {
		names = append(names, f.GetName())
	}
	return names
}
