package outbound

import (
	"errors"
	"net/netip"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

const sid = "spiffe://cluster.local/ns/web/sa/web"

func httpTable() *weftv1.RouteTable {
	return &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules:   []*weftv1.Rule{{Route: "web/r", Backends: []*weftv1.BackendRef{{Cluster: "c", Weight: 1}}}},
		Matches: []*weftv1.Match{{Rule: 0, Http: &weftv1.HTTPMatch{}}}}
}

func basePolicy() *weftv1.NodePolicy {
	return &weftv1.NodePolicy{
		Node: "n1", NodeTunnels: map[string]string{"n1": "10.0.0.1:15008"},
		Clusters: []*weftv1.Cluster{{Name: "c", Endpoints: []*weftv1.Endpoint{
			{Ip: "10.244.1.5", Port: 8080, Node: "n1", Identity: sid, Ready: true, Serving: true},
			{Ip: "10.244.1.6", Port: 8080, Node: "n1", Identity: sid, Ready: false, Serving: true, Terminating: true},
		}}},
		Services: []*weftv1.ServicePort{{Namespace: "web", Name: "web", Vips: []string{"10.96.0.10", "fd00::10"}, Port: 80, DefaultCluster: "c",
			Protocol: weftv1.Protocol_PROTOCOL_HTTP, Producer: httpTable(), Consumers: map[string]*weftv1.RouteTable{"blue": httpTable()}}},
	}
}

func TestCompile(t *testing.T) {
	s, err := Compile(basePolicy())
	if err != nil {
		t.Fatal(err)
	}
	svc := s.Services[netip.MustParseAddrPort("10.96.0.10:80")]
	if svc == nil || s.Services[netip.MustParseAddrPort("[fd00::10]:80")] != svc {
		t.Fatalf("services by vip: %v", s.Services)
	}
	if svc.Table("blue") != svc.Consumers["blue"] || svc.Table("green") != svc.Producer || svc.Table("blue") == svc.Producer {
		t.Error("consumer table must win for its namespace only")
	}
	cl := s.Clusters["c"]
	if len(cl.Pickable) != 1 || cl.Endpoints[cl.Pickable[0]].Addr != netip.MustParseAddrPort("10.244.1.5:8080") {
		t.Errorf("pickable: %v", cl.Pickable)
	}
	if e, ok := cl.Of(cl.Raw[1]); !ok || !e.Terminating {
		t.Error("raw endpoint lookup")
	}
}

func TestCompileServingFallback(t *testing.T) {
	p := basePolicy()
	p.Clusters[0].Endpoints[0].Ready = false
	p.Clusters[0].Endpoints[0].Serving = false
	s, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	// no ready endpoint: the terminating one that still serves takes traffic
	if cl := s.Clusters["c"]; len(cl.Pickable) != 1 || cl.Pickable[0] != 1 {
		t.Errorf("pickable %v", cl.Pickable)
	}
}

func TestCompileRejects(t *testing.T) {
	for name, edit := range map[string]func(*weftv1.NodePolicy){
		"bad vip":            func(p *weftv1.NodePolicy) { p.Services[0].Vips = []string{"10.96.0"} },
		"port zero":          func(p *weftv1.NodePolicy) { p.Services[0].Port = 0 },
		"port too big":       func(p *weftv1.NodePolicy) { p.Services[0].Port = 70000 },
		"duplicate vip:port": func(p *weftv1.NodePolicy) { p.Services = append(p.Services, p.Services[0]) },
		"duplicate cluster":  func(p *weftv1.NodePolicy) { p.Clusters = append(p.Clusters, p.Clusters[0]) },
		"bad endpoint ip":    func(p *weftv1.NodePolicy) { p.Clusters[0].Endpoints[0].Ip = "x" },
		"bad endpoint port":  func(p *weftv1.NodePolicy) { p.Clusters[0].Endpoints[0].Port = 0 },
		"bad identity":       func(p *weftv1.NodePolicy) { p.Clusters[0].Endpoints[0].Identity = "web" },
		"bad tunnel address": func(p *weftv1.NodePolicy) { p.NodeTunnels["n2"] = "somewhere" },
		"bad producer table": func(p *weftv1.NodePolicy) { p.Services[0].Producer.Matches[0].Rule = 9 },
		"bad consumer table": func(p *weftv1.NodePolicy) { p.Services[0].Consumers["blue"].Matches[0].Rule = 9 },
	} {
		p := basePolicy()
		edit(p)
		if _, err := Compile(p); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := Compile(nil); err == nil {
		t.Error("nil policy accepted")
	}
}

func TestL7Decision(t *testing.T) {
	tcp := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_TCP}
	grpc := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_GRPC}
	for _, tc := range []struct {
		proto weftv1.Protocol
		table *weftv1.RouteTable
		l7    bool
	}{
		{weftv1.Protocol_PROTOCOL_TCP, nil, false},
		{weftv1.Protocol_PROTOCOL_UNSPECIFIED, nil, false},
		{weftv1.Protocol_PROTOCOL_HTTP, nil, true},
		{weftv1.Protocol_PROTOCOL_H2C, nil, true},
		{weftv1.Protocol_PROTOCOL_GRPC, nil, true},
		{weftv1.Protocol_PROTOCOL_TCP, httpTable(), true},
		{weftv1.Protocol_PROTOCOL_UNSPECIFIED, grpc, true},
		{weftv1.Protocol_PROTOCOL_HTTP, tcp, false},
	} {
		p := basePolicy()
		p.Services[0].Protocol = tc.proto
		p.Services[0].Producer = tc.table
		p.Services[0].Consumers = nil
		s, err := Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		svc := s.Services[netip.MustParseAddrPort("10.96.0.10:80")]
		if got := svc.L7(svc.Table("x")); got != tc.l7 {
			t.Errorf("protocol %v table %v: l7=%v, want %v", tc.proto, tc.table.GetKind(), got, tc.l7)
		}
	}
}

func TestPickSpreads(t *testing.T) {
	p := basePolicy()
	p.Clusters[0].Endpoints[1].Ready = true
	s, _ := Compile(p)
	cl := s.Clusters["c"]
	seen := map[netip.AddrPort]int{}
	for i := range 10 {
		e, ok := cl.Pick(func(n int) int { return i % n })
		if !ok {
			t.Fatal("no endpoint")
		}
		seen[e.Addr]++
	}
	if len(seen) != 2 || seen[netip.MustParseAddrPort("10.244.1.5:8080")] != 5 {
		t.Errorf("picks %v", seen)
	}
	empty := &Cluster{}
	if _, ok := empty.Pick(func(int) int { return 0 }); ok {
		t.Error("pick from an empty cluster")
	}
}
