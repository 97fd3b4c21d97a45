package gateway

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/controller/resolve"
)

var update = flag.Bool("update", false, "rewrite testdata/*.out.yaml from the current output")

// TestGolden resolves every testdata/<case>.in.yaml and compares the
// result (statuses and IR) with <case>.out.yaml. Regenerate with
// go test ./controller/gateway -update and review the diff; the
// conformance assertions of each case (expect_test.go) are checked apart.
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
			checkIR(t, out)
			got, err := render(out)
			if err != nil {
				t.Fatal(err)
			}
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
				t.Fatalf("read golden (run go test ./controller/gateway -update): %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update and review the diff):\n%s", golden, lineDiff(string(want), string(got)))
			}
		})
	}
}

// checkIR validates every Gateway's IR and checks that backend TLS
// settings name clusters that exist (clusterName follows the compiler's
// naming).
func checkIR(t testing.TB, out Output) {
	t.Helper()
	for _, g := range out.IR {
		if err := g.Validate(); err != nil {
			t.Fatalf("IR of Gateway %s/%s: %v", g.Namespace, g.Name, err)
		}
		names := map[string]bool{}
		for _, c := range g.Clusters {
			names[c.GetName()] = true
		}
		for c := range g.BackendTLS {
			if !names[c] {
				t.Fatalf("IR of Gateway %s/%s: backend TLS for cluster %s, which does not exist", g.Namespace, g.Name, c)
			}
		}
	}
}

type renderedCondition struct {
	Type               string `json:"type"`
	Status             string `json:"status"`
	Reason             string `json:"reason"`
	Message            string `json:"message"`
	ObservedGeneration int64  `json:"observedGeneration"`
}

func renderConditions(cs []metav1.Condition) ([]renderedCondition, error) {
	out := []renderedCondition{}
	for _, c := range cs {
		if !c.LastTransitionTime.IsZero() {
			return nil, fmt.Errorf("condition %s has LastTransitionTime set", c.Type)
		}
		out = append(out, renderedCondition{c.Type, string(c.Status), c.Reason, c.Message, c.ObservedGeneration})
	}
	return out, nil
}

type renderedListener struct {
	Name           string                `json:"name"`
	SupportedKinds []gwv1.RouteGroupKind `json:"supportedKinds"`
	AttachedRoutes int32                 `json:"attachedRoutes"`
	Conditions     []renderedCondition   `json:"conditions"`
}

type renderedParent struct {
	Ref        gwv1.ParentReference `json:"ref"`
	Conditions []renderedCondition  `json:"conditions"`
}

// render turns an Output into YAML: statuses as they would be written,
// and the IR with certificates and CAs by name (not PEM).
func render(out Output) ([]byte, error) {
	var classes, gateways, routes []any
	for _, c := range out.GatewayClasses {
		conds, err := renderConditions(c.Status.Conditions)
		if err != nil {
			return nil, fmt.Errorf("GatewayClass %s: %w", c.Name, err)
		}
		classes = append(classes, map[string]any{"name": c.Name, "generation": c.Generation, "conditions": conds, "supportedFeatures": c.Status.SupportedFeatures})
	}
	for _, g := range out.Gateways {
		conds, err := renderConditions(g.Status.Conditions)
		if err != nil {
			return nil, fmt.Errorf("Gateway %s/%s: %w", g.Namespace, g.Name, err)
		}
		var ls []renderedListener
		for _, l := range g.Status.Listeners {
			lc, err := renderConditions(l.Conditions)
			if err != nil {
				return nil, fmt.Errorf("Gateway %s/%s listener %s: %w", g.Namespace, g.Name, l.Name, err)
			}
			ls = append(ls, renderedListener{string(l.Name), l.SupportedKinds, l.AttachedRoutes, lc})
		}
		gateways = append(gateways, map[string]any{"gateway": g.Namespace + "/" + g.Name, "generation": g.Generation, "addresses": g.Status.Addresses, "conditions": conds, "listeners": ls})
	}
	for _, list := range [][]resolve.ObjectStatus{out.Routes, out.Policies} {
		for _, s := range list {
			var ps []renderedParent
			for _, p := range s.Parents {
				pc, err := renderConditions(p.Conditions)
				if err != nil {
					return nil, fmt.Errorf("%s %s/%s: %w", s.Kind, s.Namespace, s.Name, err)
				}
				ps = append(ps, renderedParent{p.Ref, pc})
			}
			routes = append(routes, map[string]any{"kind": s.Kind, "object": s.Namespace + "/" + s.Name, "generation": s.Generation, "parents": ps})
		}
	}
	var irs []any
	for _, g := range out.IR {
		v, err := renderIR(g)
		if err != nil {
			return nil, err
		}
		irs = append(irs, v)
	}
	return yaml.Marshal(map[string]any{"gatewayClasses": classes, "gateways": gateways, "statuses": routes, "ir": irs})
}

func renderIR(g *Gateway) (map[string]any, error) {
	var ports []any
	for _, p := range g.Ports {
		var ls []any
		for _, l := range p.Listeners {
			var certs []any
			for _, c := range l.Certificates {
				certs = append(certs, map[string]any{"secret": c.SecretNamespace + "/" + c.SecretName, "hostnames": c.Hostnames})
			}
			var vhs []any
			for _, vh := range l.VirtualHosts {
				var tables []any
				for _, tb := range vh.Tables {
					v, err := protoValue(tb)
					if err != nil {
						return nil, err
					}
					tables = append(tables, v)
				}
				vhs = append(vhs, map[string]any{"hostname": vh.Hostname, "tables": tables})
			}
			m := map[string]any{"name": l.Name, "protocol": l.Protocol, "hostname": l.Hostname, "certificates": certs, "virtualHosts": vhs}
			if l.TLSMode != "" {
				m["tlsMode"] = l.TLSMode
			}
			if v := l.ClientValidation; v != nil {
				m["clientValidation"] = map[string]any{"mode": v.Mode, "caCertificates": caNames(v.CACertificates)}
			}
			ls = append(ls, m)
		}
		ports = append(ports, map[string]any{"port": p.Port, "listeners": ls})
	}
	var clusters []any
	for _, c := range g.Clusters {
		v, err := protoValue(c)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, v)
	}
	btls := map[string]any{}
	for name, b := range g.BackendTLS {
		btls[name] = map[string]any{"policy": b.Policy, "hostname": b.Hostname, "subjectAltNames": b.SubjectAltNames, "caCertificates": caNames(b.CACertificates), "system": b.System, "invalid": b.Invalid}
	}
	out := map[string]any{"gateway": g.Namespace + "/" + g.Name, "ports": ports, "clusters": clusters, "backendTLS": btls}
	if c := g.ClientCertificate; c != nil {
		out["clientCertificate"] = c.SecretNamespace + "/" + c.SecretName
	}
	return out, nil
}

func caNames(cs []*CACertificate) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Kind+" "+c.Namespace+"/"+c.Name)
	}
	return out
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

// TestNoGatewayShortcut: with the Gateways of every golden case removed
// (and with them kept but their class unknown), Resolve's shortcut gives
// exactly what resolving everything does.
func TestNoGatewayShortcut(t *testing.T) {
	cases, err := filepath.Glob("testdata/*.in.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatal(cases, err)
	}
	for _, in := range cases {
		t.Run(strings.TrimSuffix(filepath.Base(in), ".in.yaml"), func(t *testing.T) {
			for _, strip := range []func(*Input){
				func(i *Input) { i.Gateways = nil },
				func(i *Input) {
					for j := range i.Gateways {
						i.Gateways[j].Spec.GatewayClassName = "not-weft"
					}
				},
			} {
				input, err := loadCase(in)
				if err != nil {
					t.Fatal(err)
				}
				strip(&input)
				got, err := render(Resolve(input))
				if err != nil {
					t.Fatal(err)
				}
				want, err := render(resolveIn(input, false))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("the shortcut differs:\n%s", lineDiff(string(want), string(got)))
				}
			}
		})
	}
}
