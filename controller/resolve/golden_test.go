package resolve

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/agent/proxy/outbound"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// checkAgentAccepts compiles every node's policy the way the node proxy
// does: resolution must never produce a policy the agent NACKs (one bad
// route would otherwise freeze the whole node on its last good policy).
func checkAgentAccepts(t testing.TB, out Output) {
	t.Helper()
	for n, p := range out.Nodes {
		if err := p.Validate(); err != nil {
			t.Fatalf("node %s: the agent NACKs the policy: %v", n, err)
		}
		if _, err := outbound.Compile(p); err != nil {
			t.Fatalf("node %s: the proxy rejects the policy: %v", n, err)
		}
	}
}

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the current output")

// TestGolden resolves every testdata/<case>.in.yaml and compares the result
// with <case>.out.yaml.
func TestGolden(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) == 0 {
		t.Fatal("no golden cases found")
	}
	for _, in := range cases {
		name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			input, err := loadCase(in)
			if err != nil {
				t.Fatalf("load %s: %v", in, err)
			}
			out := Resolve(input)
			checkAgentAccepts(t, out)
			got, err := render(out)
			if err != nil {
				t.Fatal(err)
			}
			// Resolution is deterministic: a second run renders the same.
			again, err := render(Resolve(input))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, again) {
				t.Fatal("two resolutions of the same input differ")
			}
			golden := strings.TrimSuffix(in, ".in.yaml") + ".out.yaml"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (run go test ./controller/resolve -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update and review the diff):\n%s", golden, lineDiff(string(want), string(got)))
			}
		})
	}
}

// renderedCondition is a condition without LastTransitionTime.
type renderedCondition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason"`
	Message            string `json:"message"`
	ObservedGeneration int64  `json:"observedGeneration"`
}

type renderedParent struct {
	Ref        gwv1.ParentReference `json:"ref"`
	Conditions []renderedCondition  `json:"conditions"`
}

type renderedStatus struct {
	Kind       string           `json:"kind"`
	Namespace  string           `json:"namespace"`
	Name       string           `json:"name"`
	Generation int64            `json:"generation"`
	Parents    []renderedParent `json:"parents"`
}

// render turns an Output into YAML. Every node's policy must be the same
// except for the node name, workloads and authorization policies: the
// shared part is rendered once (policy), the workloads and authorization
// policies per node.
func render(out Output) ([]byte, error) {
	doc := map[string]any{}
	var sts []renderedStatus
	for _, s := range out.Statuses {
		rs := renderedStatus{Kind: s.Kind, Namespace: s.Namespace, Name: s.Name, Generation: s.Generation}
		for _, p := range s.Parents {
			rp := renderedParent{Ref: p.Ref}
			for _, c := range p.Conditions {
				if !c.LastTransitionTime.IsZero() {
					return nil, fmt.Errorf("%s %s/%s: LastTransitionTime is set", s.Kind, s.Namespace, s.Name)
				}
				rp.Conditions = append(rp.Conditions, renderedCondition{c.Type, string(c.Status), c.Reason, c.Message, c.ObservedGeneration})
			}
			rs.Parents = append(rs.Parents, rp)
		}
		sts = append(sts, rs)
	}
	doc["statuses"] = sts
	if len(out.AuthzStatuses) > 0 {
		var as []map[string]any
		for _, s := range out.AuthzStatuses {
			var cs []renderedCondition
			for _, c := range s.Conditions {
				if !c.LastTransitionTime.IsZero() {
					return nil, fmt.Errorf("AuthorizationPolicy %s/%s: LastTransitionTime is set", s.Namespace, s.Name)
				}
				cs = append(cs, renderedCondition{c.Type, string(c.Status), c.Reason, c.Message, c.ObservedGeneration})
			}
			st := map[string]any{"namespace": s.Namespace, "name": s.Name, "generation": s.Generation, "conditions": cs}
			if s.InForce != nil {
				st["inForceGeneration"] = s.InForce.Generation
			}
			as = append(as, st)
		}
		doc["authzStatuses"] = as
	}
	authz := map[string]any{}
	nodes := make([]string, 0, len(out.Nodes))
	for n := range out.Nodes {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	var shared *weftv1.NodePolicy
	workloads := map[string]any{}
	for _, n := range nodes {
		p := out.Nodes[n]
		if p.Node != n {
			return nil, fmt.Errorf("policy for node %s names node %q", n, p.Node)
		}
		ws := make([]any, 0, len(p.Workloads))
		for _, w := range p.Workloads {
			v, err := protoValue(w)
			if err != nil {
				return nil, err
			}
			ws = append(ws, v)
		}
		workloads[n] = ws
		if len(p.Authz) > 0 {
			as := make([]any, 0, len(p.Authz))
			for _, a := range p.Authz {
				v, err := protoValue(a)
				if err != nil {
					return nil, err
				}
				as = append(as, v)
			}
			authz[n] = as
		}
		common := proto.Clone(p).(*weftv1.NodePolicy)
		common.Node, common.Workloads, common.Authz = "", nil, nil
		if len(p.Workloads) == 0 {
			// a node without workloads gets only its trust settings
			if len(common.Services)+len(common.Clusters)+len(common.NodeTunnels) > 0 {
				return nil, fmt.Errorf("node %s has no workloads but Services, Clusters or tunnels", n)
			}
			continue
		}
		if shared == nil {
			shared = common
		} else if !proto.Equal(shared, common) {
			return nil, fmt.Errorf("policy of node %s differs from node %s beyond workloads", n, nodes[0])
		}
	}
	if shared != nil {
		v, err := protoValue(shared)
		if err != nil {
			return nil, err
		}
		doc["policy"] = v
	}
	doc["workloads"] = workloads
	if len(out.InvalidMTLS) > 0 {
		doc["invalidMTLS"] = out.InvalidMTLS
	}
	if len(authz) > 0 {
		doc["authz"] = authz
	}
	return yaml.Marshal(doc)
}

func protoValue(m proto.Message) (any, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var v any
	return v, json.Unmarshal(b, &v)
}

// lineDiff shows the first lines that differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 20; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d:\n  want: %s\n  got:  %s\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}
