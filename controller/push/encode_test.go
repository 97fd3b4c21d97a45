package push

import (
	"context"
	"testing"
	"time"
	"unsafe"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func sharedPolicies() (*weftv1.NodePolicy, *weftv1.NodePolicy) {
	services := []*weftv1.ServicePort{{Namespace: "ns", Name: "svc", Vips: []string{"10.96.0.1"}, Port: 80, Protocol: weftv1.Protocol_PROTOCOL_HTTP,
		Producer: &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP, Rules: []*weftv1.Rule{{Route: "ns/r", RequestTimeout: durationpb.New(time.Second),
			Backends: []*weftv1.BackendRef{{Cluster: "ns/svc:80", Weight: 1}}}}},
		Consumers: map[string]*weftv1.RouteTable{"a": {Kind: weftv1.RouteKind_ROUTE_KIND_HTTP}, "b": {Kind: weftv1.RouteKind_ROUTE_KIND_GRPC}}}}
	clusters := []*weftv1.Cluster{{Name: "ns/svc:80", Endpoints: []*weftv1.Endpoint{{Ip: "10.244.1.2", Port: 8080, Node: "n1", Ready: true}}}}
	tunnels := map[string]string{"n1": "172.30.0.11:15008", "n2": "172.30.0.12:15008", "n3": "172.30.0.13:15008"}
	p1 := &weftv1.NodePolicy{Node: "n1", TrustDomain: "cluster.local", TrustAnchors: [][]byte{{1, 2, 3}}, Services: services, Clusters: clusters, NodeTunnels: tunnels,
		Workloads: []*weftv1.Workload{{Namespace: "ns", Name: "p", Ips: []string{"10.244.1.2"}}}}
	p2 := &weftv1.NodePolicy{Node: "n2", TrustDomain: "cluster.local", Services: services, Clusters: clusters, NodeTunnels: tunnels}
	return p1, p2
}

func wireBytes(w *wireSnapshot) []byte {
	var b []byte
	for _, buf := range w.buffers() {
		b = append(b, buf.ReadOnlyData()...)
	}
	return b
}

func TestWireEncodingDecodesToSnapshot(t *testing.T) {
	p1, p2 := sharedPolicies()
	enc := &encoder{}
	e1, err := enc.encode(p1)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := enc.encode(p2)
	if err != nil {
		t.Fatal(err)
	}
	if unsafe.SliceData(e1.shared) != unsafe.SliceData(e2.shared) {
		t.Fatal("services and clusters encoded twice for shared slices")
	}
	for _, tc := range []struct {
		p   *weftv1.NodePolicy
		e   encoded
		ver uint64
	}{{p1, e1, 7}, {p2, e2, 1 << 40}} {
		w := newWireSnapshot(tc.ver, "nonce-1", tc.p, tc.e)
		var got weftv1.PolicySnapshot
		if err := proto.Unmarshal(wireBytes(w), &got); err != nil {
			t.Fatal(err)
		}
		want := &weftv1.PolicySnapshot{Version: tc.ver, ControllerNonce: "nonce-1", Policy: tc.p}
		if !proto.Equal(&got, want) {
			t.Fatalf("decoded %v\nwant %v", &got, want)
		}
	}
	// An empty policy encodes to an empty body and still decodes.
	e0, err := enc.encode(&weftv1.NodePolicy{})
	if err != nil {
		t.Fatal(err)
	}
	var got weftv1.PolicySnapshot
	if err := proto.Unmarshal(wireBytes(newWireSnapshot(1, "", &weftv1.NodePolicy{}, e0)), &got); err != nil || got.Version != 1 || got.Policy == nil {
		t.Fatalf("empty policy: %v %v", &got, err)
	}
}

func TestEncodedEqual(t *testing.T) {
	p1, _ := sharedPolicies()
	a, _ := (&encoder{}).encode(p1)
	// The same content in fresh slices (a new resolution) is equal.
	b, _ := (&encoder{}).encode(proto.Clone(p1).(*weftv1.NodePolicy))
	if !a.equal(b) {
		t.Fatal("equal content in new slices not equal")
	}
	changes := map[string]func(p *weftv1.NodePolicy){
		"weight":   func(p *weftv1.NodePolicy) { p.Services[0].Producer.Rules[0].Backends[0].Weight = 2 },
		"endpoint": func(p *weftv1.NodePolicy) { p.Clusters[0].Endpoints[0].Ready = false },
		"workload": func(p *weftv1.NodePolicy) { p.Workloads = nil },
		"anchors":  func(p *weftv1.NodePolicy) { p.TrustAnchors = [][]byte{{9}} },
		"tunnels":  func(p *weftv1.NodePolicy) { p.NodeTunnels["n4"] = "x" },
	}
	for name, change := range changes {
		c := proto.Clone(p1).(*weftv1.NodePolicy)
		change(c)
		e, _ := (&encoder{}).encode(c)
		if a.equal(e) {
			t.Errorf("%s change not detected", name)
		}
	}
}

func TestSubscribeWithoutServerCodec(t *testing.T) {
	h, _ := startWith(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p1, _ := sharedPolicies()
	p1.Node = "node-a"
	h.srv.Update(map[string]*weftv1.NodePolicy{"node-a": p1})
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	s, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(s.Policy, p1) {
		t.Fatalf("got %v", s.Policy)
	}
}
