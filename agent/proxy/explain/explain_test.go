package explain

import (
	"bytes"
	"errors"
	"flag"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/route"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

var update = flag.Bool("update", false, "rewrite testdata/*.txt")

// seedPolicy is the policy the controller's resolver writes for the
// explain-seed case (its golden output), so these goldens follow the
// resolver.
func seedPolicy(t *testing.T) *weftv1.NodePolicy {
	t.Helper()
	b, err := os.ReadFile("../../../controller/resolve/testdata/explain-seed.out.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Policy any `json:"policy"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := yaml.Marshal(doc.Policy)
	if err == nil {
		js, err = yaml.YAMLToJSON(js)
	}
	if err != nil {
		t.Fatal(err)
	}
	p := &weftv1.NodePolicy{}
	if err := protojson.Unmarshal(js, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExplainGolden(t *testing.T) {
	p := seedPolicy(t)
	const mesh, consumer = "gateway-conformance-mesh", "gateway-conformance-mesh-consumer"
	cases := []struct {
		name, ns, method, url string
		header                http.Header
	}{
		{"seed-split", mesh, "GET", "http://echo/", nil},
		{"header-canary", mesh, "GET", "http://echo/", http.Header{"Traffic": {"test"}}},
		{"consumer-route", consumer, "GET", "http://echo.gateway-conformance-mesh/v2/cart", nil},
		{"consumer-route-method", consumer, "POST", "http://echo.gateway-conformance-mesh.svc.cluster.local/v2/cart", nil},
		{"sticky", mesh, "GET", "http://echo:8080/cart", nil},
		{"by-vip", mesh, "GET", "http://10.96.1.10/", http.Header{"Traffic": {"prod"}}},
		{"no-route-table", mesh, "GET", "http://echo-v1/", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, err := url.Parse(c.url)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			q := Query{CallerNamespace: c.ns, CallerPod: "client-7d9f8", Node: "lab-node-1", Method: c.method, URL: u, Header: c.header}
			if err := Write(&out, p, q); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", c.name+".txt")
			if *update {
				if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("explanation differs from %s:\n%s", golden, out.String())
			}
		})
	}
}

func TestExplainUnknownService(t *testing.T) {
	u, _ := url.Parse("http://nowhere.shop/")
	err := Write(&bytes.Buffer{}, seedPolicy(t), Query{CallerNamespace: "shop", Node: "lab-node-1", URL: u})
	if !errors.Is(err, ErrNoService) {
		t.Fatalf("got %v, want ErrNoService", err)
	}
}

// TestExplainAgreesWithSelect: for every table of the policy and a set of
// requests, the match Explain marks as deciding is the one Select picks.
func TestExplainAgreesWithSelect(t *testing.T) {
	snap, err := outbound.Compile(seedPolicy(t))
	if err != nil {
		t.Fatal(err)
	}
	reqs := []route.Request{
		{Method: "GET", Path: "/"},
		{Method: "POST", Path: "/v2/x"},
		{Method: "GET", Path: "/v2"},
		{Method: "GET", Path: "/v2x", Header: http.Header{"Traffic": {"test"}}},
		{Method: "GET", Path: "/a?x=1", Header: http.Header{"Traffic": {"test", "more"}}},
	}
	n := 0
	for _, svc := range snap.Services {
		tables := []*route.Table{svc.Producer}
		for _, c := range svc.Consumers {
			tables = append(tables, c)
		}
		for _, tb := range tables {
			if tb == nil {
				continue
			}
			for _, r := range reqs {
				vs, dec, err := tb.Explain(&r)
				first := -1
				for _, v := range vs {
					if v.Matched {
						first = v.Position
						break
					}
				}
				if err != nil {
					if first >= 0 {
						t.Errorf("%s %s: Select refused (%v) but match %d holds", svc.Name, r.Path, err, first)
					}
					continue
				}
				n++
				if first != dec.Match {
					t.Errorf("%s %s: Select picked match %d, Explain's first match is %d", svc.Name, r.Path, dec.Match, first)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no request was decided")
	}
}
