package deltatest

import (
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func deltaBase() *weftv1.NodePolicy {
	return &weftv1.NodePolicy{
		Node: "n1", TrustDomain: "cluster.local", TrustAnchors: [][]byte{[]byte("ca1")},
		Workloads: []*weftv1.Workload{{Namespace: "a", Name: "p1", Uid: "1"}, {Namespace: "b", Name: "p2", Uid: "2"}},
		Services: []*weftv1.ServicePort{
			{Namespace: "a", Name: "s", Port: 80, DefaultCluster: "a/s:80"},
			{Namespace: "a", Name: "s", Port: 8080, DefaultCluster: "a/s:8080"},
			{Namespace: "a-b", Name: "t", Port: 80, DefaultCluster: "a-b/t:80"},
		},
		Clusters: []*weftv1.Cluster{
			{Name: "a-b/t:80", Endpoints: []*weftv1.Endpoint{{Ip: "10.0.0.3", Port: 80}}},
			{Name: "a/s:80", Endpoints: []*weftv1.Endpoint{{Ip: "10.0.0.1", Port: 80}}},
			{Name: "a/s:8080", Endpoints: []*weftv1.Endpoint{{Ip: "10.0.0.1", Port: 8080}}},
		},
		NodeTunnels: map[string]string{"n1": "172.30.0.1:15008", "n2": "172.30.0.2:15008"},
		Authz:       []*weftv1.AuthzPolicy{{Name: "a/deny", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Workloads: []string{"a/p1"}}},
	}
}

// TestDeltaRoundTrip: weftv1.ApplyDelta(old, Diff(old, new)) is new, for changes
// of every kind of unit, and the delta holds only what changed.
func TestDeltaRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(p *weftv1.NodePolicy)
		units  int // upserts + removals in the delta
	}{
		{"nothing", func(p *weftv1.NodePolicy) {}, 0},
		{"endpoint", func(p *weftv1.NodePolicy) {
			p.Clusters[1] = &weftv1.Cluster{Name: "a/s:80", Endpoints: []*weftv1.Endpoint{{Ip: "10.0.0.9", Port: 80}}}
		}, 1},
		{"route", func(p *weftv1.NodePolicy) {
			p.Services[0] = &weftv1.ServicePort{Namespace: "a", Name: "s", Port: 80, DefaultCluster: "a/s:80", Producer: &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP}}
		}, 1},
		{"remove service and cluster", func(p *weftv1.NodePolicy) {
			p.Services = p.Services[:2]
			p.Clusters = p.Clusters[1:]
		}, 2},
		{"add service in order", func(p *weftv1.NodePolicy) {
			p.Services = []*weftv1.ServicePort{p.Services[0], {Namespace: "a", Name: "s", Port: 443}, p.Services[1], p.Services[2]}
		}, 1},
		{"workloads", func(p *weftv1.NodePolicy) {
			p.Workloads = []*weftv1.Workload{{Namespace: "a", Name: "p0", Uid: "0"}, {Namespace: "b", Name: "p2", Uid: "2", Ips: []string{"10.1.1.1"}}}
		}, 3},
		{"authz removed", func(p *weftv1.NodePolicy) { p.Authz = nil }, 1},
		{"tunnels", func(p *weftv1.NodePolicy) {
			p.NodeTunnels = map[string]string{"n1": "172.30.0.9:15008", "n3": "172.30.0.3:15008"}
		}, 3},
		{"trust", func(p *weftv1.NodePolicy) { p.TrustAnchors = [][]byte{[]byte("ca1"), []byte("ca2")} }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, new := deltaBase(), deltaBase()
			tc.change(new)
			d := Diff(old, new)
			units := len(d.Services) + len(d.RemovedServices) + len(d.Clusters) + len(d.RemovedClusters) + len(d.Workloads) +
				len(d.RemovedWorkloads) + len(d.Authz) + len(d.RemovedAuthz) + len(d.NodeTunnels) + len(d.RemovedNodeTunnels)
			if units != tc.units {
				t.Errorf("delta has %d units, want %d: %v", units, tc.units, d)
			}
			got, err := weftv1.ApplyDelta(old, d)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, new) {
				t.Fatalf("applied delta:\n%v\nwant\n%v", got, new)
			}
			if !proto.Equal(old, deltaBase()) {
				t.Fatal("weftv1.ApplyDelta modified its base")
			}
			if d.Empty() != (tc.name == "nothing") {
				t.Errorf("Empty() = %v", d.Empty())
			}
		})
	}
}

// TestDeltaBad: a delta that does not fit its base is refused with
// weftv1.ErrBadDelta, whole.
func TestDeltaBad(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    *weftv1.NodePolicyDelta
	}{
		{"remove missing service", &weftv1.NodePolicyDelta{RemovedServices: []string{"a/s:81"}}},
		{"remove missing cluster", &weftv1.NodePolicyDelta{RemovedClusters: []string{"x"}}},
		{"remove missing tunnel", &weftv1.NodePolicyDelta{RemovedNodeTunnels: []string{"n9"}}},
		{"upsert twice", &weftv1.NodePolicyDelta{Clusters: []*weftv1.Cluster{{Name: "x"}, {Name: "x"}}}},
		{"upsert and remove", &weftv1.NodePolicyDelta{Workloads: []*weftv1.Workload{{Namespace: "a", Name: "p1"}}, RemovedWorkloads: []string{"a/p1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := weftv1.ApplyDelta(deltaBase(), tc.d); !errors.Is(err, weftv1.ErrBadDelta) {
				t.Fatalf("err = %v, want weftv1.ErrBadDelta", err)
			}
		})
	}
	if _, err := weftv1.ApplyDelta(nil, &weftv1.NodePolicyDelta{}); !errors.Is(err, weftv1.ErrBadDelta) {
		t.Fatalf("no base: err = %v", err)
	}
}

// TestClusterPatch: a patch adds, replaces and removes endpoints of its
// cluster by (ip, port), keeps Cluster's order and the base's protocol,
// and leaves the base and other clusters as they were.
func TestClusterPatch(t *testing.T) {
	base := deltaBase()
	base.Clusters[1] = &weftv1.Cluster{Name: "a/s:80", Protocol: weftv1.Protocol_PROTOCOL_HTTP, Endpoints: []*weftv1.Endpoint{
		{Ip: "10.0.0.1", Port: 80, Ready: true}, {Ip: "10.0.0.2", Port: 80, Ready: true}, {Ip: "10.0.0.2", Port: 81, Ready: true}, {Ip: "10.0.0.5", Port: 80, Ready: true},
	}}
	d := &weftv1.NodePolicyDelta{ClusterPatches: []*weftv1.ClusterPatch{{
		Name:             "a/s:80",
		Endpoints:        []*weftv1.Endpoint{{Ip: "10.0.0.4", Port: 80, Ready: true}, {Ip: "10.0.0.1", Port: 80, Terminating: true}},
		RemovedEndpoints: []*weftv1.EndpointKey{{Ip: "10.0.0.2", Port: 81}},
	}}}
	if d.Empty() {
		t.Fatal("a delta with a patch is Empty")
	}
	got, err := weftv1.ApplyDelta(base, d)
	if err != nil {
		t.Fatal(err)
	}
	want := deltaBase()
	want.Clusters[1] = &weftv1.Cluster{Name: "a/s:80", Protocol: weftv1.Protocol_PROTOCOL_HTTP, Endpoints: []*weftv1.Endpoint{
		{Ip: "10.0.0.1", Port: 80, Terminating: true}, {Ip: "10.0.0.2", Port: 80, Ready: true}, {Ip: "10.0.0.4", Port: 80, Ready: true}, {Ip: "10.0.0.5", Port: 80, Ready: true},
	}}
	if !proto.Equal(got, want) {
		t.Fatalf("patched:\n%v\nwant\n%v", got.Clusters, want.Clusters)
	}
	if len(base.Clusters[1].Endpoints) != 4 || base.Clusters[1].Endpoints[0].Terminating {
		t.Fatal("the patch modified its base")
	}
	if got.Clusters[0] != base.Clusters[0] || got.Clusters[2] != base.Clusters[2] {
		t.Fatal("unpatched clusters are not the base's own")
	}
}

// TestClusterPatchBad: a patch that does not fit its base is refused with
// weftv1.ErrBadDelta, whole.
func TestClusterPatchBad(t *testing.T) {
	ep := func(ip string, port uint32) *weftv1.Endpoint { return &weftv1.Endpoint{Ip: ip, Port: port} }
	key := func(ip string, port uint32) *weftv1.EndpointKey { return &weftv1.EndpointKey{Ip: ip, Port: port} }
	for _, tc := range []struct {
		name string
		d    *weftv1.NodePolicyDelta
		base func(*weftv1.NodePolicy)
	}{
		{"cluster not in the base", &weftv1.NodePolicyDelta{ClusterPatches: []*weftv1.ClusterPatch{{Name: "x", Endpoints: []*weftv1.Endpoint{ep("10.0.0.9", 80)}}}}, nil},
		{"patched twice", &weftv1.NodePolicyDelta{ClusterPatches: []*weftv1.ClusterPatch{{Name: "a/s:80"}, {Name: "a/s:80"}}}, nil},
		{"patched and upserted", &weftv1.NodePolicyDelta{Clusters: []*weftv1.Cluster{{Name: "a/s:80"}}, ClusterPatches: []*weftv1.ClusterPatch{{Name: "a/s:80"}}}, nil},
		{"patched and removed", &weftv1.NodePolicyDelta{RemovedClusters: []string{"a/s:80"}, ClusterPatches: []*weftv1.ClusterPatch{{Name: "a/s:80"}}}, nil},
		{"remove a missing endpoint", &weftv1.NodePolicyDelta{ClusterPatches: []*weftv1.ClusterPatch{{Name: "a/s:80", RemovedEndpoints: []*weftv1.EndpointKey{key("10.0.0.1", 81)}}}}, nil},
		{"endpoint upserted twice", &weftv1.NodePolicyDelta{ClusterPatches: []*weftv1.ClusterPatch{{Name: "a/s:80", Endpoints: []*weftv1.Endpoint{ep("10.0.0.9", 80), ep("10.0.0.9", 80)}}}}, nil},
		{"endpoint upserted and removed", &weftv1.NodePolicyDelta{ClusterPatches: []*weftv1.ClusterPatch{{Name: "a/s:80", Endpoints: []*weftv1.Endpoint{ep("10.0.0.1", 80)}, RemovedEndpoints: []*weftv1.EndpointKey{key("10.0.0.1", 80)}}}}, nil},
		{"base out of order", &weftv1.NodePolicyDelta{ClusterPatches: []*weftv1.ClusterPatch{{Name: "a/s:80", Endpoints: []*weftv1.Endpoint{ep("10.0.0.9", 80)}}}},
			func(p *weftv1.NodePolicy) {
				p.Clusters[1].Endpoints = []*weftv1.Endpoint{ep("10.0.0.2", 80), ep("10.0.0.1", 80)}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := deltaBase()
			if tc.base != nil {
				tc.base(base)
			}
			if _, err := weftv1.ApplyDelta(base, tc.d); !errors.Is(err, weftv1.ErrBadDelta) {
				t.Fatalf("err = %v, want weftv1.ErrBadDelta", err)
			}
		})
	}
}
