package inbound_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/agent/proxy/inbound"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/agent/proxy/tunnel/tunneltest"
)

var (
	clientID = spiffeid.RequireFromString("spiffe://cluster.local/ns/a/sa/client")
	serverID = spiffeid.RequireFromString("spiffe://cluster.local/ns/b/sa/server")
	otherID  = spiffeid.RequireFromString("spiffe://cluster.local/ns/b/sa/other")
)

// local is a static inbound.Local.
type local struct {
	pods map[netip.Addr]spiffeid.ID
	ids  []spiffeid.ID
}

func (l local) PodIdentity(a netip.Addr) (spiffeid.ID, bool) { id, ok := l.pods[a]; return id, ok }
func (l local) ByServerName(n string) (spiffeid.ID, bool) {
	for _, id := range l.ids {
		if tunnel.ServerName(id) == n {
			return id, true
		}
	}
	return spiffeid.ID{}, false
}

// echoServer accepts on 127.0.0.1 and echoes, prefixing nothing.
func echoServer(t *testing.T) netip.AddrPort {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return netip.MustParseAddrPort(l.Addr().String())
}

type fixture struct {
	ca     *tunneltest.CA
	node   string
	pod    netip.AddrPort
	server *inbound.Server
	srvIDs *tunneltest.Identities
}

func start(t *testing.T, podID spiffeid.ID, serverSVID *x509svid.SVID) *fixture {
	t.Helper()
	ca, err := tunneltest.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	return startWithCA(t, ca, podID, serverSVID)
}

func startWithCA(t *testing.T, ca *tunneltest.CA, podID spiffeid.ID, serverSVID *x509svid.SVID, opts ...func(*inbound.Config)) *fixture {
	t.Helper()
	pod := echoServer(t)
	if serverSVID == nil {
		serverSVID = ca.MustIssue(serverID)
	}
	ids := tunneltest.NewIdentities(ca.Bundle())
	// the server presents serverSVID whatever identity the SNI names
	srvIDs := &fixedIdentities{Identities: ids, svid: serverSVID}
	cfg := inbound.Config{
		TrustDomain: ca.TD,
		Identities:  srvIDs,
		Local:       local{pods: map[netip.Addr]spiffeid.ID{pod.Addr(): podID}, ids: []spiffeid.ID{serverID, otherID}},
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := inbound.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-done; !errors.Is(err, inbound.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return &fixture{ca: ca, node: l.Addr().String(), pod: pod, server: s, srvIDs: ids}
}

type fixedIdentities struct {
	*tunneltest.Identities
	svid *x509svid.SVID
}

func (f *fixedIdentities) SVID(spiffeid.ID) (*x509svid.SVID, error) { return f.svid, nil }

func dialer(t *testing.T, ca *tunneltest.CA, svids ...*x509svid.SVID) *tunnel.Dialer {
	d := tunnel.NewDialer(tunnel.DialerConfig{Identities: tunneltest.NewIdentities(ca.Bundle(), svids...), DialTimeout: 3 * time.Second})
	t.Cleanup(d.Close)
	return d
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("echo: %q %v", line, err)
	}
}

func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutines leaked: %d > %d\n%s", n, before, buf[:runtime.Stack(buf, true)])
		}
	})
}

func TestTunnelDelivers(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	// several streams share one pooled TLS connection
	var conns []*tunnel.Conn
	for range 3 {
		c, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c)
		conns = append(conns, c)
	}
	// half-close: the pod sees EOF and closes; we read EOF
	c := conns[0]
	c.Write([]byte("bye"))
	c.CloseWrite()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		t.Fatalf("after half-close: %q %v", b, err)
	}
	for _, c := range conns {
		c.Close()
	}
	d.CloseIdle()
}

func TestTunnelRejectsWrongServerID(t *testing.T) {
	checkGoroutines(t)
	ca, _ := tunneltest.NewCA("cluster.local")
	// the destination presents "other" where the source expects "server"
	f := startWithCA(t, ca, serverID, ca.MustIssue(otherID))
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	_, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
	if err == nil || !strings.Contains(err.Error(), "unexpected ID") {
		t.Fatalf("want identity mismatch, got %v", err)
	}
	d.Close()
}

func TestTunnelRejectsExpiredCertificates(t *testing.T) {
	checkGoroutines(t)
	ca, _ := tunneltest.NewCA("cluster.local")
	expired, err := ca.Issue(clientID, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("client", func(t *testing.T) {
		f := startWithCA(t, ca, serverID, nil)
		d := dialer(t, ca, expired)
		if _, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID}); err == nil {
			t.Fatal("expired client certificate accepted")
		}
		d.Close()
	})
	t.Run("server", func(t *testing.T) {
		srvExpired, _ := ca.Issue(serverID, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
		f := startWithCA(t, ca, serverID, srvExpired)
		d := dialer(t, ca, ca.MustIssue(clientID))
		_, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: serverID})
		if err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired server certificate: %v", err)
		}
		d.Close()
	})
}

func TestTunnelRejectsForeignTrustDomain(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	evil, _ := tunneltest.NewCA("evil.example")
	evilID := spiffeid.RequireFromString("spiffe://evil.example/ns/a/sa/client")
	ids := tunneltest.NewIdentities(f.ca.Bundle(), evil.MustIssue(evilID))
	d := tunnel.NewDialer(tunnel.DialerConfig{Identities: ids})
	defer d.Close()
	if _, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: evilID, Dest: serverID}); err == nil {
		t.Fatal("client from a foreign trust domain accepted")
	}
}

func TestTunnelRejectsNoClientCertificate(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	c, err := tls.Dial("tcp", f.node, &tls.Config{InsecureSkipVerify: true, ServerName: tunnel.ServerName(serverID), NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13})
	if err != nil {
		return // refused during the handshake: fine
	}
	defer c.Close()
	// TLS 1.3: the server's verdict on the client certificate arrives after
	// the client's handshake finished; it must be an alert, never data.
	c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 64))
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("want certificate required alert, got %v", err)
	}
}

func TestTunnelRejectsPlaintext(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	c, err := net.Dial("tcp", f.node)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "CONNECT " + f.pod.String() + " HTTP/1.1\r\nHost: " + f.pod.String() + "\r\n\r\nhello\n"
	c.Write([]byte(req))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ := io.ReadAll(c)
	if strings.Contains(string(b), "hello") || strings.Contains(string(b), " 200 ") {
		t.Fatalf("plaintext reached the pod: %q", b)
	}
	// h2 prior knowledge in the clear is refused the same way
	c2, err := net.Dial("tcp", f.node)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, _ = io.ReadAll(c2)
	if len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.0 400") {
		t.Fatalf("plaintext h2 got %q", b)
	}
}

func TestTunnelRefusesNonLocalTargets(t *testing.T) {
	checkGoroutines(t)
	f := start(t, serverID, nil)
	d := dialer(t, f.ca, f.ca.MustIssue(clientID))
	_, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: netip.MustParseAddrPort("127.0.0.9:80"), Source: clientID, Dest: serverID})
	if !errors.Is(err, tunnel.ErrRefused) || !strings.Contains(err.Error(), "403") {
		t.Errorf("want 403 refusal, got %v", err)
	}
	d.Close()
}

func TestTunnelRefusesIdentityOfAnotherPod(t *testing.T) {
	checkGoroutines(t)
	ca, _ := tunneltest.NewCA("cluster.local")
	// the pod runs as "server"; the source asks for "other" and the server
	// (legitimately) presents "other": the inbound must still refuse because
	// the target pod is not "other".
	f := startWithCA(t, ca, serverID, ca.MustIssue(otherID))
	d := dialer(t, ca, ca.MustIssue(clientID))
	_, err := d.Dial(context.Background(), tunnel.Target{Node: f.node, Addr: f.pod, Source: clientID, Dest: otherID})
	if !errors.Is(err, tunnel.ErrRefused) || !strings.Contains(err.Error(), "403") {
		t.Fatalf("want 403, got %v", err)
	}
	d.Close()
}
