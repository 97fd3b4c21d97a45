package proxy_test

import (
	"bufio"
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
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/agent/gateway"
	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/relay"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// TestTunnelGoneBeforeTheAnswer: the destination node's agent goes away
// (an upgrade, a restart) just as a request's CONNECT reaches it, before it
// answers: it closes the tunnel connection, or it sends GOAWAY saying it
// did not take the stream. Nothing reached the pod, so the source sends the
// request again on a new tunnel connection, whatever its method: the
// client gets the pod's answer and the pod sees the request once (before:
// 502 "upstream failed" through the event loops).
func TestTunnelGoneBeforeTheAnswer(t *testing.T) {
	for _, gone := range []string{"close", "goaway"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(gone+"/"+method, func(t *testing.T) {
				e := newEnv(t)
				l, ep := e.pod("web", "web")
				var seen atomic.Int32
				srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					io.Copy(io.Discard, r.Body)
					seen.Add(1)
					io.WriteString(w, "hello")
				})}
				go srv.Serve(l)
				t.Cleanup(func() { srv.Close() })

				// the pod's node is another one, whose agent is the
				// fake below
				ep.Node = "node-b"
				dst := newGoneNode(t, e, spiffeid.RequireFromString(ep.Identity), ep, gone)
				e.pol.NodeTunnels["node-b"] = dst.addr
				e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
				e.service("web", "web", "10.96.0.43", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
				e.apply()

				req, _ := http.NewRequest(method, "http://10.96.0.43/", strings.NewReader("x"))
				resp, err := e.client(e.caller("app"), "10.96.0.43:80").Do(req)
				var got []byte
				if err == nil {
					got, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != 200 || string(got) != "hello" {
					code := 0
					if resp != nil {
						code = resp.StatusCode
					}
					t.Fatalf("%s after the destination's %s: %v %d %q, want 200 hello", method, gone, err, code, got)
				}
				if n := seen.Load(); n != 1 {
					t.Fatalf("the pod saw the request %d times, want 1", n)
				}
				if n := dst.conns.Load(); n != 2 {
					t.Fatalf("%d tunnel connections reached the destination, want 2 (the one gone, the new one)", n)
				}
			})
		}
	}
}

// goneNode is a destination node's tunnel endpoint whose first connection
// goes away at its first CONNECT, unanswered; later connections are served
// by the real tunnel server, splicing to the pod.
type goneNode struct {
	addr  string
	conns atomic.Int32
}

func newGoneNode(t *testing.T, e *env, id spiffeid.ID, ep *weftv1.Endpoint, gone string) *goneNode {
	cfg := tlsconfig.MTLSServerConfig(tunnel.SVIDSource(e.ids, id), tunnel.BundleSource(e.ids), tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("cluster.local")))
	cfg.MinVersion = tls.VersionTLS13
	cfg.NextProtos = []string{"h2"}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &goneNode{addr: l.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted []net.Conn
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range accepted {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			first := n.conns.Add(1) == 1
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if first {
					goAwayAtFirstConnect(c, gone)
					return
				}
				sc, err := tunnel.NewServerConn(c, splice, tunnel.ServerConfig{})
				if err != nil {
					return
				}
				sc.Serve()
			}()
		}
	}()
	return n
}

// goAwayAtFirstConnect speaks HTTP/2 on c until the first stream's HEADERS
// arrive, then closes c, or sends GOAWAY with no stream taken and keeps c
// open, as a draining agent does while other streams finish.
func goAwayAtFirstConnect(c net.Conn, gone string) {
	c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(br, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, br)
	fr.WriteSettings()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			if gone == "close" {
				return
			}
			fr.WriteGoAway(0, http2.ErrCodeNo, nil)
			io.Copy(io.Discard, br) // until the client or the test closes
			return
		}
	}
}

// splice answers a CONNECT by connecting to its authority and copying both
// ways.
func splice(s *tunnel.Stream, authority string, _ http.Header) {
	defer s.Close()
	pod, err := net.Dial("tcp", authority)
	if err != nil {
		s.Respond(http.StatusBadGateway)
		return
	}
	defer pod.Close()
	if s.Respond(http.StatusOK) == nil {
		relay.Splice(s, pod.(*net.TCPConn))
	}
}

// TestAcrossADestinationRestart: a Service's pod is on another node whose
// agent is replaced under load (a rollout): the new agent serves the same
// listening socket, the old one drains. The source must stop sending
// requests into the old agent's tunnel, which that agent announced it is
// leaving (GOAWAY): an h2c connection carried in it takes no new request
// and closes once its requests are answered; a kept HTTP/1.1 stream is
// closed, not reused. No request fails, and the old agent's drain ends
// with its work, before its grace period (before: the h2c connection
// stayed open until the grace period ended and its requests then in
// flight failed with 502; kept HTTP/1.1 streams held the drain too).
//
// Idle: the load stops before the old agent drains; what the source keeps
// open through it (an h2c connection, kept HTTP/1.1 streams) closes at its
// GOAWAY, else the drain would last its grace period.
func TestAcrossADestinationRestart(t *testing.T) {
	for _, src := range []string{"", "gateway/", "gateway/tls/"} {
		for _, h2c := range []bool{true, false} {
			for _, idle := range []bool{false, true} {
				name := src + "http1"
				if h2c {
					name = src + "h2c"
				}
				if idle {
					name += "/idle"
				}
				t.Run(name, func(t *testing.T) { testAcrossADestinationRestart(t, src, h2c, idle) })
			}
		}
	}
}

// src "gateway/": the source is a Gateway's data plane (its own tunnel
// dialer, the Gateway's SVID), not a pod's outbound; "gateway/tls/": the
// Gateway originates TLS to the pod (a BackendTLSPolicy), in HTTP/1.1 or h2.
func testAcrossADestinationRestart(t *testing.T, src string, h2c, idle bool) {
	e := newEnv(t)
	l, ep := e.pod("web", "web")
	proto, vipProto := weftv1.Protocol_PROTOCOL_HTTP, weftv1.Protocol_PROTOCOL_HTTP
	var protos http.Protocols
	protos.SetHTTP1(true)
	if h2c {
		proto, vipProto = weftv1.Protocol_PROTOCOL_H2C, weftv1.Protocol_PROTOCOL_H2C
		protos.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		time.Sleep(5 * time.Millisecond) // requests stay in flight
		io.WriteString(w, "hello")
	})}
	var bt *weftv1.BackendTLS
	if src == "gateway/tls/" {
		var caPEM []byte
		srv.TLSConfig, caPEM = selfSigned(t, "web.example")
		protos.SetHTTP2(true) // over TLS, by ALPN
		bt = &weftv1.BackendTLS{Policy: "web/web-tls", Hostname: "web.example", CaCertificates: []*weftv1.CACertificate{{Ref: "ca", Pem: caPEM}}}
		go srv.ServeTLS(l, "", "")
	} else {
		go srv.Serve(l)
	}
	t.Cleanup(func() { srv.Close() })
	ep.Node = "node-b"
	tl, err := proxy.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.pol.NodeTunnels["node-b"] = tl.Addr().String()
	e.cluster("web/web:80", proto, ep)
	e.service("web", "web", "10.96.0.44", 80, vipProto, "web/web:80")
	e.apply()
	old := startNodeProxy(t, e, "node-b", tl)

	var cp http.Protocols
	if h2c {
		cp.SetUnencryptedHTTP2(true)
	} else {
		cp.SetHTTP1(true)
	}
	tr := &http.Transport{Protocols: &cp}
	url := "http://10.96.0.44/"
	if src != "" {
		url = "http://" + startGatewayTo(t, e, proto, ep, bt) + "/"
	} else {
		caller := e.caller("app")
		tr.DialContext = func(context.Context, string, string) (net.Conn, error) {
			return e.dialErr(caller, "10.96.0.44:80")
		}
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ld := startRequests(8, func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || string(b) != "hello" {
			return fmt.Errorf("%d %q %v", resp.StatusCode, b, err)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	// the rollout: the new agent accepts on the same socket, the old one
	// drains with its grace period
	f, err := tl.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	tl2, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	startNodeProxy(t, e, "node-b", tl2)
	var sent, failed int64
	var errs []string
	if idle {
		sent, failed, errs = ld.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	drained := make(chan error, 1)
	go func() { drained <- old.Shutdown(ctx) }()
	if !idle {
		time.Sleep(300 * time.Millisecond) // the load goes on into the drain
		sent, failed, errs = ld.stop()
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed across the destination's restart: %v", failed, sent, errs)
	}
	if err := <-drained; err != nil {
		t.Errorf("the old agent's drain: %v (the source kept its connection through the old agent open)", err)
	}
	t.Logf("%d requests", sent)
}

// startGatewayTo runs a Gateway whose one HTTP listener routes every
// request to ep (a pod on another node, reached through its tunnel with the
// Gateway's SVID), with TLS to the pod when bt is set, and returns its
// address.
func startGatewayTo(t *testing.T, e *env, proto weftv1.Protocol, ep *weftv1.Endpoint, bt *weftv1.BackendTLS) string {
	t.Helper()
	gwID := "spiffe://cluster.local/ns/infra/sa/gw"
	e.ids.Put(e.ca.MustIssue(spiffeid.RequireFromString(gwID)))
	d := tunnel.NewDialer(tunnel.DialerConfig{Identities: e.ids})
	t.Cleanup(d.Close)
	g, err := gateway.New(gateway.Config{Tunnel: d, Listen: func(uint32) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // the load is over: nothing of the Gateway's is left to wait for
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("the Gateway's drain: %v", err)
		}
	})
	rule := &weftv1.Rule{Route: "infra/web", RouteKind: weftv1.RouteKind_ROUTE_KIND_HTTP, Backends: []*weftv1.BackendRef{{Cluster: "web/web:80", Weight: 1}}}
	table := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP, Rules: []*weftv1.Rule{rule}, Matches: []*weftv1.Match{{Rule: 0,
		Http: &weftv1.HTTPMatch{Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/"}}}}}
	listener := &weftv1.GatewayListener{Name: "http", Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTP,
		VirtualHosts: []*weftv1.VirtualHost{{Tables: []*weftv1.RouteTable{table}}}}
	pol := &weftv1.GatewayPolicy{Namespace: "infra", Name: "gw", TrustDomain: "cluster.local", Identity: gwID,
		Ports:       []*weftv1.GatewayPort{{Port: 80, Listeners: []*weftv1.GatewayListener{listener}}},
		Clusters:    []*weftv1.Cluster{{Name: "web/web:80", Protocol: proto, Endpoints: []*weftv1.Endpoint{ep}}},
		NodeTunnels: map[string]string{"node-b": e.pol.NodeTunnels["node-b"]}}
	if bt != nil {
		pol.BackendTls = map[string]*weftv1.BackendTLS{"web/web:80": bt}
	}
	if err := g.Apply(pol); err != nil {
		t.Fatal(err)
	}
	return g.Addr(80).String()
}

// startNodeProxy serves tunnels on l as node's agent, with e's
// workloads and identities; Shutdown ends it.
func startNodeProxy(t *testing.T, e *env, node string, l net.Listener) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(proxy.Config{Node: node, TrustDomain: e.ca.TD, Lookup: &lookup{m: map[netip.Addr]outbound.Original{}},
		Callers: &callers{m: map[uint64]*weftv1.Workload{}}, Identities: e.ids, Logger: slog.New(&e.panics)})
	if err != nil {
		t.Fatal(err)
	}
	pol := proto.Clone(e.pol).(*weftv1.NodePolicy)
	pol.Node = node
	if err := p.Update(pol); err != nil {
		t.Fatal(err)
	}
	out, err := proxy.Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(out, l) }()
	t.Cleanup(func() {
		p.Close()
		<-served
	})
	return p
}

// selfSigned is a server TLS configuration for name with a self-signed
// certificate, and that certificate in PEM (the CA to verify it with).
func selfSigned(t *testing.T, name string) (*tls.Config, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
