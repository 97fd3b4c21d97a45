package identity

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/proxy/inbound"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
)

// local maps the echo "pod" and SNI names to identities of node 2.
type local map[spiffeid.ID]netip.Addr

func (l local) PodIdentity(addr netip.Addr) (spiffeid.ID, bool) {
	for id, a := range l {
		if a == addr {
			return id, true
		}
	}
	return spiffeid.ID{}, false
}

func (l local) ByServerName(name string) (spiffeid.ID, bool) {
	for id := range l {
		if tunnel.ServerName(id) == name {
			return id, true
		}
	}
	return spiffeid.ID{}, false
}

// TestProxyTunnelWithCASVIDs runs the proxy's tunnel (dialer on node 1,
// inbound server on node 2) with SVIDs that the managers obtained from the
// CA.
func TestProxyTunnelWithCASVIDs(t *testing.T) {
	env := startCA(t, 24*time.Hour)
	a := startAgent(t, env, "node-1")
	b := startAgent(t, env, "node-2")
	a.m.SetWanted([]spiffeid.ID{idCart})
	b.m.SetWanted([]spiffeid.ID{idPay})
	eventually(t, "svids", func() bool { return serial(t, a.m, idCart) != "" && serial(t, b.m, idPay) != "" })

	pod, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pod.Close()
	go func() {
		for {
			c, err := pod.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	podAddr := netip.MustParseAddrPort(pod.Addr().String())

	srv, err := inbound.New(inbound.Config{TrustDomain: td, Identities: b.m, Local: local{idPay: podAddr.Addr()}, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Close()

	d := tunnel.NewDialer(tunnel.DialerConfig{Identities: a.m})
	defer d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := d.Dial(ctx, tunnel.Target{Node: lis.Addr().String(), Addr: podAddr, Source: idCart, Dest: idPay})
	if err != nil {
		t.Fatalf("tunnel with CA-issued svids: %v", err)
	}
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo through the tunnel: %q, %v", buf, err)
	}
	c.Close()

	// Node 1 holds no SVID of pay, so it cannot source a tunnel as pay.
	if _, err := d.Dial(ctx, tunnel.Target{Node: lis.Addr().String(), Addr: podAddr, Source: idPay, Dest: idPay}); err == nil {
		t.Fatal("node 1 opened a tunnel as an identity it holds no svid for")
	}
	// Asking for an identity node 2 does not serve fails the handshake.
	if _, err := d.Dial(ctx, tunnel.Target{Node: lis.Addr().String(), Addr: podAddr, Source: idCart, Dest: idShip}); err == nil {
		t.Fatal("tunnel to an identity the destination does not hold succeeded")
	}
}
