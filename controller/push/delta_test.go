package push

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/api/weft/v1/deltatest"
)

// bigPolicies builds the policies of nodes sharing services and clusters
// slices (as resolution does): n Services of one port, each with a cluster
// of eps endpoints.
func bigPolicies(nodes []string, n, eps int) map[string]*weftv1.NodePolicy {
	var svcs []*weftv1.ServicePort
	var cls []*weftv1.Cluster
	for i := range n {
		name := fmt.Sprintf("ns/svc-%04d:80", i)
		svcs = append(svcs, &weftv1.ServicePort{Namespace: "ns", Name: fmt.Sprintf("svc-%04d", i), Port: 80, Vips: []string{fmt.Sprintf("10.96.%d.%d", i/250, i%250+1)}, DefaultCluster: name})
		c := &weftv1.Cluster{Name: name}
		for e := range eps {
			c.Endpoints = append(c.Endpoints, &weftv1.Endpoint{Ip: fmt.Sprintf("10.1.%d.%d", i%250, e), Port: 8080, Node: nodes[e%len(nodes)], Ready: true})
		}
		cls = append(cls, c)
	}
	tunnels := map[string]string{}
	for i, nd := range nodes {
		tunnels[nd] = fmt.Sprintf("172.30.0.%d:15008", i+1)
	}
	out := map[string]*weftv1.NodePolicy{}
	for i, nd := range nodes {
		out[nd] = &weftv1.NodePolicy{Node: nd, TrustDomain: "cluster.local", Services: svcs, Clusters: cls, NodeTunnels: tunnels,
			Workloads: []*weftv1.Workload{{Namespace: "ns", Name: fmt.Sprintf("pod-%d", i), Uid: fmt.Sprint(i), Identity: "spiffe://cluster.local/ns/ns/sa/default", Ips: []string{fmt.Sprintf("10.2.0.%d", i)}}}}
	}
	return out
}

// withCluster returns policies (sharing their slices) where cluster i has
// one more endpoint: a fresh copy of the clusters slice, as resolution makes.
func withCluster(ps map[string]*weftv1.NodePolicy, i int) map[string]*weftv1.NodePolicy {
	var any *weftv1.NodePolicy
	for _, p := range ps {
		any = p
		break
	}
	cls := append([]*weftv1.Cluster(nil), any.Clusters...)
	c := proto.Clone(cls[i]).(*weftv1.Cluster)
	c.Endpoints = append(c.Endpoints, &weftv1.Endpoint{Ip: "10.9.9.9", Port: 8080, Ready: true})
	cls[i] = c
	out := map[string]*weftv1.NodePolicy{}
	for n, p := range ps {
		out[n] = proto.Clone(p).(*weftv1.NodePolicy)
		out[n].Services, out[n].Clusters, out[n].NodeTunnels = p.Services, cls, p.NodeTunnels
	}
	return out
}

func (h *harness) subscribeAt(t *testing.T, ctx context.Context, token, node, nonce string, version uint64) grpc.BidiStreamingClient[weftv1.PolicyRequest, weftv1.PolicySnapshot] {
	t.Helper()
	st, err := h.client.Stream(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&weftv1.PolicyRequest{Node: node, Version: version, ControllerNonce: nonce, Deltas: true}); err != nil {
		t.Fatal(err)
	}
	return st
}

// apply is what an agent does with a snapshot on top of base.
func apply(t *testing.T, base *weftv1.PolicySnapshot, s *weftv1.PolicySnapshot) *weftv1.NodePolicy {
	t.Helper()
	if s.Delta == nil {
		return s.Policy
	}
	if base == nil || s.BaseVersion != base.Version {
		t.Fatalf("delta against %d, agent has %v", s.BaseVersion, base.GetVersion())
	}
	p, err := weftv1.ApplyDelta(base.Policy, s.Delta)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDeltaIsWhatChanged: one endpoint more in one of 500 clusters reaches
// every node as a delta of that cluster only, and the delta applied on the
// previous version is the new policy.
func TestDeltaIsWhatChanged(t *testing.T) {
	h, _ := start(t, Config{Nonce: "n1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes := []string{"node-a", "node-b"}
	p1 := bigPolicies(nodes, 500, 10)
	h.srv.Update(p1)
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	s1, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	full := proto.Size(s1)
	p2 := withCluster(p1, 7)
	if n := h.srv.Update(p2); n != 2 {
		t.Fatalf("Update changed %d nodes", n)
	}
	s2, err := recv(t, a, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	d := s2.Delta
	if d == nil || s2.BaseVersion != s1.Version || len(d.Clusters) != 1 || d.Clusters[0].Name != "ns/svc-0007:80" || len(d.Services)+len(d.Workloads)+len(d.NodeTunnels) != 0 {
		t.Fatalf("delta %v", s2)
	}
	if size := proto.Size(s2); size*100 > full {
		t.Errorf("delta is %d bytes, full snapshot %d", size, full)
	}
	s1.Policy = apply(t, s1, s2)
	if !proto.Equal(s1.Policy, p2["node-a"]) {
		t.Fatal("delta applied to the first version is not the second")
	}
}

// TestReconnectResumes: an agent that names the current version and this
// controller's nonce gets an empty delta; one that names the version
// before gets the delta from it; one with another nonce or an older
// version gets a full snapshot.
func TestReconnectResumes(t *testing.T) {
	h, _ := start(t, Config{Nonce: "n1"})
	nodes := []string{"node-a"}
	p1 := bigPolicies(nodes, 20, 2)
	h.srv.Update(p1)
	v1 := h.srv.Nodes()[0].Version
	p2 := withCluster(p1, 3)
	h.srv.Update(p2)
	v2 := h.srv.Nodes()[0].Version
	for _, tc := range []struct {
		name    string
		nonce   string
		version uint64
		check   func(s *weftv1.PolicySnapshot) bool
	}{
		{"current", "n1", v2, func(s *weftv1.PolicySnapshot) bool {
			return s.Version == v2 && s.BaseVersion == v2 && s.Delta != nil && s.Delta.Empty() && s.Policy == nil
		}},
		{"previous", "n1", v1, func(s *weftv1.PolicySnapshot) bool {
			return s.Version == v2 && s.BaseVersion == v1 && len(s.Delta.GetClusters()) == 1
		}},
		{"other controller", "n0", v2, func(s *weftv1.PolicySnapshot) bool { return s.Version == v2 && proto.Equal(s.Policy, p2["node-a"]) }},
		{"older", "n1", v1 - 1, func(s *weftv1.PolicySnapshot) bool { return s.Version == v2 && s.Delta == nil && s.Policy != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st := h.subscribeAt(t, ctx, "tok-a", "node-a", tc.nonce, tc.version)
			s, err := recv(t, st, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(s) {
				t.Fatalf("got version %d base %d delta %v policy? %v", s.Version, s.BaseVersion, s.Delta, s.Policy != nil)
			}
		})
	}
}

// TestNackedDeltaResyncs: a NACK with resync is answered with the full
// snapshot of the current version; after a plain NACK, the next version
// comes in full (the agent kept an older one).
func TestNackedDeltaResyncs(t *testing.T) {
	h, _ := start(t, Config{Nonce: "n1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := bigPolicies([]string{"node-a"}, 20, 2)
	h.srv.Update(p)
	a := h.subscribe(t, ctx, "tok-a", "node-a")
	s1, err := recv(t, a, 5*time.Second)
	if err != nil || s1.Policy == nil {
		t.Fatal(s1, err)
	}
	_ = a.Send(&weftv1.PolicyRequest{Version: s1.Version})
	p = withCluster(p, 1)
	h.srv.Update(p)
	s2, err := recv(t, a, 5*time.Second)
	if err != nil || s2.Delta == nil {
		t.Fatal(s2, err)
	}
	// base mismatch (say): NACK with resync, get the full snapshot
	_ = a.Send(&weftv1.PolicyRequest{Version: s2.Version, Error: "delta base 1 is not the version in force", Resync: true})
	s3, err := recv(t, a, 5*time.Second)
	if err != nil || s3.Policy == nil || s3.Version != s2.Version || !proto.Equal(s3.Policy, p["node-a"]) {
		t.Fatalf("after resync NACK: %v %v", s3, err)
	}
	_ = a.Send(&weftv1.PolicyRequest{Version: s3.Version})
	waitState(t, h.srv, "node-a", func(n NodeState) bool { return n.AckedVersion == s3.Version })

	// next change: a delta again; refused (invalid, say), no resync asked
	p = withCluster(p, 2)
	h.srv.Update(p)
	s4, err := recv(t, a, 5*time.Second)
	if err != nil || s4.Delta == nil || s4.BaseVersion != s3.Version {
		t.Fatal(s4, err)
	}
	_ = a.Send(&weftv1.PolicyRequest{Version: s4.Version, Error: "invalid policy"})
	waitState(t, h.srv, "node-a", func(n NodeState) bool { return n.NackedVersion == s4.Version })
	pending := expectNone(t, a, 100*time.Millisecond)
	p = withCluster(p, 3)
	h.srv.Update(p)
	select {
	case r := <-pending:
		if r.err != nil || r.snap.Policy == nil || r.snap.Delta != nil {
			t.Fatalf("after a NACK: %v %v", r.snap, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot")
	}
}

// TestDifferMatchesDiff: the server's shared-encoding delta, applied, gives
// the new policy, like deltatest.Diff, for every kind of change at once.
func TestDifferMatchesDiff(t *testing.T) {
	nodes := []string{"node-a", "node-b", "node-c"}
	p1 := bigPolicies(nodes, 30, 3)
	p2 := withCluster(p1, 4)
	svcs := append([]*weftv1.ServicePort(nil), p2["node-a"].Services[1:]...) // svc-0000 removed
	svcs[3] = proto.Clone(svcs[3]).(*weftv1.ServicePort)
	svcs[3].Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP}
	tunnels := map[string]string{"node-a": "172.30.0.1:15008", "node-c": "172.30.0.33:15008", "node-d": "172.30.0.4:15008"}
	for _, n := range nodes {
		p2[n].Services, p2[n].NodeTunnels = svcs, tunnels
	}
	p2["node-b"].Workloads = nil
	p2["node-c"].Authz = []*weftv1.AuthzPolicy{{Name: "ns/deny", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY}}
	d := newDiffer(nil)
	for _, n := range nodes {
		nd, err := d.diff(p1[n], p2[n])
		if err != nil {
			t.Fatal(err)
		}
		got, err := weftv1.ApplyDelta(p1[n], nd.msg)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, p2[n]) {
			t.Fatalf("%s: applied %v\nwant %v", n, got, p2[n])
		}
		// the form with cluster patches keeps the node's own changes too
		if nd.patched == nil {
			t.Fatalf("%s: the added endpoint is not a patch", n)
		}
		if got, err := weftv1.ApplyDelta(p1[n], nd.patched.msg); err != nil || !proto.Equal(got, p2[n]) {
			t.Fatalf("%s: patched form applied %v (%v)\nwant %v", n, got, err, p2[n])
		}
		ref := deltatest.Diff(p1[n], p2[n])
		if !proto.Equal(ref, nd.msg) {
			t.Errorf("%s: delta %v\nDiff %v", n, nd.msg, ref)
		}
		// the wire encoding decodes to the delta
		w := newDeltaWireSnapshot(9, 8, "n1", nd)
		var s weftv1.PolicySnapshot
		if err := proto.Unmarshal(wireBytes(w), &s); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(s.Delta, nd.msg) || s.BaseVersion != 8 || s.Version != 9 || s.ControllerNonce != "n1" || w.Size() != len(wireBytes(w)) {
			t.Fatalf("%s: wire %v", n, &s)
		}
	}
	if nd, _ := newDiffer(nil).diff(p2["node-a"], p2["node-a"]); nd != nil {
		t.Fatalf("no change gave %v", nd.msg)
	}
}

// TestAgentWithoutDeltasGetsFullSnapshots: an agent that does not say it
// applies deltas (one built before them) gets every version in full, also
// when it names the version it has.
func TestAgentWithoutDeltasGetsFullSnapshots(t *testing.T) {
	h, _ := start(t, Config{Nonce: "n1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := bigPolicies([]string{"node-a"}, 20, 2)
	h.srv.Update(p)
	st, err := h.client.Stream(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer tok-a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&weftv1.PolicyRequest{Node: "node-a", Version: h.srv.Nodes()[0].Version, ControllerNonce: "n1"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		s, err := recv(t, st, 5*time.Second)
		if err != nil || s.Policy == nil || s.Delta != nil || !proto.Equal(s.Policy, p["node-a"]) {
			t.Fatalf("version %d: delta %v, policy %v, %v", i, s.GetDelta() != nil, s.GetPolicy() != nil, err)
		}
		_ = st.Send(&weftv1.PolicyRequest{Version: s.Version})
		p = withCluster(p, i)
		h.srv.Update(p)
	}
}

// TestDiffAlignedOrNot: the delta of a services slice is the reference
// Diff's whether its units were replaced in place (same keys in the same
// order: no maps), or moved, added and removed.
func TestDiffAlignedOrNot(t *testing.T) {
	base := bigPolicies([]string{"node-a"}, 6, 1)["node-a"]
	edited := func(sp *weftv1.ServicePort, portName string) *weftv1.ServicePort {
		c := proto.Clone(sp).(*weftv1.ServicePort)
		c.PortName = portName
		return c
	}
	old := base.Services
	extra := &weftv1.ServicePort{Namespace: "ns", Name: "svc-9999", Port: 80, Vips: []string{"10.96.9.9"}, DefaultCluster: "ns/svc-9999:80"}
	for _, tc := range []struct {
		name    string
		new     []*weftv1.ServicePort
		upserts int
	}{
		{"one changed in place", []*weftv1.ServicePort{old[0], old[1], edited(old[2], "web"), old[3], old[4], old[5]}, 1},
		{"one copied unchanged", []*weftv1.ServicePort{old[0], old[1], proto.Clone(old[2]).(*weftv1.ServicePort), old[3], old[4], old[5]}, 0},
		{"same length, one removed and one added", []*weftv1.ServicePort{old[0], old[2], old[3], old[4], old[5], extra}, 1},
		{"last removed", old[:5:5], 0},
		{"one added", append(slices.Clone(old), extra), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p2 := proto.Clone(base).(*weftv1.NodePolicy)
			p2.Services = tc.new
			d := newDiffer(nil)
			nd, err := d.diff(base, p2)
			if err != nil {
				t.Fatal(err)
			}
			want := deltatest.Diff(base, p2)
			if nd == nil {
				if !want.Empty() {
					t.Fatalf("no delta, want %v", want)
				}
				return
			}
			if !proto.Equal(nd.msg, want) {
				t.Fatalf("delta %v\nwant %v", nd.msg, want)
			}
			if len(nd.msg.Services) != tc.upserts {
				t.Fatalf("%d upserts, want %d", len(nd.msg.Services), tc.upserts)
			}
		})
	}
}

// TestEncodingCacheIsBounded: unit encodings are kept across Updates, and
// those of units no policy holds any more are dropped once the cache
// outgrows the units in use by a quarter.
func TestEncodingCacheIsBounded(t *testing.T) {
	nodes := []string{"node-a", "node-b"}
	ps := bigPolicies(nodes, 200, 1)
	s, err := New(Config{Authenticator: tokens{}})
	if err != nil {
		t.Fatal(err)
	}
	s.Update(ps)
	live := unitsIn(ps, nil)
	for i := range 1500 { // past the 1,024 slack: a new encoding per Update
		ps = withCluster(ps, i%200)
		if s.Update(ps) != len(nodes) {
			t.Fatalf("update %d: not every node changed", i)
		}
		if limit := live + max(live/4, 1024); len(s.encs) > limit {
			t.Fatalf("update %d: %d cached encodings, over %d", i, len(s.encs), limit)
		}
	}
}

// withClusters returns policies (sharing their slices) whose clusters are
// edit's copy of ps's: each cluster it changes is a fresh one, as resolution
// makes.
func withClusters(ps map[string]*weftv1.NodePolicy, edit func(cls []*weftv1.Cluster) []*weftv1.Cluster) map[string]*weftv1.NodePolicy {
	var any *weftv1.NodePolicy
	for _, p := range ps {
		any = p
		break
	}
	cls := edit(slices.Clone(any.Clusters))
	out := map[string]*weftv1.NodePolicy{}
	for n, p := range ps {
		out[n] = proto.Clone(p).(*weftv1.NodePolicy)
		out[n].Services, out[n].Clusters, out[n].NodeTunnels = p.Services, cls, p.NodeTunnels
	}
	return out
}

func editCluster(cls []*weftv1.Cluster, i int, f func(c *weftv1.Cluster)) {
	c := proto.Clone(cls[i]).(*weftv1.Cluster)
	f(c)
	cls[i] = c
}

// TestClusterPatches: a cluster whose endpoints changed goes as a patch of
// the changed endpoints when that is smaller, and whole when its protocol
// changed, its endpoints are out of order or the patch would be larger;
// both forms of the delta, applied, give the new policy, and the form
// without patches is the reference Diff.
func TestClusterPatches(t *testing.T) {
	nodes := []string{"node-a", "node-b"}
	p1 := bigPolicies(nodes, 30, 10)
	p2 := withClusters(p1, func(cls []*weftv1.Cluster) []*weftv1.Cluster {
		editCluster(cls, 2, func(c *weftv1.Cluster) { c.Endpoints[4].Ready = false })
		editCluster(cls, 5, func(c *weftv1.Cluster) {
			c.Endpoints = append(c.Endpoints[1:], &weftv1.Endpoint{Ip: "10.1.5.99", Port: 8080, Node: "node-b", Ready: true})
		})
		editCluster(cls, 7, func(c *weftv1.Cluster) {
			c.Protocol = weftv1.Protocol_PROTOCOL_H2C
			c.Endpoints[0].Ready = false
		})
		editCluster(cls, 9, func(c *weftv1.Cluster) {
			for e, ep := range c.Endpoints {
				ep.Ip = fmt.Sprintf("10.3.9.%d", e)
			}
		})
		editCluster(cls, 11, func(c *weftv1.Cluster) {
			c.Endpoints[0], c.Endpoints[1] = c.Endpoints[1], c.Endpoints[0]
			c.Endpoints[3].Ready = false
		})
		return append(cls[:13], cls[14:]...) // 13 removed
	})
	d := newDiffer(nil)
	for _, n := range nodes {
		nd, err := d.diff(p1[n], p2[n])
		if err != nil {
			t.Fatal(err)
		}
		if ref := deltatest.Diff(p1[n], p2[n]); !proto.Equal(ref, nd.msg) {
			t.Fatalf("%s: delta without patches %v\nDiff %v", n, nd.msg, ref)
		}
		if nd.patched == nil {
			t.Fatalf("%s: no patched delta", n)
		}
		pm := nd.patched.msg
		var patched, whole []string
		for _, p := range pm.ClusterPatches {
			patched = append(patched, p.Name)
		}
		for _, c := range pm.Clusters {
			whole = append(whole, c.Name)
		}
		if want := []string{"ns/svc-0002:80", "ns/svc-0005:80"}; !slices.Equal(patched, want) {
			t.Errorf("%s: patched %v, want %v", n, patched, want)
		}
		if want := []string{"ns/svc-0007:80", "ns/svc-0009:80", "ns/svc-0011:80"}; !slices.Equal(whole, want) {
			t.Errorf("%s: whole %v, want %v", n, whole, want)
		}
		if want := []string{"ns/svc-0013:80"}; !slices.Equal(pm.RemovedClusters, want) {
			t.Errorf("%s: removed %v, want %v", n, pm.RemovedClusters, want)
		}
		if p := pm.ClusterPatches[0]; len(p.Endpoints) != 1 || p.Endpoints[0].Ready || len(p.RemovedEndpoints) != 0 {
			t.Errorf("%s: readiness flip patch %v", n, p)
		}
		if p := pm.ClusterPatches[1]; len(p.Endpoints) != 1 || p.Endpoints[0].Ip != "10.1.5.99" || len(p.RemovedEndpoints) != 1 || p.RemovedEndpoints[0].Ip != "10.1.5.0" {
			t.Errorf("%s: add and remove patch %v", n, p)
		}
		for form, m := range map[string]*weftv1.NodePolicyDelta{"whole": nd.msg, "patched": pm} {
			got, err := weftv1.ApplyDelta(p1[n], m)
			if err != nil {
				t.Fatalf("%s %s: %v", n, form, err)
			}
			if !proto.Equal(got, p2[n]) {
				t.Fatalf("%s %s: applied %v\nwant %v", n, form, got.Clusters, p2[n].Clusters)
			}
		}
		w := newDeltaWireSnapshot(9, 8, "n1", nd.patched)
		var s weftv1.PolicySnapshot
		if err := proto.Unmarshal(wireBytes(w), &s); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(s.Delta, pm) || w.Size() != len(wireBytes(w)) {
			t.Fatalf("%s: wire %v", n, &s)
		}
		if whole := newDeltaWireSnapshot(9, 8, "n1", nd).Size(); w.Size() >= whole {
			t.Errorf("%s: patched delta %d bytes, whole %d", n, w.Size(), whole)
		}
	}
	// only a change no patch makes smaller: no patched form
	p3 := withClusters(p2, func(cls []*weftv1.Cluster) []*weftv1.Cluster {
		editCluster(cls, 3, func(c *weftv1.Cluster) { c.Protocol = weftv1.Protocol_PROTOCOL_GRPC })
		return cls
	})
	if nd, err := d.diff(p2["node-a"], p3["node-a"]); err != nil || nd == nil || nd.patched != nil {
		t.Fatalf("protocol change: %v, patched %v", err, nd.patched != nil)
	}
}

// TestEndpointPatchesOnlyWhereAsked: an agent that announced
// endpoint_patches gets a readiness flip as a one-endpoint patch; one that
// did not gets the cluster whole. Both arrive at the new policy.
func TestEndpointPatchesOnlyWhereAsked(t *testing.T) {
	h, _ := start(t, Config{Nonce: "n1"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes := []string{"node-a", "node-b"}
	p1 := bigPolicies(nodes, 50, 10)
	h.srv.Update(p1)
	subs := map[string]grpc.BidiStreamingClient[weftv1.PolicyRequest, weftv1.PolicySnapshot]{}
	firsts := map[string]*weftv1.PolicySnapshot{}
	for _, n := range nodes {
		st, err := h.client.Stream(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer tok-"+n[len("node-"):]))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&weftv1.PolicyRequest{Node: n, Deltas: true, EndpointPatches: n == "node-a"}); err != nil {
			t.Fatal(err)
		}
		s, err := recv(t, st, 5*time.Second)
		if err != nil || s.Policy == nil {
			t.Fatal(s, err)
		}
		_ = st.Send(&weftv1.PolicyRequest{Version: s.Version})
		subs[n], firsts[n] = st, s
	}
	p2 := withClusters(p1, func(cls []*weftv1.Cluster) []*weftv1.Cluster {
		editCluster(cls, 17, func(c *weftv1.Cluster) { c.Endpoints[6].Ready = false })
		return cls
	})
	h.srv.Update(p2)
	for _, n := range nodes {
		s, err := recv(t, subs[n], 5*time.Second)
		if err != nil || s.Delta == nil {
			t.Fatal(s, err)
		}
		d := s.Delta
		if n == "node-a" && (len(d.Clusters) != 0 || len(d.ClusterPatches) != 1 || len(d.ClusterPatches[0].Endpoints) != 1) {
			t.Errorf("%s asked for patches, got %v", n, d)
		}
		if n == "node-b" && (len(d.ClusterPatches) != 0 || len(d.Clusters) != 1 || len(d.Clusters[0].Endpoints) != 10) {
			t.Errorf("%s did not ask for patches, got %v", n, d)
		}
		if got := apply(t, firsts[n], s); !proto.Equal(got, p2[n]) {
			t.Fatalf("%s: applied delta is not the new policy", n)
		}
	}
}

// TestWorkloadsComparedByContent: when a pod change resolves a node's
// workloads anew, copies of unchanged ones are no change and the one whose
// content changed is the delta's only workload.
func TestWorkloadsComparedByContent(t *testing.T) {
	old := &weftv1.NodePolicy{Node: "node-a", Workloads: []*weftv1.Workload{
		{Namespace: "ns", Name: "a", Uid: "1", Identity: "spiffe://td/ns/ns/sa/a", Ips: []string{"10.0.0.1"}},
		{Namespace: "ns", Name: "b", Uid: "2", Identity: "spiffe://td/ns/ns/sa/b", Ips: []string{"10.0.0.2"}},
		{Namespace: "ns", Name: "c", Uid: "3", Identity: "spiffe://td/ns/ns/sa/c", Ips: []string{"10.0.0.3"}},
	}}
	new := proto.Clone(old).(*weftv1.NodePolicy)
	new.Workloads[1].MtlsStrict = true
	nd, err := newDiffer(nil).diff(old, new)
	if err != nil {
		t.Fatal(err)
	}
	if nd == nil {
		t.Fatal("no delta, want workload b")
	}
	if len(nd.msg.Workloads) != 1 || nd.msg.Workloads[0].Name != "b" || len(nd.msg.RemovedWorkloads) != 0 {
		t.Fatalf("delta %v, want workload b only", nd.msg)
	}
	if nd, _ := newDiffer(nil).diff(old, proto.Clone(old).(*weftv1.NodePolicy)); nd != nil {
		t.Fatalf("copies gave %v", nd.msg)
	}
}
