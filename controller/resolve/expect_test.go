package resolve

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	proxyroute "github.com/weft-mesh/weft/agent/proxy/route"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// caseExpectations is an optional document of a test case that states what
// requests must do, the way the upstream conformance tests state it:
//
//	kind: ResolveExpectations
//	requests:
//	- from: gateway-conformance-mesh       # caller namespace
//	  to: gateway-conformance-mesh/echo:80 # Service port called
//	  path: /v2?x=1
//	  headers: {version: two}
//	  backend: echo-v2                     # Service that gets the request
//	  status: 404                          # or: no rule (404), 500, a redirect code
//	  responseHeaders: {X-Header-Set: set} # set by a ResponseHeaderModifier
//	  absentResponseHeaders: [X-Header-Set]
//	  weights: {echo-v1: 70, echo-v2: 30}  # backend weights by Service
type caseExpectations struct {
	Kind     string          `json:"kind"`
	Requests []expectRequest `json:"requests"`
}

type expectRequest struct {
	From                  string            `json:"from"`
	To                    string            `json:"to"`
	Method                string            `json:"method,omitempty"`
	Path                  string            `json:"path,omitempty"`
	GRPC                  string            `json:"grpc,omitempty"`
	Headers               map[string]string `json:"headers,omitempty"`
	Backend               string            `json:"backend,omitempty"`
	Status                int               `json:"status,omitempty"`
	ResponseHeaders       map[string]string `json:"responseHeaders,omitempty"`
	AbsentResponseHeaders []string          `json:"absentResponseHeaders,omitempty"`
	Weights               map[string]uint32 `json:"weights,omitempty"`
}

// TestExpectations runs every case's expected requests through the node
// proxy's own route selection on the resolved policy: the goldens are
// checked against the behaviour the spec (and the conformance tests)
// require, not only against what the code printed last time.
func TestExpectations(t *testing.T) {
	cases, _ := filepath.Glob("testdata/*.in.yaml")
	n := 0
	for _, c := range cases {
		data, err := os.ReadFile(c)
		if err != nil {
			t.Fatal(err)
		}
		var exps []expectRequest
		for _, doc := range docSep.Split(string(data), -1) {
			var e caseExpectations
			if yaml.Unmarshal([]byte(doc), &e) == nil && e.Kind == "ResolveExpectations" {
				if err := yaml.UnmarshalStrict([]byte(doc), &e); err != nil {
					t.Fatalf("%s: %v", c, err)
				}
				exps = append(exps, e.Requests...)
			}
		}
		if len(exps) == 0 {
			continue
		}
		in, err := loadCase(c)
		if err != nil {
			t.Fatal(err)
		}
		out := Resolve(in)
		var policy *weftv1.NodePolicy
		for _, p := range out.Nodes {
			policy = p
			break
		}
		name := strings.TrimSuffix(filepath.Base(c), ".in.yaml")
		for i, e := range exps {
			n++
			if err := checkRequest(policy, e); err != nil {
				t.Errorf("%s request %d (%s %s%s from %s): %v", name, i, e.To, e.Path, e.GRPC, e.From, err)
			}
		}
	}
	if n == 0 {
		t.Fatal("no expectations found")
	}
}

func checkRequest(p *weftv1.NodePolicy, e expectRequest) error {
	var sp *weftv1.ServicePort
	for _, s := range p.GetServices() {
		if fmt.Sprintf("%s/%s:%d", s.Namespace, s.Name, s.Port) == e.To {
			sp = s
		}
	}
	if sp == nil {
		return fmt.Errorf("no meshed Service port %s", e.To)
	}
	tbl := sp.Producer
	if ct, ok := sp.Consumers[e.From]; ok {
		tbl = ct
	}
	serviceOf := func(cluster string) string {
		_, rest, _ := strings.Cut(cluster, "/")
		svc, _, _ := strings.Cut(rest, ":")
		return svc
	}
	if tbl == nil {
		// Plain Service semantics: the Service's own endpoints.
		if e.Status != 0 || len(e.ResponseHeaders) > 0 {
			return fmt.Errorf("no route table applies, but the case expects status %d / headers %v", e.Status, e.ResponseHeaders)
		}
		if got := serviceOf(sp.DefaultCluster); e.Backend != "" && got != e.Backend {
			return fmt.Errorf("no route applies: the request goes to %s, want %s", got, e.Backend)
		}
		return nil
	}
	ct, err := proxyroute.Compile(tbl)
	if err != nil {
		return err
	}
	req := &proxyroute.Request{Method: e.Method, Path: e.Path, Header: http.Header{}}
	if req.Method == "" && e.GRPC == "" {
		req.Method = "GET"
	}
	if req.Path == "" {
		req.Path = "/"
	}
	if e.GRPC != "" {
		req.Path = "/" + e.GRPC
		req.GRPCService, req.GRPCMethod, _ = strings.Cut(e.GRPC, "/")
	}
	for k, v := range e.Headers {
		req.Header.Set(k, v)
	}
	d, ok := ct.Select(req)
	if !ok {
		if e.Status == 404 {
			return nil
		}
		return fmt.Errorf("no rule matches (404)")
	}
	if e.Status == 404 {
		return fmt.Errorf("rule %d of %s matches, want 404", d.Rule.Index, d.Rule.Route)
	}
	for _, f := range d.Rule.Filters {
		if f.Redirect != nil {
			if e.Status != f.Redirect.StatusCode {
				return fmt.Errorf("redirect %d, want status %d", f.Redirect.StatusCode, e.Status)
			}
			return nil
		}
	}
	if e.Weights != nil {
		got := map[string]uint32{}
		for _, b := range d.Rule.Backends {
			k := serviceOf(b.Cluster)
			if b.Invalid != "" {
				k = "invalid"
			}
			got[k] += b.Weight
		}
		if fmt.Sprint(got) != fmt.Sprint(e.Weights) {
			return fmt.Errorf("weights %v, want %v", got, e.Weights)
		}
	}
	b, err := d.PickBackend(func(int) int { return 0 })
	if err != nil {
		if e.Status == 500 {
			return nil
		}
		return fmt.Errorf("no backend: %v", err)
	}
	if e.Status == 500 {
		return fmt.Errorf("backend %s picked, want 500", b.Cluster)
	}
	if got := serviceOf(b.Cluster); e.Backend != "" && got != e.Backend {
		return fmt.Errorf("backend %s, want %s", got, e.Backend)
	}
	set := map[string]string{}
	for _, fs := range [][]proxyroute.Filter{d.Rule.Filters, b.Filters} {
		for _, f := range fs {
			if f.Kind == proxyroute.FilterResponseHeaders && f.Headers != nil {
				for _, h := range f.Headers.Set {
					set[http.CanonicalHeaderKey(h.Name)] = h.Value
				}
			}
		}
	}
	for k, v := range e.ResponseHeaders {
		if set[http.CanonicalHeaderKey(k)] != v {
			return fmt.Errorf("response header %s is %q, want %q", k, set[http.CanonicalHeaderKey(k)], v)
		}
	}
	for _, k := range e.AbsentResponseHeaders {
		if v, ok := set[http.CanonicalHeaderKey(k)]; ok {
			return fmt.Errorf("response header %s is set to %q, want it absent", k, v)
		}
	}
	return nil
}
