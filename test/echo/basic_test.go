package echo

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/test/syncbuf"
)

func TestParseBasicEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want func(BasicConfig) bool
	}{
		{"defaults", nil, func(c BasicConfig) bool {
			return c.Mode == BasicHTTP && c.HTTPPort == "3000" && c.H2CPort == "3001" && c.HTTPSPort == "8443" &&
				c.TCPPort == "3000" && c.TLSPort == "8443" && c.UDPPort == "8080" && !c.TLS()
		}},
		{"identity", map[string]string{"POD_NAME": "p", "NAMESPACE": "ns", "SERVICE_NAME": "s", "INGRESS_NAME": "i"}, func(c BasicConfig) bool {
			return c.Identity == Identity{Pod: "p", Namespace: "ns", Service: "s", Ingress: "i"}
		}},
		// The HTTP server's key variable is TLS_SERVER_PRIVKEY; the others' is TLS_SERVER_PRIV_KEY.
		{"http tls", map[string]string{"TLS_SERVER_CERT": "/c", "TLS_SERVER_PRIVKEY": "/k", "TLS_CLIENT_CACERTS": "/ca"}, func(c BasicConfig) bool {
			return c.TLS() && c.KeyFile == "/k" && c.ClientCAFile == "/ca"
		}},
		{"http ignores PRIV_KEY", map[string]string{"TLS_SERVER_CERT": "/c", "TLS_SERVER_PRIV_KEY": "/k"}, func(c BasicConfig) bool { return !c.TLS() }},
		{"grpc tls", map[string]string{"GRPC_ECHO_SERVER": "1", "HTTP_PORT": "9000", "TLS_SERVER_CERT": "/c", "TLS_SERVER_PRIV_KEY": "/k", "TLS_CLIENT_CACERTS": "/ca"}, func(c BasicConfig) bool {
			return c.Mode == BasicGRPC && c.HTTPPort == "9000" && c.TLS() && c.ClientCAFile == ""
		}},
		{"grpc ignores PRIVKEY", map[string]string{"GRPC_ECHO_SERVER": "1", "TLS_SERVER_CERT": "/c", "TLS_SERVER_PRIVKEY": "/k"}, func(c BasicConfig) bool { return !c.TLS() }},
		{"tcp reset", map[string]string{"TCP_ECHO_SERVER": "1", "TCP_PORT": "3333", "TCP_MODE": "RESET"}, func(c BasicConfig) bool {
			return c.Mode == BasicTCP && c.TCPPort == "3333" && c.TCPReset
		}},
		{"udp", map[string]string{"UDP_ECHO_SERVER": "1", "UDP_PORT": "9"}, func(c BasicConfig) bool { return c.Mode == BasicUDP && c.UDPPort == "9" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseBasicEnv(func(k string) string { return tc.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(c) {
				t.Errorf("got %+v", c)
			}
		})
	}
	for _, env := range []map[string]string{{"HTTP_PORT": "x"}, {"TCP_ECHO_SERVER": "1", "TLS_PORT": "65536"}, {"UDP_ECHO_SERVER": "1", "UDP_PORT": "-1"}} {
		if _, err := ParseBasicEnv(func(k string) string { return env[k] }); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%v: %v, want ErrBadConfig", env, err)
		}
	}
	// A port the mode does not use is not looked at.
	if _, err := ParseBasicEnv(func(k string) string { return map[string]string{"TCP_PORT": "x"}[k] }); err != nil {
		t.Errorf("HTTP mode with TCP_PORT=x: %v", err)
	}
}

var basicID = Identity{Pod: "infra-backend-v1-6d4c9", Namespace: "gateway-conformance-infra", Service: "infra-backend-v1", Ingress: "weft"}

// startBasic runs cfg's servers on loopback and returns their addresses by name.
func startBasic(t *testing.T, cfg BasicConfig) map[string]string {
	t.Helper()
	cfg.Host = "127.0.0.1"
	for _, p := range []*string{&cfg.HTTPPort, &cfg.H2CPort, &cfg.HTTPSPort, &cfg.TCPPort, &cfg.TLSPort, &cfg.UDPPort} {
		if *p == "" {
			*p = "0"
		}
	}
	var (
		servers []server
		err     error
	)
	switch cfg.Mode {
	case BasicHTTP:
		servers, err = basicHTTPServers(cfg)
	case BasicGRPC:
		servers, err = basicGRPCServers(cfg)
	case BasicTCP:
		servers, err = basicTCPServers(cfg)
	case BasicUDP:
		servers, err = basicUDPServers(cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServers(ctx, servers) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("servers: %v", err)
		}
	})
	addrs := map[string]string{}
	for _, s := range servers {
		addrs[s.name] = s.addr
	}
	return addrs
}

func getBasic(t *testing.T, c *http.Client, url string, hdr map[string]string) (*http.Response, BasicAnswer) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var a BasicAnswer
	if resp.Header.Get("Content-Type") == "application/json" {
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("decode %q: %v", body, err)
		}
	}
	return resp, a
}

func TestBasicHTTPEcho(t *testing.T) {
	var log syncbuf.Buffer
	addrs := startBasic(t, BasicConfig{Mode: BasicHTTP, Identity: basicID, HTTPPort: "0", Requests: &log})
	resp, a := getBasic(t, http.DefaultClient, "http://"+addrs["http"]+"/a//b?x=1&y=2", map[string]string{
		"X-Echo-Set-Header": "X-Set:one, x-lower:two,X-Set:three",
		"X-Custom":          "v",
	})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("answer %d %v", resp.StatusCode, resp.Header)
	}
	want := BasicAnswer{Path: "/a//b?x=1&y=2", Host: addrs["http"], Method: "GET", Proto: "HTTP/1.1", HTTPPort: "0",
		Namespace: basicID.Namespace, Ingress: basicID.Ingress, Service: basicID.Service, Pod: basicID.Pod}
	got := a
	got.Headers = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("answer %+v, want %+v", got, want)
	}
	if v := a.Headers["X-Custom"]; !slices.Equal(v, []string{"v"}) {
		t.Errorf("X-Custom echoed as %q", v)
	}
	// Names keep their case; a repeated name's values are joined.
	if v := resp.Header["X-Set"]; !slices.Equal(v, []string{"one,three"}) {
		t.Errorf("X-Set = %q, want [one,three]", v)
	}
	// The client canonicalises names: look at the wire for the case.
	raw, err := net.Dial("tcp", addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_, _ = io.WriteString(raw, "GET / HTTP/1.1\r\nHost: h\r\nX-Echo-Set-Header: x-lower:two\r\nConnection: close\r\n\r\n")
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(raw); !strings.Contains(string(b), "\r\nx-lower: two\r\n") {
		t.Errorf("answer lacks the header x-lower as asked:\n%s", b)
	}
	if !strings.Contains(log.String(), "Echoing back request made to /a//b?x=1&y=2 to client (127.0.0.1:") {
		t.Errorf("request log %q lacks the line the mirror tests look for", log.String())
	}
}

func TestBasicHTTPPaths(t *testing.T) {
	addrs := startBasic(t, BasicConfig{Mode: BasicHTTP, Identity: basicID})
	base := "http://" + addrs["http"]
	noKeepAlive := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for _, tc := range []struct {
		path string
		code int
		body string // "" for the JSON echo
	}{
		{"/health", 200, "OK"},
		{"/status/503", 503, "-"},
		{"/status/204", 204, "-"},
		{"/status/503?x=1", 400, "-"},
		{"/status/5031", 400, "-"},
		{"/delay?delay=10ms", 200, ""},
		{"/delay?delay=bogus", 500, `{"message":"time: invalid duration \"bogus\""}`},
		{"/retry/x", 400, "uuid is required"},
		{"/retry/x?uuid=a", 400, "succeedAfter is required"},
		{"/retry/x?uuid=b&succeedAfter=2&responseCode=503", 503, "-"},
		{"/retry/x?uuid=b&succeedAfter=2&responseCode=503&delayRetry=5ms", 503, "-"},
		{"/retry/x?uuid=b&succeedAfter=2&responseCode=503", 200, ""},
		{"/retry/x?uuid=b&succeedAfter=2&responseCode=503", 200, ""},
	} {
		resp, err := noKeepAlive.Get(base + tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.code)
		}
		switch tc.body {
		case "-":
			if len(body) != 0 {
				t.Errorf("%s: body %q, want none", tc.path, body)
			}
		case "":
			var a BasicAnswer
			if err := json.Unmarshal(body, &a); err != nil || a.Pod != basicID.Pod {
				t.Errorf("%s: not an echo: %q", tc.path, body)
			}
		default:
			if string(body) != tc.body {
				t.Errorf("%s: body %q, want %q", tc.path, body, tc.body)
			}
		}
	}
	// Without responseCode a failing attempt resets the connection.
	for i, wantErr := range []bool{true, false} {
		resp, err := noKeepAlive.Get(base + "/retry/r?uuid=c&succeedAfter=1")
		if (err != nil) != wantErr {
			t.Errorf("attempt %d: err %v, want error %v", i+1, err, wantErr)
		}
		if err == nil {
			resp.Body.Close()
		}
	}
}

// testPKI is a throwaway CA with a server certificate for abc.example.com and a
// client certificate, written as the files the suite's manifests mount.
type testPKI struct {
	caPEM, serverCertPEM, serverKeyPEM []byte
	client                             tls.Certificate
	clientPEM                          string
	caFile, certFile, keyFile          string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	}
	p := testPKI{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	p.serverCertPEM, p.serverKeyPEM = issue(2, "abc.example.com", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := issue(3, "client.example.com", x509.ExtKeyUsageClientAuth)
	p.clientPEM = string(clientCert)
	if p.client, err = tls.X509KeyPair(clientCert, clientKey); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p.caFile, p.certFile, p.keyFile = filepath.Join(dir, "ca"), filepath.Join(dir, "crt"), filepath.Join(dir, "key")
	for f, b := range map[string][]byte{p.caFile: p.caPEM, p.certFile: p.serverCertPEM, p.keyFile: p.serverKeyPEM} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p testPKI) clientTLS(sni string, alpn ...string) *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	return &tls.Config{RootCAs: pool, ServerName: sni, NextProtos: alpn}
}
