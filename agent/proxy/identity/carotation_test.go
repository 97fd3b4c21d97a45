package identity

import (
	"context"
	"crypto/x509"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestCARotationEndToEnd runs the three rotation steps of the CA while a
// client keeps opening mTLS connections between two nodes' managers, and
// checks that no handshake fails at any point.
func TestCARotationEndToEnd(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	a := startAgent(t, env, "node-1")
	b := startAgent(t, env, "node-2")
	a.m.SetWanted([]spiffeid.ID{idCart})
	b.m.SetWanted([]spiffeid.ID{idPay})
	eventually(t, "first svids", func() bool { return serial(t, a.m, idCart) != "" && serial(t, b.m, idPay) != "" })
	srv := startServer(t, b.m, idPay)
	oldRoot := env.ca.Anchors()[0]
	// push is the controller's policy push: every agent gets the bundle.
	push := func() {
		for _, ag := range []*agent{a, b} {
			if err := ag.m.SetTrustAnchors(td, env.ca.Bundle()); err != nil {
				t.Error(err)
			}
		}
	}

	const phases = 5
	var (
		phase    atomic.Int32
		ok, fail [phases]atomic.Int64
		firstErr atomic.Value
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	// Two clients: one opens a new connection per handshake, one keeps a
	// connection opened during phase 0 and uses it throughout.
	long, err := dial(a.m, idCart, idPay, srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer long.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			p := phase.Load()
			c, err := dial(a.m, idCart, idPay, srv.addr)
			if err == nil {
				err = echo(long)
				c.Close()
			}
			if err != nil {
				fail[p].Add(1)
				firstErr.CompareAndSwap(nil, fmt.Errorf("phase %d: %w", p, err))
				continue
			}
			ok[p].Add(1)
		}
	}()
	next := func(p int32) {
		t.Helper()
		eventually(t, fmt.Sprintf("handshakes in phase %d", phase.Load()), func() bool { return ok[phase.Load()].Load() >= 20 })
		phase.Store(p)
	}
	signedBy := func(m *Manager, id spiffeid.ID) *x509.Certificate {
		s, err := m.SVID(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range env.ca.Anchors() {
			if s.Certificates[0].CheckSignatureFrom(r) == nil {
				return r
			}
		}
		t.Fatal("svid signed by no anchor")
		return nil
	}
	ctx := context.Background()

	// Phase 1: the new root joins the bundle; the old one still signs.
	next(1)
	if err := env.ca.StageRoot(ctx); err != nil {
		t.Fatal(err)
	}
	push()
	newRoot := env.ca.Anchors()[1]

	// Phase 2: the new root signs; node 1 rotates to it, node 2 still has
	// an SVID of the old root.
	next(2)
	if err := env.ca.ActivateRoot(ctx); err != nil {
		t.Fatal(err)
	}
	push()
	before := serial(t, a.m, idCart)
	a.step(t, 13*time.Hour)
	eventually(t, "node 1 rotation", func() bool { s := serial(t, a.m, idCart); return s != "" && s != before })
	if !signedBy(a.m, idCart).Equal(newRoot) || !signedBy(b.m, idPay).Equal(oldRoot) {
		t.Fatal("want node 1 on the new root and node 2 on the old one")
	}
	// Without the staging step a peer holding only the old root would
	// refuse node 1's new SVID: the staged bundle is what keeps this phase
	// working.
	newSVID, _ := a.m.SVID(idCart)
	if _, _, err := x509svid.Verify(newSVID.Certificates, x509bundle.FromX509Authorities(td, []*x509.Certificate{oldRoot})); err == nil {
		t.Fatal("new-root svid verified against the old root alone")
	}

	// Phase 3: node 2 rotates too.
	next(3)
	before = serial(t, b.m, idPay)
	b.step(t, 13*time.Hour)
	eventually(t, "node 2 rotation", func() bool { s := serial(t, b.m, idPay); return s != "" && s != before })
	if !signedBy(b.m, idPay).Equal(newRoot) {
		t.Fatal("node 2 not on the new root")
	}

	// Phase 4: one SVID lifetime after activation the old root is retired.
	next(4)
	if err := env.ca.RetireRoots(ctx); err == nil {
		t.Fatal("retired the old root while its svids may be valid")
	}
	env.caNow.Store(int64(24*time.Hour + time.Minute))
	err = env.ca.RetireRoots(ctx)
	env.caNow.Store(0)
	if err != nil {
		t.Fatal(err)
	}
	push()
	if got := env.ca.Anchors(); len(got) != 1 || !got[0].Equal(newRoot) {
		t.Fatal("bundle after retirement is not the new root alone")
	}
	eventually(t, "handshakes in phase 4", func() bool { return ok[4].Load() >= 20 })
	close(stop)
	wg.Wait()

	for p := range phases {
		t.Logf("phase %d: %d handshakes ok, %d failed", p, ok[p].Load(), fail[p].Load())
		if fail[p].Load() != 0 {
			t.Errorf("phase %d: %d failed handshakes, first: %v", p, fail[p].Load(), firstErr.Load())
		}
	}
}
