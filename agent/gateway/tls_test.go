package gateway

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func TestPickCertExactBeforeWildcardElseFirst(t *testing.T) {
	l := &Listener{Certs: []Cert{
		{Hostnames: []string{"*.example.com"}},
		{Hostnames: []string{"other.test", "foo.example.com"}},
		{Hostnames: []string{"*.test"}},
	}}
	for sni, want := range map[string]int{
		"foo.example.com": 1, "FOO.example.com.": 1, "bar.example.com": 0, "a.b.example.com": 0,
		"other.test": 1, "x.test": 2, "unknown.org": 0, "": 0,
	} {
		got := l.PickCert(sni)
		if got != &l.Certs[want] {
			t.Errorf("PickCert(%q) = %v, want cert %d", sni, got.Hostnames, want)
		}
	}
}

// httpsListener is a terminating HTTPS listener with one certificate per
// name set, routing everything to cluster.
func httpsListener(t *testing.T, ca *testCA, name, host, clusterName string, names ...[]string) *weftv1.GatewayListener {
	l := &weftv1.GatewayListener{Name: name, Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTPS, Hostname: host,
		TlsMode: weftv1.TLSMode_TLS_MODE_TERMINATE, VirtualHosts: []*weftv1.VirtualHost{vhost("", httpTableTo("/", be(clusterName, 1)))}}
	for _, n := range names {
		c, k, _ := ca.issue(t, false, n)
		l.Certificates = append(l.Certificates, &weftv1.Certificate{Secret: "infra/" + n[0], CertPem: c, KeyPem: k, Hostnames: n})
	}
	return l
}

func httpsGet(t *testing.T, g *Gateway, sni string, cfg *tls.Config) (*http.Response, string, error) {
	t.Helper()
	cfg = cfg.Clone()
	cfg.ServerName = sni
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "https://"+g.Addr(443).String()+"/p", nil)
	req.Host = sni
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

func TestHTTPSTerminatesBySNI(t *testing.T) {
	ca := newCA(t)
	a, b := echoServer(t, "a"), echoServer(t, "b")
	p := policy([]*weftv1.GatewayPort{gport(443,
		httpsListener(t, ca, "foo", "foo.example.com", "a", []string{"foo.example.com"}),
		httpsListener(t, ca, "rest", "", "b", []string{"*.example.com"}, []string{"bar.example.com"}),
	)}, cluster("a", a), cluster("b", b))
	g, _ := newTestGateway(t, p)
	for _, c := range []struct{ sni, cert, body string }{
		{"foo.example.com", "foo.example.com", "a "},
		{"bar.example.com", "bar.example.com", "b "},
		{"baz.example.com", "*.example.com", "b "},
	} {
		resp, body, err := httpsGet(t, g, c.sni, &tls.Config{RootCAs: ca.pool()})
		if err != nil {
			t.Fatalf("%s: %v", c.sni, err)
		}
		if got := resp.TLS.PeerCertificates[0].DNSNames[0]; got != c.cert || !strings.HasPrefix(body, c.body) {
			t.Errorf("%s: cert %s body %q, want %s %q", c.sni, got, body, c.cert, c.body)
		}
		if resp.ProtoMajor != 2 || resp.TLS.NegotiatedProtocol != "h2" {
			t.Errorf("%s: ALPN %q, want h2", c.sni, resp.TLS.NegotiatedProtocol)
		}
	}
}

func clientValidated(t *testing.T, mode weftv1.FrontendValidationMode) (*Gateway, *testCA) {
	ca, clientCA := newCA(t), newCA(t)
	a := echoServer(t, "a")
	l := httpsListener(t, ca, "mtls", "", "a", []string{"secure.example.com"})
	l.ClientValidation = &weftv1.ClientValidation{Mode: mode, CaCertificates: []*weftv1.CACertificate{{Ref: "ConfigMap infra/client-ca", Pem: clientCA.pem}}}
	g, _ := newTestGateway(t, policy([]*weftv1.GatewayPort{gport(443, l)}, cluster("a", a)))
	// the server's CA is the returned one's sibling: tests trust it via InsecureSkipVerify
	return g, clientCA
}

func TestClientValidationAllowValidOnly(t *testing.T) {
	g, clientCA := clientValidated(t, weftv1.FrontendValidationMode_FRONTEND_VALIDATION_MODE_ALLOW_VALID_ONLY)
	_, _, valid := clientCA.issue(t, true, nil)
	_, _, foreign := newCA(t).issue(t, true, nil)
	base := &tls.Config{InsecureSkipVerify: true}
	withCert := func(c tls.Certificate) *tls.Config {
		x := base.Clone()
		x.Certificates = []tls.Certificate{c}
		return x
	}

	if _, body, err := httpsGet(t, g, "secure.example.com", withCert(valid)); err != nil || !strings.HasPrefix(body, "a ") {
		t.Fatalf("valid client certificate: %q, %v", body, err)
	}
	for name, cfg := range map[string]*tls.Config{"no certificate": base, "foreign CA": withCert(foreign)} {
		// TLS 1.3: the client learns of the refusal on its first read
		c, err := tls.Dial("tcp", g.Addr(443).String(), cfgWith(cfg, "secure.example.com"))
		if err == nil {
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			_, err = bufio.NewReader(c).ReadByte()
			c.Close()
		}
		want := "certificate required"
		if name == "foreign CA" {
			want = "unknown certificate authority"
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want the %q alert", name, err, want)
		}
	}
}

func cfgWith(c *tls.Config, sni string) *tls.Config {
	c = c.Clone()
	c.ServerName = sni
	return c
}

func TestClientValidationAllowInsecureFallback(t *testing.T) {
	g, clientCA := clientValidated(t, weftv1.FrontendValidationMode_FRONTEND_VALIDATION_MODE_ALLOW_INSECURE_FALLBACK)
	_, _, valid := clientCA.issue(t, true, nil)
	_, _, foreign := newCA(t).issue(t, true, nil)
	var asked bool
	for name, certs := range map[string][]tls.Certificate{"none": nil, "valid": {valid}, "foreign CA": {foreign}} {
		cfg := &tls.Config{InsecureSkipVerify: true, GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked = true
			if len(certs) == 0 {
				return &tls.Certificate{}, nil
			}
			return &certs[0], nil
		}}
		if _, body, err := httpsGet(t, g, "secure.example.com", cfg); err != nil || !strings.HasPrefix(body, "a ") {
			t.Errorf("%s: %q, %v; want accepted", name, body, err)
		}
	}
	if !asked {
		t.Error("the gateway never asked for a client certificate")
	}
}

// tlsBackend is a TCP echo behind TLS with a certificate for names (and
// uris); requireClient makes it ask for and require a client certificate
// (signed by clientCA), whose first DNS name it answers with.
func tlsBackend(t *testing.T, ca *testCA, names []string, uris []string, clientCA *testCA) (*weftv1.Cluster, *testCA) {
	_, _, kp := ca.issue(t, false, names, uris...)
	cfg := &tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: []string{"http/1.1"}}
	if clientCA != nil {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, clientCA.pool()
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: echoHandler("tls-backend")}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	return cluster("secure", ap), ca
}

func TestBackendTLSOrigination(t *testing.T) {
	ca := newCA(t)
	cl, _ := tlsBackend(t, ca, []string{"backend.example.com"}, []string{"spiffe://example.org/backend"}, nil)
	caRef := []*weftv1.CACertificate{{Ref: "ConfigMap app/ca", Pem: ca.pem}}
	for _, c := range []struct {
		name string
		bt   *weftv1.BackendTLS
		code int
		body string
	}{
		{"hostname", &weftv1.BackendTLS{Policy: "app/btls", Hostname: "backend.example.com", CaCertificates: caRef}, 200, "tls-backend"},
		{"wrong hostname", &weftv1.BackendTLS{Policy: "app/btls", Hostname: "other.example.com", CaCertificates: caRef}, 502, ""},
		{"wrong CA", &weftv1.BackendTLS{Policy: "app/btls", Hostname: "backend.example.com", CaCertificates: []*weftv1.CACertificate{{Ref: "x", Pem: newCA(t).pem}}}, 502, ""},
		{"SAN URI", &weftv1.BackendTLS{Policy: "app/btls", Hostname: "sni.only", CaCertificates: caRef,
			SubjectAltNames: []*weftv1.SubjectAltName{{Value: "spiffe://example.org/backend", Uri: true}}}, 200, "tls-backend"},
		{"SAN DNS wildcard", &weftv1.BackendTLS{Policy: "app/btls", Hostname: "sni.only", CaCertificates: caRef,
			SubjectAltNames: []*weftv1.SubjectAltName{{Value: "*.example.com"}}}, 200, "tls-backend"},
		{"SAN mismatch ignores hostname", &weftv1.BackendTLS{Policy: "app/btls", Hostname: "backend.example.com", CaCertificates: caRef,
			SubjectAltNames: []*weftv1.SubjectAltName{{Value: "other.example.org"}}}, 502, ""},
		{"invalid", &weftv1.BackendTLS{Policy: "app/btls", Invalid: "CA ConfigMap app/ca not found"}, 500, "backend TLS policy app/btls is invalid: CA ConfigMap app/ca not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := policy([]*weftv1.GatewayPort{gport(80, httpListener("web", "", vhost("", httpTableTo("/", be("secure", 1)))))}, cl)
			p.BackendTls = map[string]*weftv1.BackendTLS{"secure": c.bt}
			g, _ := newTestGateway(t, p)
			code, body, _ := get(t, g, 80, "x", "/")
			if code != c.code || !strings.HasPrefix(body, c.body) {
				t.Fatalf("%d %q, want %d %q", code, body, c.code, c.body)
			}
		})
	}
}

func TestBackendTLSPresentsClientCertificate(t *testing.T) {
	ca, clientCA := newCA(t), newCA(t)
	cl, _ := tlsBackend(t, ca, []string{"backend.example.com"}, nil, clientCA)
	certPEM, keyPEM, _ := clientCA.issue(t, true, []string{"gateway.infra"})
	bt := &weftv1.BackendTLS{Policy: "app/btls", Hostname: "backend.example.com", CaCertificates: []*weftv1.CACertificate{{Ref: "ca", Pem: ca.pem}}}
	p := policy([]*weftv1.GatewayPort{gport(80, httpListener("web", "", vhost("", httpTableTo("/", be("secure", 1)))))}, cl)
	p.BackendTls = map[string]*weftv1.BackendTLS{"secure": bt}
	g, _ := newTestGateway(t, p)
	if code, _, _ := get(t, g, 80, "x", "/"); code != 502 {
		t.Fatalf("without a client certificate: %d, want 502", code)
	}
	p.ClientCertificate = &weftv1.Certificate{Secret: "infra/client", CertPem: certPEM, KeyPem: keyPEM}
	if err := g.Apply(p); err != nil {
		t.Fatal(err)
	}
	if code, body, _ := get(t, g, 80, "x", "/"); code != 200 || !strings.HasPrefix(body, "tls-backend") {
		t.Fatalf("with a client certificate: %d %q", code, body)
	}
}

// TestBackendTLSConnectionsArePerPolicy: two Services share the backend's
// endpoints, one with a policy the backend satisfies and one with a
// hostname it does not: a connection verified for the first is never
// reused for the second (as the conformance suite's mismatch tests do).
func TestBackendTLSConnectionsArePerPolicy(t *testing.T) {
	ca := newCA(t)
	good, _ := tlsBackend(t, ca, []string{"backend.example.com"}, nil, nil)
	bad := cluster("mismatch")
	bad.Endpoints = good.Endpoints
	caRef := []*weftv1.CACertificate{{Ref: "ConfigMap app/ca", Pem: ca.pem}}
	p := policy([]*weftv1.GatewayPort{gport(80, httpListener("web", "",
		vhost("good.example", httpTableTo("/", be("secure", 1))),
		vhost("bad.example", httpTableTo("/", be("mismatch", 1)))))}, good, bad)
	p.BackendTls = map[string]*weftv1.BackendTLS{
		"secure":   {Policy: "app/good", Hostname: "backend.example.com", CaCertificates: caRef},
		"mismatch": {Policy: "app/bad", Hostname: "other.example.com", CaCertificates: caRef},
	}
	g, _ := newTestGateway(t, p)
	for i := range 3 {
		if code, body, _ := get(t, g, 80, "good.example", "/"); code != 200 || !strings.HasPrefix(body, "tls-backend") {
			t.Fatalf("round %d, the valid policy: %d %q", i, code, body)
		}
		if code, _, _ := get(t, g, 80, "bad.example", "/"); code != 502 {
			t.Fatalf("round %d, the mismatched policy after a verified connection: %d, want 502", i, code)
		}
	}
}

// TestBackendTLSOriginationHTTP2: a gRPC (HTTP/2) backend behind a
// BackendTLSPolicy is spoken to in h2 over the originated TLS, its
// connection multiplexed; a backend that does not agree to h2 (ALPN) is
// answered 502, never spoken to in HTTP/1.1 as if it were HTTP/2.
func TestBackendTLSOriginationHTTP2(t *testing.T) {
	ca := newCA(t)
	for _, c := range []struct {
		name   string
		protos []string
		code   int
	}{{"h2", []string{"h2", "http/1.1"}, 200}, {"http/1.1 only", []string{"http/1.1"}, 502}} {
		t.Run(c.name, func(t *testing.T) {
			_, _, kp := ca.issue(t, false, []string{"backend.example.com"})
			ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{kp}, NextProtos: c.protos})
			if err != nil {
				t.Fatal(err)
			}
			var conns atomic.Int32
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.Proto)
			}), ConnState: func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			cl := cluster("secure", ln.Addr().(*net.TCPAddr).AddrPort())
			cl.Protocol = weftv1.Protocol_PROTOCOL_GRPC
			p := policy([]*weftv1.GatewayPort{gport(80, httpListener("web", "", vhost("", httpTableTo("/", be("secure", 1)))))}, cl)
			p.BackendTls = map[string]*weftv1.BackendTLS{"secure": {Policy: "app/btls", Hostname: "backend.example.com",
				CaCertificates: []*weftv1.CACertificate{{Ref: "ca", Pem: ca.pem}}}}
			g, _ := newTestGateway(t, p)
			for range 3 {
				code, body, _ := get(t, g, 80, "x", "/")
				if code != c.code || code == 200 && body != "HTTP/2.0" {
					t.Fatalf("%d %q, want %d (HTTP/2.0 at the backend)", code, body, c.code)
				}
			}
			if c.code == 200 && conns.Load() != 1 {
				t.Fatalf("%d connections to the backend for 3 requests, want 1", conns.Load())
			}
		})
	}
}
