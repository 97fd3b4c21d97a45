package gateway

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// clientHello returns the bytes crypto/tls sends as a ClientHello for cfg.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	go func() {
		tls.Client(a, cfg).Handshake()
		a.Close()
	}()
	var buf bytes.Buffer
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	tmp := make([]byte, 4096)
	for {
		n, err := b.Read(tmp)
		buf.Write(tmp[:n])
		if _, perr := ParseClientHello(buf.Bytes()); !errors.Is(perr, ErrNeedMore) || err != nil {
			break
		}
	}
	b.Close()
	return buf.Bytes()
}

func TestParseClientHello(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "pass.example.com", InsecureSkipVerify: true})
	sni, err := ParseClientHello(hello)
	if err != nil || sni != "pass.example.com" {
		t.Fatalf("ParseClientHello = %q, %v", sni, err)
	}
	for i := range len(hello) {
		if _, err := ParseClientHello(hello[:i]); !errors.Is(err, ErrNeedMore) {
			t.Fatalf("prefix of %d bytes: %v, want ErrNeedMore", i, err)
		}
	}
	noSNI := clientHello(t, &tls.Config{InsecureSkipVerify: true})
	if sni, err := ParseClientHello(noSNI); err != nil || sni != "" {
		t.Fatalf("no SNI: %q, %v", sni, err)
	}
	// the same hello split over two records
	body := hello[5:]
	split := append([]byte{0x16, 3, 1, 0, 10}, body[:10]...)
	split = append(split, 0x16, 3, 1, byte((len(body)-10)>>8), byte(len(body)-10))
	split = append(split, body[10:]...)
	if sni, err := ParseClientHello(split); err != nil || sni != "pass.example.com" {
		t.Fatalf("two records: %q, %v", sni, err)
	}
	if _, err := ParseClientHello([]byte("GET / HTTP/1.1\r\n")); !errors.Is(err, ErrNotTLS) {
		t.Fatalf("HTTP: %v, want ErrNotTLS", err)
	}
	sni, peeked, err := PeekClientHello(io.MultiReader(bytes.NewReader(hello), strings.NewReader("after")))
	if err != nil || sni != "pass.example.com" || !bytes.Equal(peeked, hello) {
		t.Fatalf("PeekClientHello = %q, %d bytes, %v", sni, len(peeked), err)
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(clientHello(f, &tls.Config{ServerName: "a.example.com", InsecureSkipVerify: true}))
	f.Add(clientHello(f, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}))
	f.Add([]byte{0x16, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		sni, err := ParseClientHello(b)
		if err != nil && sni != "" {
			t.Fatalf("error %v with SNI %q", err, sni)
		}
		if err == nil && strings.ContainsAny(sni, " \x00\x7f") {
			t.Fatalf("unprintable SNI %q accepted", sni)
		}
	})
}

// readLine dials addr (through TLS when cfg is set), reads the backend's
// greeting and checks that bytes come back.
func readLine(t *testing.T, addr string, cfg *tls.Config) (string, error) {
	t.Helper()
	var c net.Conn
	var err error
	if cfg != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	io.WriteString(c, "ping\n")
	if echo, err := br.ReadString('\n'); err != nil || echo != "ping\n" {
		return "", errors.Join(errors.New("no echo"), err)
	}
	return strings.TrimSpace(line), nil
}

func tlsListener(name, host string, mode weftv1.TLSMode, cluster string) *weftv1.GatewayListener {
	return &weftv1.GatewayListener{Name: name, Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_TLS, Hostname: host, TlsMode: mode,
		VirtualHosts: []*weftv1.VirtualHost{vhost(host, tcpTableTo(be(cluster, 1)))}}
}

func TestTLSPassthroughAndTerminate(t *testing.T) {
	ca := newCA(t)
	_, _, backendCert := ca.issue(t, false, []string{"pass.example.com"})
	passAddr := tcpEcho(t, "pass", func(c net.Conn) net.Conn {
		return tls.Server(c, &tls.Config{Certificates: []tls.Certificate{backendCert}})
	})
	termAddr := tcpEcho(t, "term", nil)
	term := tlsListener("term", "term.example.com", weftv1.TLSMode_TLS_MODE_TERMINATE, "term")
	c, k, _ := ca.issue(t, false, []string{"term.example.com"})
	term.Certificates = []*weftv1.Certificate{{Secret: "infra/term", CertPem: c, KeyPem: k, Hostnames: []string{"term.example.com"}}}
	p := policy([]*weftv1.GatewayPort{gport(443,
		tlsListener("pass", "pass.example.com", weftv1.TLSMode_TLS_MODE_PASSTHROUGH, "pass"), term,
	)}, cluster("pass", passAddr), cluster("term", termAddr))
	g, _ := newTestGateway(t, p)
	addr := g.Addr(443).String()

	// passthrough: the client sees the backend's own certificate
	if got, err := readLine(t, addr, &tls.Config{ServerName: "pass.example.com", RootCAs: ca.pool()}); err != nil || got != "pass" {
		t.Fatalf("passthrough: %q, %v", got, err)
	}
	// terminate: the gateway's certificate, plaintext to the backend
	if got, err := readLine(t, addr, &tls.Config{ServerName: "term.example.com", RootCAs: ca.pool()}); err != nil || got != "term" {
		t.Fatalf("terminate: %q, %v", got, err)
	}
	// no listener for the SNI: closed
	if _, err := readLine(t, addr, &tls.Config{ServerName: "nope.example.com", InsecureSkipVerify: true}); err == nil {
		t.Fatal("unknown SNI was served")
	}
}

func TestTCPListenerHonoursWeights(t *testing.T) {
	a, b := tcpEcho(t, "a", nil), tcpEcho(t, "b", nil)
	l := &weftv1.GatewayListener{Name: "tcp", Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_TCP,
		VirtualHosts: []*weftv1.VirtualHost{vhost("", tcpTableTo(be("a", 1), be("b", 0)))}}
	p := policy([]*weftv1.GatewayPort{gport(5432, l)}, cluster("a", a), cluster("b", b))
	g, _ := newTestGateway(t, p)
	for range 10 {
		if got, err := readLine(t, g.Addr(5432).String(), nil); err != nil || got != "a" {
			t.Fatalf("tcp: %q, %v; want a (b has weight 0)", got, err)
		}
	}
	l.VirtualHosts[0].Tables[0].Rules[0].Backends = []*weftv1.BackendRef{be("a", 0), be("b", 1)}
	if err := g.Apply(p); err != nil {
		t.Fatal(err)
	}
	if got, err := readLine(t, g.Addr(5432).String(), nil); err != nil || got != "b" {
		t.Fatalf("after reweighting: %q, %v; want b", got, err)
	}
}
