package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// testCA issues certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf for dns names and uris (client: client auth usage)
// as PEM chain, PEM key and a tls.Certificate.
func (ca *testCA) issue(t testing.TB, client bool, dns []string, uris ...string) (certPEM, keyPEM []byte, kp tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	kp, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, kp
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// echoServer answers every request with its name, the path and the Host.
func echoServer(t testing.TB, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: echoHandler(name)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

func echoHandler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", name)
		if v := r.Header.Get("X-Added"); v != "" {
			w.Header().Set("X-Saw-Added", v)
		}
		fmt.Fprintf(w, "%s %s %s", name, r.URL.RequestURI(), r.Host)
	})
}

// tcpEcho answers every connection with its name then echoes bytes.
func tcpEcho(t testing.TB, name string, wrap func(net.Conn) net.Conn) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if wrap != nil {
					c = wrap(c)
				}
				io.WriteString(c, name+"\n")
				io.Copy(c, c)
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func cluster(name string, addrs ...netip.AddrPort) *weftv1.Cluster {
	c := &weftv1.Cluster{Name: name, Protocol: weftv1.Protocol_PROTOCOL_HTTP}
	for _, a := range addrs {
		c.Endpoints = append(c.Endpoints, &weftv1.Endpoint{
			Ip: a.Addr().String(), Port: uint32(a.Port()), Ready: true, Plaintext: true,
			Identity: "spiffe://cluster.local/ns/app/sa/" + name,
		})
	}
	return c
}

func be(cluster string, w uint32) *weftv1.BackendRef {
	return &weftv1.BackendRef{Cluster: cluster, Weight: w}
}

func prefixMatch(rule uint32, p string) *weftv1.Match {
	return &weftv1.Match{Rule: rule, Http: &weftv1.HTTPMatch{Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: p}}}
}

func httpRule(name string, backends ...*weftv1.BackendRef) *weftv1.Rule {
	return &weftv1.Rule{Route: "app/" + name, RouteKind: weftv1.RouteKind_ROUTE_KIND_HTTP, Backends: backends}
}

// httpTableTo is one rule, PathPrefix p, to backends.
func httpTableTo(p string, backends ...*weftv1.BackendRef) *weftv1.RouteTable {
	return &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP, Rules: []*weftv1.Rule{httpRule("r", backends...)}, Matches: []*weftv1.Match{prefixMatch(0, p)}}
}

func tcpTableTo(backends ...*weftv1.BackendRef) *weftv1.RouteTable {
	return &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_TCP, Rules: []*weftv1.Rule{{Route: "app/tcp", RouteKind: weftv1.RouteKind_ROUTE_KIND_TCP, Backends: backends}}}
}

func vhost(host string, tables ...*weftv1.RouteTable) *weftv1.VirtualHost {
	return &weftv1.VirtualHost{Hostname: host, Tables: tables}
}

func httpListener(name, host string, vhs ...*weftv1.VirtualHost) *weftv1.GatewayListener {
	return &weftv1.GatewayListener{Name: name, Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTP, Hostname: host, VirtualHosts: vhs}
}

func policy(ports []*weftv1.GatewayPort, clusters ...*weftv1.Cluster) *weftv1.GatewayPolicy {
	return &weftv1.GatewayPolicy{Namespace: "infra", Name: "gw", TrustDomain: "cluster.local", Ports: ports, Clusters: clusters}
}

func gport(n uint32, ls ...*weftv1.GatewayListener) *weftv1.GatewayPort {
	return &weftv1.GatewayPort{Port: n, Listeners: ls}
}

// testListens maps policy ports to 127.0.0.1:0 listeners.
type testListens struct {
	mu   sync.Mutex
	fail map[uint32]bool
}

func (l *testListens) listen(port uint32) (net.Listener, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail[port] {
		return nil, fmt.Errorf("port %d: address already in use", port)
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

func newTestGateway(t testing.TB, p *weftv1.GatewayPolicy) (*Gateway, *testListens) {
	t.Helper()
	tl := &testListens{fail: map[uint32]bool{}}
	g, err := New(Config{Listen: tl.listen, DialTimeout: 2 * time.Second, HandshakeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	if p != nil {
		if err := g.Apply(p); err != nil {
			t.Fatalf("Apply: %v", err)
		}
	}
	return g, tl
}

// get sends a GET for host/path to the gateway's port and returns the
// status and body.
func get(t testing.TB, g *Gateway, port uint32, host, path string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+g.Addr(port).String()+path, nil)
	req.Host = host
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}
