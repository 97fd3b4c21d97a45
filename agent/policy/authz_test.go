package policy

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/proxy/authz"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// An invalid authorization policy pushed to an agent is NACKed before it
// is applied; the last good policy stays in force, and a removal applies.
func TestClientNACKsAnInvalidAuthzPolicyKeepingTheLastGood(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("cluster.local")
	var inForce atomic.Pointer[authz.Table]
	ctl, c, _ := start(t, func(p *weftv1.NodePolicy) error {
		tab, err := authz.Compile(p, td)
		if err != nil {
			return err
		}
		inForce.Store(tab)
		return nil
	}, nil)
	recv(t, ctl.reqs)
	frontend := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "frontend")
	checkout := spiffeid.RequireFromSegments(td, "ns", "shop", "sa", "checkout")
	snap := func(v uint64, authzs ...*weftv1.AuthzPolicy) *weftv1.PolicySnapshot {
		s := snapshot(v)
		s.Policy.TrustDomain = "cluster.local"
		s.Policy.Workloads = []*weftv1.Workload{{Namespace: "shop", Name: "cart-0", Identity: "spiffe://cluster.local/ns/shop/sa/cart", Ips: []string{"10.0.0.5"}}}
		s.Policy.Authz = authzs
		return s
	}
	allow := func() *weftv1.AuthzPolicy {
		return &weftv1.AuthzPolicy{Name: "shop/cart-callers", Action: weftv1.AuthzAction_AUTHZ_ACTION_ALLOW, Workloads: []string{"shop/cart-0"},
			Rules: []*weftv1.AuthzRule{{Sources: []*weftv1.AuthzSource{{Identity: frontend.String()}}, Ports: []uint32{8080}}}}
	}
	allowed := func(id spiffeid.ID) bool {
		return inForce.Load().For("shop/cart-0").Connection(id, 8080).Allowed
	}

	ctl.send <- snap(1, allow())
	if r := recv(t, ctl.reqs); r.GetVersion() != 1 || r.GetError() != "" {
		t.Fatalf("want ACK of 1, got %v", r)
	}
	if !allowed(frontend) || allowed(checkout) {
		t.Fatal("version 1 not in force")
	}

	bad := allow()
	bad.Rules[0].Http = []*weftv1.HTTPMatch{{Method: "POST"}} // http matches at Network level
	ctl.send <- snap(2, bad)
	r := recv(t, ctl.reqs)
	if r.GetVersion() != 2 || !strings.Contains(r.GetError(), "network-level") {
		t.Fatalf("want a NACK of 2 naming the problem, got %v", r)
	}
	if cur := c.Current(); cur.GetVersion() != 1 {
		t.Fatalf("in force after NACK: version %d, want 1", cur.GetVersion())
	}
	if !allowed(frontend) || allowed(checkout) {
		t.Fatal("the NACKed policy changed what is in force")
	}

	ctl.send <- snap(3)
	if r := recv(t, ctl.reqs); r.GetVersion() != 3 || r.GetError() != "" {
		t.Fatalf("want ACK of 3, got %v", r)
	}
	if !allowed(checkout) {
		t.Fatal("a removed policy still applies")
	}
}
