package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/handoff"
	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/proxy/identity"
	"github.com/weft-mesh/weft/agent/sockholder"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func TestSameAddrMatchesHandedOverListeners(t *testing.T) {
	tcp := func(s string) net.Addr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, tc := range []struct {
		want, got string
		ok        bool
	}{
		{"172.30.0.11:15001", "172.30.0.11:15001", true},
		{"172.30.0.11:15001", "172.30.0.12:15001", false},
		{"172.30.0.11:15001", "172.30.0.11:15008", false},
		{":15021", "[::]:15021", true},
		{":15021", "0.0.0.0:15021", true},
		{":15021", "172.30.0.11:15021", false},
		{"localhost:15021", "127.0.0.1:15021", true},
		{"localhost:15021", "127.0.0.1:15022", false},
		{"no-port", "127.0.0.1:15021", false},
	} {
		if got := sameAddr(tc.want, tcp(tc.got)); got != tc.ok {
			t.Errorf("sameAddr(%q, %s) = %v, want %v", tc.want, tc.got, got, tc.ok)
		}
	}
}

// testAgent is an agent with just what acquire needs, serving on a
// loopback address of its own (the proxy ports are fixed).
func testAgent(t *testing.T, stateDir string) *Agent {
	t.Helper()
	ids, err := identity.New(identity.Config{
		Client: weftv1.NewIdentityClient(nil), // never called: Run is not started
		Token:  func() (string, error) { return "", nil },
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &Agent{
		cfg: Config{Node: "n1", NodeIP: netip.MustParseAddr("127.77.0.1"), StateDir: stateDir, HealthAddr: "127.77.0.1:15021"},
		log: slog.New(slog.DiscardHandler),
		ids: ids,
	}
}

// requireAddrs skips, not fails, where the test agents' addresses are
// taken on this host.
func requireAddrs(t *testing.T) {
	t.Helper()
	a := testAgent(t, t.TempDir())
	ls, err := a.bindAll(t.Context(), a.listenAddrs())
	if err != nil {
		t.Skipf("test addresses unavailable here: %v", err)
	}
	closeAll(ls)
}

func acquired(t *testing.T, a *Agent) (map[string]net.Listener, *handoff.Successor) {
	t.Helper()
	ls, s, err := a.acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		closeAll(ls)
		if s != nil {
			s.Close()
		}
	})
	for name, addr := range a.listenAddrs() {
		if ls[name] == nil || !sameAddr(addr, ls[name].Addr()) {
			t.Fatalf("listener %s: %v, want %s", name, ls[name], addr)
		}
	}
	return ls, s
}

// A socket file left by a crashed agent: the next one binds.
func TestAcquireBindsOverAStaleHandoffSocket(t *testing.T) {
	requireAddrs(t)
	a := testAgent(t, t.TempDir())
	if err := os.MkdirAll(filepath.Dir(a.handoffPath()), 0o700); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: a.handoffPath(), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, s := acquired(t, a); s != nil {
		t.Fatal("took over from a stale socket")
	}
}

// With an agent serving, the new one is not servable before it has a
// policy, then takes the same sockets over: a connection queued on the old
// agent's listener (which never accepts here) is accepted by the new one.
func TestAcquireTakesTheSocketsOnceServable(t *testing.T) {
	requireAddrs(t)
	dir := t.TempDir()
	old := testAgent(t, dir)
	ls, _ := acquired(t, old)
	h, err := handoff.Hold(old.handoffPath(), handoff.Offer{Listeners: ls}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	queued, err := net.Dial("tcp", ls[lnOutbound].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer queued.Close()

	a := testAgent(t, dir)
	if ok, why := a.servable(); ok {
		t.Fatal("servable without a policy")
	} else {
		t.Log(why)
	}
	a.current = &weftv1.NodePolicy{Node: "n1", TrustDomain: "cluster.local"}
	got, s := acquired(t, a)
	if s == nil {
		t.Fatal("bound instead of taking over")
	}
	c, err := got[lnOutbound].Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := s.Serving(); err != nil {
		t.Fatal(err)
	}
	<-h.Released()
}

// An address held by an agent that does not hand over (an older version)
// is bound once that agent has let it go.
func TestAcquireWaitsForAnAddressInUse(t *testing.T) {
	requireAddrs(t)
	a := testAgent(t, t.TempDir())
	busy, err := net.Listen("tcp", a.listenAddrs()[lnInbound])
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		ls  map[string]net.Listener
		err error
	}
	done := make(chan result, 1)
	go func() {
		ls, _, err := a.acquire(t.Context())
		done <- result{ls, err}
	}()
	busy.Close()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	closeAll(r.ls)
}

// testSVID returns a CA (DER) and, signed by it, an SVID for id as an
// identity export record.
func testSVID(t *testing.T, id string) (caDER []byte, rec []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		URIs: []*url.URL{{Scheme: "spiffe", Host: "cluster.local"}},
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{u},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	rec, _ = json.Marshal(map[string][]byte{"chain": leafDER, "key": keyDER})
	return caDER, rec
}

// The new agent gets the old one's SVIDs over the handoff socket before it
// waits to be servable: with the policy on disk and no controller, it
// takes over at once.
func TestAcquireTakesTheSVIDsWithTheSockets(t *testing.T) {
	requireAddrs(t)
	const id = "spiffe://cluster.local/ns/shop/sa/pay"
	caDER, rec := testSVID(t, id)
	pol := &weftv1.NodePolicy{
		Node: "n1", TrustDomain: "cluster.local", TrustAnchors: [][]byte{caDER},
		Workloads: []*weftv1.Workload{{Namespace: "shop", Name: "pay-1", Identity: id}},
	}
	dir := t.TempDir()
	old := testAgent(t, dir)
	if err := old.ids.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	if n, err := old.ids.Import([][]byte{rec}); n != 1 {
		t.Fatalf("old agent's svid: %d, %v", n, err)
	}
	ls, _ := acquired(t, old)
	h, err := handoff.Hold(old.handoffPath(), handoff.Offer{Listeners: ls, State: old.ids.Export}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })

	a := testAgent(t, dir)
	if err := a.ids.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	a.current = pol
	if ok, _ := a.servable(); ok {
		t.Fatal("servable before it has an SVID")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, s, err := a.acquire(ctx)
	if err != nil {
		t.Fatalf("acquire with the predecessor's svids: %v", err)
	}
	t.Cleanup(func() { closeAll(got); s.Close() })
	if s == nil {
		t.Fatal("bound instead of taking over")
	}
	svid, err := a.ids.SVID(spiffeid.RequireFromString(id))
	if err != nil {
		t.Fatal(err)
	}
	if svid.Certificates[0].SerialNumber.Int64() != 2 {
		t.Fatalf("serial %v, want the predecessor's", svid.Certificates[0].SerialNumber)
	}
}

// After a crash (a stale handoff socket, no agent serving) the new agent
// gets its listeners from the node's socket holder, and only once it can
// serve: a connection that waited in the queue while no agent ran is
// accepted by it. The holder keeps serving the next agent.
func TestAcquireFromTheHolderAfterACrash(t *testing.T) {
	requireAddrs(t)
	dir := t.TempDir()
	a := testAgent(t, dir)
	a.cfg.HolderPath, _ = sockholder.Paths(dir, a.cfg.Node)
	if err := os.MkdirAll(filepath.Dir(a.handoffPath()), 0o700); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: a.handoffPath(), Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	ctx, cancel := context.WithCancel(t.Context())
	holderDone := make(chan error, 1)
	ready := make(chan struct{})
	go func() {
		holderDone <- sockholder.Run(ctx, sockholder.Config{Path: a.cfg.HolderPath, AgentPath: a.handoffPath(),
			Addrs: a.listenAddrs(), Listen: proxy.Listen}, func() { close(ready) })
	}()
	t.Cleanup(func() { cancel(); <-holderDone })
	select {
	case <-ready:
	case err := <-holderDone:
		t.Fatalf("holder: %v", err)
	}
	queued, err := net.Dial("tcp", a.listenAddrs()[lnOutbound])
	if err != nil {
		t.Fatalf("connect while no agent runs: %v", err)
	}
	defer queued.Close()

	type res struct {
		ls  map[string]net.Listener
		s   *handoff.Successor
		err error
	}
	done := make(chan res, 1)
	go func() {
		ls, s, err := a.acquire(t.Context())
		done <- res{ls, s, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("acquired %v, %v before the agent could serve", r.ls, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	a.mu.Lock()
	a.current = &weftv1.NodePolicy{Node: "n1", TrustDomain: "cluster.local"}
	a.mu.Unlock()
	r := <-done
	if r.err != nil || r.s != nil || a.source != sockholder.FromHolder {
		t.Fatalf("acquire = %v, successor %v, source %q; want the holder's listeners", r.err, r.s, a.source)
	}
	defer closeAll(r.ls)
	c, err := r.ls[lnOutbound].Accept()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	next, err := sockholder.Share(t.Context(), a.cfg.HolderPath)
	if err != nil {
		t.Fatalf("the holder stopped serving after an agent took a share: %v", err)
	}
	closeAll(next)
}
