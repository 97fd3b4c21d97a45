package gateway

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func TestApplyRefusesInvalidPolicyKeepingLastGood(t *testing.T) {
	a := echoServer(t, "a")
	good := policy([]*weftv1.GatewayPort{gport(80, httpListener("web", "", vhost("", httpTableTo("/", be("a", 1)))))}, cluster("a", a))
	g, _ := newTestGateway(t, good)
	before := g.Snapshot()
	ca := newCA(t)
	certPEM, _, _ := ca.issue(t, false, []string{"x.example"})
	_, otherKey, _ := newCA(t).issue(t, false, []string{"x.example"})
	badRegex := httpTableTo("/", be("a", 1))
	badRegex.Matches[0].Http.Path = &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_REGEX, Value: "(?:.?){1000}"}
	cases := map[string]struct {
		p    *weftv1.GatewayPolicy
		want error
	}{
		"repeated port": {policy([]*weftv1.GatewayPort{gport(80, httpListener("a", "")), gport(80, httpListener("b", ""))}), weftv1.ErrInvalidGateway},
		"port zero":     {policy([]*weftv1.GatewayPort{gport(0, httpListener("a", ""))}), weftv1.ErrInvalidGateway},
		"http and tcp share a port": {policy([]*weftv1.GatewayPort{gport(80, httpListener("a", ""),
			&weftv1.GatewayListener{Name: "t", Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_TCP})}), weftv1.ErrInvalidListener},
		"https without certificate": {policy([]*weftv1.GatewayPort{gport(443, &weftv1.GatewayListener{Name: "s",
			Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTPS, TlsMode: weftv1.TLSMode_TLS_MODE_TERMINATE})}), weftv1.ErrInvalidListener},
		"key does not match": {policy([]*weftv1.GatewayPort{gport(443, &weftv1.GatewayListener{Name: "s",
			Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTPS, TlsMode: weftv1.TLSMode_TLS_MODE_TERMINATE,
			Certificates: []*weftv1.Certificate{{Secret: "infra/x", CertPem: certPEM, KeyPem: otherKey}}})}), weftv1.ErrInvalidCertificate},
		"tcp table on http listener": {policy([]*weftv1.GatewayPort{gport(80, httpListener("a", "", vhost("", tcpTableTo(be("a", 1)))))}), weftv1.ErrInvalidListener},
		"regex too large":            {policy([]*weftv1.GatewayPort{gport(80, httpListener("a", "", vhost("", badRegex)))}), weftv1.ErrRegexTooLarge},
		"bad listener hostname":      {policy([]*weftv1.GatewayPort{gport(80, httpListener("a", "bad host"))}), weftv1.ErrInvalidHostname},
		"bad client validation CA": {policy([]*weftv1.GatewayPort{gport(443, &weftv1.GatewayListener{Name: "s",
			Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTPS, TlsMode: weftv1.TLSMode_TLS_MODE_TERMINATE,
			Certificates:     []*weftv1.Certificate{{CertPem: certPEM, KeyPem: otherKey}},
			ClientValidation: &weftv1.ClientValidation{Mode: weftv1.FrontendValidationMode_FRONTEND_VALIDATION_MODE_ALLOW_VALID_ONLY, CaCertificates: []*weftv1.CACertificate{{Ref: "cm", Pem: []byte("nope")}}}})}), weftv1.ErrInvalidCertificate},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			err := g.Apply(c.p)
			if !errors.Is(err, c.want) || !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("Apply = %v, want %v", err, c.want)
			}
			if g.Snapshot() != before {
				t.Fatal("snapshot changed after a refused policy")
			}
			if code, body, _ := get(t, g, 80, "any", "/"); code != 200 || !strings.HasPrefix(body, "a ") {
				t.Fatalf("last good policy no longer serves: %d %q", code, body)
			}
		})
	}
}

func TestApplyOpensAndClosesPortsKeepingConnections(t *testing.T) {
	a := echoServer(t, "a")
	l := func(name string) *weftv1.GatewayListener {
		return httpListener(name, "", vhost("", httpTableTo("/", be("a", 1))))
	}
	g, _ := newTestGateway(t, policy([]*weftv1.GatewayPort{gport(80, l("p80")), gport(81, l("p81"))}, cluster("a", a)))
	if !g.Ready() {
		t.Fatal("not ready after the first policy")
	}
	addr81 := g.Addr(81).String()
	// a keep-alive connection on port 80, open across the change
	c, err := net.Dial("tcp", g.Addr(80).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	roundTrip := func() int {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatalf("write on the kept connection: %v", err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("read on the kept connection: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := roundTrip(); code != 200 {
		t.Fatalf("status %d", code)
	}
	if err := g.Apply(policy([]*weftv1.GatewayPort{gport(80, l("p80")), gport(82, l("p82"))}, cluster("a", a))); err != nil {
		t.Fatal(err)
	}
	if code := roundTrip(); code != 200 {
		t.Fatalf("kept connection on the unchanged port: status %d", code)
	}
	if code, _, _ := get(t, g, 82, "x", "/"); code != 200 {
		t.Fatalf("new port: status %d", code)
	}
	if g.Addr(81) != nil {
		t.Fatal("port 81 still listed")
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		c81, err := net.DialTimeout("tcp", addr81, time.Second)
		if err != nil {
			break
		}
		c81.Close()
		if time.Now().After(deadline) {
			t.Fatal("dropped port 81 still accepts")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestApplyIsAllOrNothingWhenAPortCannotOpen(t *testing.T) {
	a := echoServer(t, "a")
	l := func(name string) *weftv1.GatewayListener {
		return httpListener(name, "", vhost("", httpTableTo("/", be("a", 1))))
	}
	g, tl := newTestGateway(t, policy([]*weftv1.GatewayPort{gport(80, l("p80"))}, cluster("a", a)))
	tl.fail[91] = true
	err := g.Apply(policy([]*weftv1.GatewayPort{gport(80, l("p80")), gport(90, l("p90")), gport(91, l("p91"))}, cluster("a", a)))
	if err == nil || !strings.Contains(err.Error(), "port 91") {
		t.Fatalf("Apply = %v, want a listen error naming port 91", err)
	}
	if g.Addr(90) != nil || len(g.Snapshot().Ports) != 1 {
		t.Fatal("a refused policy left ports open")
	}
}
