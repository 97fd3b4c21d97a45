package identity

import (
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func TestRotationNewConnectionsUseNewSVIDOldConnectionsFinish(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	a := startAgent(t, env, "node-1")
	b := startAgent(t, env, "node-2")
	a.m.SetWanted([]spiffeid.ID{idCart})
	b.m.SetWanted([]spiffeid.ID{idPay})
	eventually(t, "first svids", func() bool { return serial(t, a.m, idCart) != "" && serial(t, b.m, idPay) != "" })

	srv := startServer(t, b.m, idPay)
	old, err := dial(a.m, idCart, idPay, srv.addr)
	if err != nil {
		t.Fatalf("handshake before rotation: %v", err)
	}
	defer old.Close()
	first := serial(t, b.m, idPay)
	if peerSerial(old) != first {
		t.Fatal("server did not present its svid")
	}

	// 11h: before the earliest rotation point (40% of 24h is 9.6h after
	// NotBefore, which is backdated 1m, so use 9h).
	b.step(t, 9*time.Hour)
	time.Sleep(20 * time.Millisecond)
	if serial(t, b.m, idPay) != first {
		t.Fatal("rotated before 40% of the lifetime")
	}
	// Past half-life: rotated.
	b.step(t, 3*time.Hour)
	eventually(t, "rotation", func() bool { s := serial(t, b.m, idPay); return s != "" && s != first })
	second := serial(t, b.m, idPay)

	fresh, err := dial(a.m, idCart, idPay, srv.addr)
	if err != nil {
		t.Fatalf("handshake after rotation: %v", err)
	}
	defer fresh.Close()
	if got := peerSerial(fresh); got != second {
		t.Fatalf("new connection got svid %s, want rotated %s", got, second)
	}
	// The connection opened before the rotation keeps working.
	if err := echo(old); err != nil {
		t.Fatalf("old connection broke after rotation: %v", err)
	}
	if peerSerial(old) != first {
		t.Fatal("old connection changed certificate")
	}
}

func TestControllerUnreachable(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	a := startAgent(t, env, "node-1")
	b := startAgent(t, env, "node-2")
	a.m.SetWanted([]spiffeid.ID{idCart})
	b.m.SetWanted([]spiffeid.ID{idPay})
	eventually(t, "first svids", func() bool { return serial(t, a.m, idCart) != "" && serial(t, b.m, idPay) != "" })
	first := serial(t, b.m, idPay)
	srv := startServer(t, b.m, idPay)

	env.down.Store(true)
	// A new identity waits; it is never served without an SVID.
	b.m.SetWanted([]spiffeid.ID{idPay, idShip})
	b.step(t, 13*time.Hour) // past half-life: rotation is attempted and fails
	for range 5 {
		b.step(t, 5*time.Second) // retries
	}
	if _, err := b.m.SVID(idShip); !errors.Is(err, tunnel.ErrNoSVID) {
		t.Fatalf("new identity while the controller is down: err = %v, want ErrNoSVID", err)
	}
	st := b.m.Status()
	if len(st) != 2 || st[0].ID != idPay || st[1].ID != idShip || st[1].Serial != "" || st[1].Failures == 0 || st[1].LastError == "" || st[0].Serial == "" {
		t.Fatalf("status while the controller is down: %+v", st)
	}
	if serial(t, b.m, idPay) != first {
		t.Fatal("svid changed while the controller was down")
	}
	// Existing SVID still works (real TLS; certificates are valid in real time).
	c, err := dial(a.m, idCart, idPay, srv.addr)
	if err != nil {
		t.Fatalf("handshake with the existing svid while the controller is down: %v", err)
	}
	c.Close()
	// Until it expires: then nothing is served.
	b.step(t, 12*time.Hour)
	if _, err := b.m.SVID(idPay); !errors.Is(err, ErrExpired) || !errors.Is(err, tunnel.ErrNoSVID) {
		t.Fatalf("expired svid: err = %v, want ErrExpired and ErrNoSVID", err)
	}
	// The controller is back: both identities get SVIDs. (The agent's fake
	// clock is now a day ahead; move the CA's clock along so the SVIDs it
	// issues are valid on the agent's timeline.)
	env.caNow.Store(int64(time.Until(b.clock.Now())))
	env.down.Store(false)
	b.step(t, 5*time.Second)
	eventually(t, "svids after recovery", func() bool {
		s := serial(t, b.m, idPay)
		return s != "" && s != first && serial(t, b.m, idShip) != ""
	})
}

func TestIdentityNotOnNodeIsNeverIssued(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	a := startAgent(t, env, "node-1")
	a.m.SetWanted([]spiffeid.ID{idCart, idPay}) // pay runs on node-2 only
	eventually(t, "cart svid", func() bool { return serial(t, a.m, idCart) != "" })
	for range 3 {
		a.step(t, 5*time.Second)
	}
	if _, err := a.m.SVID(idPay); !errors.Is(err, tunnel.ErrNoSVID) {
		t.Fatalf("svid of an identity of another node: err = %v", err)
	}
}

func TestDroppedWhenLastPodLeaves(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	a := startAgent(t, env, "node-1")
	a.m.SetWanted([]spiffeid.ID{idCart})
	eventually(t, "cart svid", func() bool { return serial(t, a.m, idCart) != "" })
	a.m.SetWanted(nil)
	if _, err := a.m.SVID(idCart); !errors.Is(err, tunnel.ErrNoSVID) {
		t.Fatalf("dropped identity still served: %v", err)
	}
	a.m.SetWanted([]spiffeid.ID{idCart})
	eventually(t, "cart svid again", func() bool { return serial(t, a.m, idCart) != "" })
}

func TestSetPolicy(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	a := startAgent(t, env, "node-1")
	good := &weftv1.NodePolicy{
		Node: "node-1", TrustDomain: "cluster.local", TrustAnchors: env.ca.Bundle(),
		Workloads: []*weftv1.Workload{
			{Namespace: "shop", Name: "cart-1", Identity: idCart.String()},
			{Namespace: "shop", Name: "cart-2", Identity: idCart.String()},
		},
	}
	if err := a.m.SetPolicy(good); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cart svid", func() bool { return serial(t, a.m, idCart) != "" })
	before := a.m.Bundle()
	bad := []*weftv1.NodePolicy{
		{TrustDomain: "cluster.local", TrustAnchors: [][]byte{[]byte("junk")}, Workloads: good.Workloads},
		{TrustDomain: "", TrustAnchors: env.ca.Bundle(), Workloads: good.Workloads},
		{TrustDomain: "cluster.local", TrustAnchors: env.ca.Bundle(), Workloads: []*weftv1.Workload{{Identity: "not a spiffe id"}}},
		{TrustDomain: "cluster.local", TrustAnchors: env.ca.Bundle(), Workloads: []*weftv1.Workload{{Identity: "spiffe://other.org/ns/a/sa/b"}}},
	}
	for i, p := range bad {
		if err := a.m.SetPolicy(p); err == nil {
			t.Fatalf("bad policy %d accepted", i)
		}
	}
	if a.m.Bundle() != before || serial(t, a.m, idCart) == "" {
		t.Fatal("a rejected policy changed the manager")
	}
	// No anchors yet (CA not loaded): the bundle is kept, workloads apply.
	if err := a.m.SetPolicy(&weftv1.NodePolicy{TrustDomain: "cluster.local"}); err != nil {
		t.Fatal(err)
	}
	if a.m.Bundle() != before {
		t.Fatal("a policy without anchors replaced the bundle")
	}
	if _, err := a.m.SVID(idCart); !errors.Is(err, tunnel.ErrNoSVID) {
		t.Fatal("workload removed by the policy still has an svid")
	}
}

func TestRotationTime(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leafLife := 24 * time.Hour
	leaf := certWith(nb, nb.Add(leafLife))
	for _, now := range []time.Time{nb, nb.Add(-time.Hour), nb.Add(30 * time.Hour)} { // in sync, node behind, node ahead
		for _, r := range []float64{0, 0.5, 0.999} {
			got := rotationTime(leaf, now, r)
			if got.Before(now.Add(leafLife*4/10)) || got.After(now.Add(leafLife/2)) {
				t.Fatalf("rotation %s after receipt for jitter %v, want within 40%%-50%% of the lifetime", got.Sub(now), r)
			}
		}
	}
}
