package push

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// BenchmarkUpdateOneServiceChanged is the Update after a route change at
// issue #17's scale, without streams: 1,000 nodes sharing 20,000 Service
// ports and clusters, one Service port replaced (a fresh copy of the
// services slice, as resolution makes). It is the controller's own share
// of "resolution end -> all nodes ACKed" in make bench-scale.
func BenchmarkUpdateOneServiceChanged(b *testing.B) {
	nodes := make([]string, 1000)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%d", i)
	}
	ps := bigPolicies(nodes, 20000, 2)
	s, err := New(Config{Authenticator: tokens{}})
	if err != nil {
		b.Fatal(err)
	}
	s.Update(ps)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		var any *weftv1.NodePolicy
		for _, p := range ps {
			any = p
			break
		}
		svcs := append([]*weftv1.ServicePort(nil), any.Services...)
		sp := proto.Clone(svcs[7]).(*weftv1.ServicePort)
		sp.PortName = fmt.Sprint(i)
		svcs[7] = sp
		next := make(map[string]*weftv1.NodePolicy, len(ps))
		for n, p := range ps {
			np := proto.Clone(&weftv1.NodePolicy{Node: p.Node, TrustDomain: p.TrustDomain, Workloads: p.Workloads}).(*weftv1.NodePolicy)
			np.Workloads, np.Services, np.Clusters, np.NodeTunnels = p.Workloads, svcs, p.Clusters, p.NodeTunnels
			next[n] = np
		}
		if got := s.Update(next); got != len(nodes) {
			b.Fatalf("%d nodes changed, want %d", got, len(nodes))
		}
		ps = next
	}
}
