package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/api/mesh"
)

// The Ingress-to-Gateway story, from the host as a client outside the
// cluster: one Gateway of class weft (testdata/gateway/gateway.yaml) in
// namespace ingress, routes from faces and shop attached through a
// namespace selector, two TCP ports for databases, HTTPS termination,
// client certificates, TLS passthrough and a BackendTLSPolicy.

// edge is the Gateway under test once GatewayProgrammed ran.
var edge struct {
	addr string // its address (the lab's load balancer)
	pki  *edgePKI
}

type edgePKI struct {
	ca, otherCA *testCA
	client      tls.Certificate // signed by ca: accepted on :8443
	stranger    tls.Certificate // signed by otherCA: refused on :8443
}

// testGatewayProgrammed applies the cast and the Gateway and waits until
// the Gateway is Programmed with an address and every listener has its
// routes.
func testGatewayProgrammed(t *testing.T, e *env) {
	ca, other := newTestCA(t, "weft e2e CA"), newTestCA(t, "someone else's CA")
	edge.pki = &edgePKI{ca: ca, otherCA: other,
		client: ca.issue(t, "frontend client", nil, true), stranger: other.issue(t, "stranger", nil, true)}
	e.kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join("testdata", "gateway", "apps.yaml"))
	e.kubectl("label", "--overwrite", "namespace", "faces", "edge-routes=allowed")
	edgeCert := ca.issue(t, "edge", []string{"*.example.com", "mtls.example.com"}, false)
	secure := ca.issue(t, "secure", []string{"secure.example.com", "secure.shop.svc"}, false)
	applyYAML(t, tlsSecret("ingress", "edge-cert", edgeCert)+"---\n"+tlsSecret("shop", "secure-cert", secure)+"---\n"+
		caConfigMap("ingress", "client-ca", ca.pem)+"---\n"+caConfigMap("shop", "secure-ca", ca.pem))
	e.kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join("testdata", "gateway", "gateway.yaml"))
	for _, d := range []string{"shop/secure", "data/mssql", "data/cache"} {
		ns, name, _ := strings.Cut(d, "/")
		e.kubectl("-n", ns, "rollout", "status", "deployment/"+name, "--timeout=180s")
	}
	e.eventually(3*time.Minute, "Gateway ingress/edge Programmed with an address", func() string {
		st := e.gatewayStatus("ingress", "edge")
		if c := st.condition("Programmed"); c.Status != "True" || len(st.Addresses) == 0 {
			return fmt.Sprintf("Programmed=%s (%s) %s; addresses %v", c.Status, c.Reason, c.Message, st.Addresses)
		}
		edge.addr = st.Addresses[0].Value
		want := map[string]int32{"http": 3, "https": 2, "mtls": 1, "mtls-optional": 1, "passthrough": 1, "sql": 1, "cache": 1}
		for _, l := range st.Listeners {
			if l.AttachedRoutes != want[l.Name] {
				return fmt.Sprintf("listener %s has %d routes, want %d: %+v", l.Name, l.AttachedRoutes, want[l.Name], l.Conditions)
			}
		}
		return ""
	})
	t.Logf("Gateway ingress/edge programmed on %s", edge.addr)
}

// testGatewayHostnameRoute: the ingress-like route sends faces.example.com
// to color, and a host no route names gets 404.
func testGatewayHostnameRoute(t *testing.T, e *env) {
	needEdge(t)
	c := edgeClient(nil)
	e.eventually(30*time.Second, "faces.example.com served", func() string {
		if a, err := edgeGet(c, "http://"+edge.addr+"/", "faces.example.com", nil); err != nil || a.status != 200 || !strings.HasPrefix(a.Pod, "color-") {
			return fmt.Sprintf("%+v %v", a, err)
		}
		return ""
	})
	v1, v2, failed := edgeTally(c, "http://"+edge.addr+"/", "faces.example.com", nil, 200)
	if failed != 0 || v1 != 200 || v2 != 0 {
		t.Errorf("faces.example.com: v1=%d v2=%d failed=%d, want all 200 on color", v1, v2, failed)
	}
	if a, err := edgeGet(c, "http://"+edge.addr+"/", "nobody.example.org", nil); err != nil || a.status != http.StatusNotFound {
		t.Errorf("a host no route names: %+v %v, want 404", a, err)
	}
}

// testGatewaySplit: split.example.com is 50/50 between color and color2.
func testGatewaySplit(t *testing.T, e *env) {
	needEdge(t)
	v1, v2, failed := edgeTally(edgeClient(nil), "http://"+edge.addr+"/", "split.example.com", nil, 1000)
	if failed != 0 {
		t.Errorf("%d of 1000 requests failed", failed)
	}
	splitWithin(t, v1, v2, 50, 5)
}

// testGatewayHeaderCanary: "traffic: test" goes to color2, the rest to color.
func testGatewayHeaderCanary(t *testing.T, e *env) {
	needEdge(t)
	c := edgeClient(nil)
	wv1, wv2, wf := edgeTally(c, "http://"+edge.addr+"/", "canary.example.com", http.Header{"Traffic": {"test"}}, 200)
	v1, v2, f := edgeTally(c, "http://"+edge.addr+"/", "canary.example.com", nil, 200)
	if wf != 0 || f != 0 || wv1 != 0 || wv2 != 200 || v1 != 200 || v2 != 0 {
		t.Errorf("with the header v1=%d v2=%d failed=%d (want all v2); without v1=%d v2=%d failed=%d (want all v1)", wv1, wv2, wf, v1, v2, f)
	}
}

// testGatewayBlueGreen flips split.example.com between all-color and
// all-color2 five times while the host keeps sending: zero failures.
func testGatewayBlueGreen(t *testing.T, e *env) {
	needEdge(t)
	route := func(w1, w2 int) string {
		return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: faces}
spec:
  parentRefs: [{name: edge, namespace: ingress, sectionName: http}]
  hostnames: [split.example.com]
  rules: [{backendRefs: [{name: color, port: 80, weight: %d}, {name: color2, port: 80, weight: %d}]}]
`, w1, w2)
	}
	var sent, failed atomic.Int64
	var lastBad atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 { // four keep-alive clients, as browsers behind one edge
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := edgeClient(nil)
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, err := edgeGet(c, "http://"+edge.addr+"/", "split.example.com", nil)
				sent.Add(1)
				if err != nil || a.status != 200 {
					failed.Add(1)
					lastBad.Store(fmt.Sprintf("%+v %v", a, err))
				}
			}
		}()
	}
	c := edgeClient(nil)
	for i := range 5 {
		for _, w := range [][2]int{{0, 100}, {100, 0}} {
			applyYAML(t, route(w[0], w[1]))
			e.eventually(30*time.Second, fmt.Sprintf("flip %d: weights %v land", i, w), func() string {
				v1, v2, _ := edgeTally(c, "http://"+edge.addr+"/", "split.example.com", nil, 20)
				if (w[0] == 0 && v1 != 0) || (w[1] == 0 && v2 != 0) {
					return fmt.Sprintf("v1=%d v2=%d", v1, v2)
				}
				return ""
			})
		}
	}
	close(stop)
	wg.Wait()
	applyYAML(t, route(50, 50))
	t.Logf("blue/green through the Gateway: 10 flips, %d requests from the host, %d failed", sent.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during the flips; last: %v", failed.Load(), sent.Load(), lastBad.Load())
	}
}

// testGatewayTCP: ports 1433 and 6379 each reach their TCP service (routes
// in the Gateway's namespace, backends in data through a ReferenceGrant).
func testGatewayTCP(t *testing.T, e *env) {
	needEdge(t)
	for port, prefix := range map[string]string{"1433": "mssql-", "6379": "cache-"} {
		e.eventually(30*time.Second, "TCP :"+port, func() string {
			pod, err := tcpTest(net.JoinHostPort(edge.addr, port))
			if err != nil || !strings.HasPrefix(pod, prefix) {
				return fmt.Sprintf("answered by %q, %v", pod, err)
			}
			return ""
		})
		for i := range 20 {
			if pod, err := tcpTest(net.JoinHostPort(edge.addr, port)); err != nil || !strings.HasPrefix(pod, prefix) {
				t.Errorf("TCP :%s connection %d: %q %v", port, i, pod, err)
			}
		}
	}
}

// testGatewayNamespaces: routes from faces and shop (selected by label)
// are attached; rogue's is refused with NotAllowedByListeners.
func testGatewayNamespaces(t *testing.T, e *env) {
	needEdge(t)
	for _, r := range []string{"faces/faces-in", "faces/split", "shop/api", "ingress/sql"} {
		ns, name, _ := strings.Cut(r, "/")
		kind := "httproute"
		if name == "sql" {
			kind = "tcproute"
		}
		e.eventually(30*time.Second, r+" accepted", func() string {
			if c := e.gatewayRouteCondition(kind, ns, name, "Accepted"); c.Status != "True" {
				return fmt.Sprintf("%+v", c)
			}
			return ""
		})
	}
	e.eventually(30*time.Second, "rogue's route refused", func() string {
		c := e.gatewayRouteCondition("httproute", "rogue", "hijack", "Accepted")
		if c.Status != "False" || c.Reason != "NotAllowedByListeners" {
			return fmt.Sprintf("%+v", c)
		}
		t.Logf("rogue/hijack: Accepted=False NotAllowedByListeners: %s", c.Message)
		return ""
	})
	// and faces.example.com (which rogue also claims) still goes to color
	if a, err := edgeGet(edgeClient(nil), "http://"+edge.addr+"/", "faces.example.com", nil); err != nil || !strings.HasPrefix(a.Pod, "color-") {
		t.Errorf("faces.example.com after rogue's claim: %+v %v", a, err)
	}
}

// testGatewayHTTPS: port 443 terminates TLS with the Secret's certificate
// (verified against the test CA) and routes by hostname.
func testGatewayHTTPS(t *testing.T, e *env) {
	needEdge(t)
	c := edgeClient(&tls.Config{RootCAs: edge.pki.ca.pool(), ServerName: "faces.example.com"})
	e.eventually(30*time.Second, "HTTPS faces.example.com", func() string {
		a, err := edgeGet(c, "https://"+edge.addr+"/", "faces.example.com", nil)
		if err != nil || a.status != 200 || !strings.HasPrefix(a.Pod, "color-") {
			return fmt.Sprintf("%+v %v", a, err)
		}
		return ""
	})
	conn, err := tls.Dial("tcp", net.JoinHostPort(edge.addr, "443"), &tls.Config{RootCAs: edge.pki.ca.pool(), ServerName: "faces.example.com"})
	if err != nil {
		t.Fatalf("TLS to :443: %v", err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if leaf.Subject.CommonName != "edge" {
		t.Errorf(":443 served %q, want the edge-cert Secret's certificate", leaf.Subject.CommonName)
	}
}

// testGatewayPassthrough: port 6443 passes TLS through by SNI: the client
// sees the backend's own certificate, not the Gateway's.
func testGatewayPassthrough(t *testing.T, e *env) {
	needEdge(t)
	cfg := &tls.Config{RootCAs: edge.pki.ca.pool(), ServerName: "secure.example.com"}
	// a kept connection passes through the Gateway as one TCP connection
	// to the pod, which an agent's drain would rightly wait for: none is
	// left open for the steps that restart agents
	c := edgeClient(cfg)
	defer c.CloseIdleConnections()
	var a answer
	e.eventually(30*time.Second, "TLS passthrough to secure", func() string {
		var err error
		a, err = edgeGet(c, "https://"+edge.addr+":6443/", "secure.example.com", nil)
		if err != nil || a.status != 200 || !strings.HasPrefix(a.Pod, "secure-") {
			return fmt.Sprintf("%+v %v", a, err)
		}
		return ""
	})
	conn, err := tls.Dial("tcp", net.JoinHostPort(edge.addr, "6443"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	if leaf.Subject.CommonName != "secure" {
		t.Errorf(":6443 served %q, want the backend's own certificate (secure)", leaf.Subject.CommonName)
	}
	if a.TLS == nil || a.TLS.ServerName != "secure.example.com" {
		t.Errorf("the backend saw TLS %+v, want the client's SNI secure.example.com", a.TLS)
	}
}

// testGatewayClientCertificates: :8443 (AllowValidOnly) refuses a client
// without a certificate or with one from another CA and serves one with a
// valid certificate; :9443 (AllowInsecureFallback) serves both.
func testGatewayClientCertificates(t *testing.T, e *env) {
	needEdge(t)
	p := edge.pki
	try := func(port string, cert *tls.Certificate) error {
		cfg := &tls.Config{RootCAs: p.ca.pool(), ServerName: "mtls.example.com"}
		if cert != nil { // sent even when the server asks for other CAs
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		a, err := edgeGet(edgeClient(cfg), "https://"+edge.addr+":"+port+"/", "mtls.example.com", nil)
		if err == nil && (a.status != 200 || !strings.HasPrefix(a.Pod, "color-")) {
			err = fmt.Errorf("answer %+v", a)
		}
		return err
	}
	e.eventually(30*time.Second, ":8443 serves a valid client certificate", func() string {
		if err := try("8443", &p.client); err != nil {
			return err.Error()
		}
		return ""
	})
	if err := try("8443", nil); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf(":8443 without a client certificate: %v, want a TLS certificate failure", err)
	} else {
		t.Logf(":8443 without a client certificate: %v", err)
	}
	if err := try("8443", &p.stranger); err == nil || strings.Contains(err.Error(), "certificate required") {
		t.Errorf(":8443 with a client certificate of another CA: %v, want it refused as a bad certificate", err)
	} else {
		t.Logf(":8443 with another CA's certificate: %v", err)
	}
	for name, cert := range map[string]*tls.Certificate{"none": nil, "valid": &p.client} {
		if err := try("9443", cert); err != nil {
			t.Errorf(":9443 (AllowInsecureFallback) with %s client certificate: %v", name, err)
		}
	}
}

// testGatewayBackendTLS: api.example.com goes to secure over TLS the
// Gateway originates, verified by the BackendTLSPolicy (CA from a
// ConfigMap, hostname secure.shop.svc as SNI and SAN).
func testGatewayBackendTLS(t *testing.T, e *env) {
	needEdge(t)
	c := edgeClient(&tls.Config{RootCAs: edge.pki.ca.pool(), ServerName: "api.example.com"})
	var a answer
	e.eventually(30*time.Second, "api.example.com over BackendTLS", func() string {
		var err error
		a, err = edgeGet(c, "https://"+edge.addr+"/", "api.example.com", nil)
		if err != nil || a.status != 200 || !strings.HasPrefix(a.Pod, "secure-") {
			return fmt.Sprintf("%+v %v", a, err)
		}
		return ""
	})
	if a.TLS == nil || a.TLS.ServerName != "secure.shop.svc" {
		t.Errorf("the backend saw TLS %+v, want TLS from the Gateway with SNI secure.shop.svc", a.TLS)
	}
	e.eventually(30*time.Second, "BackendTLSPolicy accepted", func() string {
		out := e.kubectl("-n", "shop", "get", "backendtlspolicy", "secure", "-o", "jsonpath={.status.ancestors[*].conditions[?(@.type==\"Accepted\")].status}")
		if !strings.Contains(out, "True") {
			return "Accepted: " + out
		}
		return ""
	})
}

// testGatewayIntoTheMesh: requests through the Gateway reach color pods on
// both nodes, and between the nodes only Weft's tunnel carries them: a
// capture on the fabric (the client's own leg to the Gateway, port 80,
// left out) sees tunnel packets and no plaintext HTTP.
func testGatewayIntoTheMesh(t *testing.T, e *env) {
	needEdge(t)
	gwNode := strings.TrimSpace(e.kubectl("-n", "ingress", "get", "pod", "-l", mesh.LabelGateway, "-o", "jsonpath={.items[0].spec.nodeName}"))
	nodes := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(e.kubectl("-n", "faces", "get", "pod", "-l", "app=color",
		"-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}`)), "\n") {
		if pod, node, ok := strings.Cut(line, " "); ok {
			nodes[pod] = node
		}
	}
	capture := startCapture(t, "tcp and not port 80")
	c := edgeClient(nil)
	remote, failed := 0, 0
	for range 200 {
		a, err := edgeGet(c, "http://"+edge.addr+"/", "faces.example.com", nil)
		if err != nil || a.status != 200 {
			failed++
			continue
		}
		if n := nodes[a.Pod]; n != "" && n != gwNode {
			remote++
		}
	}
	seen := capture.stop()
	t.Logf("gateway on %s; 200 requests: %d answered on the other node, %d failed; fabric: %d packets, %d of the tunnel, %d plaintext",
		gwNode, remote, failed, seen.packets, seen.tunnelPackets, len(seen.plaintext))
	if failed != 0 || remote == 0 {
		t.Errorf("%d failed, %d answered on the other node (want 0 failed and some on the other node)", failed, remote)
	}
	if seen.tunnelPackets == 0 {
		t.Errorf("no tunnel packets on the fabric")
	}
	if len(seen.plaintext) > 0 {
		t.Errorf("plaintext HTTP between the nodes: %q", seen.plaintext[:min(3, len(seen.plaintext))])
	}
}

func needEdge(t *testing.T) {
	t.Helper()
	if edge.addr == "" {
		t.Skip("the Gateway is not programmed (GatewayProgrammed failed)")
	}
}

// answer is what the echo apps answer (both shapes name the pod).
type answer struct {
	status int
	Pod    string `json:"pod"`
	TLS    *struct {
		ServerName string `json:"serverName"`
	} `json:"tls"`
}

// edgeClient is a client that dials the Gateway's address whatever the URL
// says (a client that resolved the hostname to the load balancer).
func edgeClient(cfg *tls.Config) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext:     d.DialContext,
		TLSClientConfig: cfg,
		MaxIdleConns:    4, MaxIdleConnsPerHost: 4,
		// a TLS failure is the answer under test: never retried elsewhere
		ForceAttemptHTTP2: false,
	}}
}

func edgeGet(c *http.Client, url, host string, h http.Header) (answer, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return answer{}, err
	}
	req.Host = host
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode}
	if err != nil {
		return a, err
	}
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, &a); err != nil {
			return a, fmt.Errorf("answer %q: %w", b, err)
		}
	}
	return a, nil
}

// edgeTally sends n requests and counts answers by color version.
func edgeTally(c *http.Client, url, host string, h http.Header, n int) (v1, v2, failed int) {
	for range n {
		a, err := edgeGet(c, url, host, h)
		switch {
		case err != nil || a.status != 200:
			failed++
		case strings.HasPrefix(a.Pod, "color2-"):
			v2++
		case strings.HasPrefix(a.Pod, "color-"):
			v1++
		default:
			failed++
		}
	}
	return v1, v2, failed
}

// tcpTest speaks echo-basic's TCP protocol: the welcome line, then TEST
// answers a JSON line naming the pod.
func tcpTest(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if _, err := r.ReadString('\n'); err != nil {
		return "", fmt.Errorf("welcome: %w", err)
	}
	if _, err := io.WriteString(c, "TEST\n"); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("TEST: %w", err)
	}
	var a struct {
		Pod string `json:"pod"`
	}
	if err := json.Unmarshal([]byte(line), &a); err != nil {
		return "", fmt.Errorf("TEST answer %q: %w", line, err)
	}
	return a.Pod, nil
}

// gatewayStatus is the part of a Gateway's status the steps read.
type gwStatus struct {
	Addresses []struct {
		Value string `json:"value"`
	} `json:"addresses"`
	Conditions []cond `json:"conditions"`
	Listeners  []struct {
		Name           string `json:"name"`
		AttachedRoutes int32  `json:"attachedRoutes"`
		Conditions     []cond `json:"conditions"`
	} `json:"listeners"`
}

type cond struct {
	Type, Status, Reason, Message string
}

func (s gwStatus) condition(typ string) cond {
	for _, c := range s.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return cond{Type: typ}
}

func (e *env) gatewayStatus(ns, name string) gwStatus {
	e.t.Helper()
	var obj struct {
		Status gwStatus `json:"status"`
	}
	if err := json.Unmarshal([]byte(e.kubectl("-n", ns, "get", "gateway", name, "-o", "json")), &obj); err != nil {
		e.t.Fatal(err)
	}
	return obj.Status
}

// gatewayRouteCondition is one condition of the route's parent status
// written by Weft's gateway controller.
func (e *env) gatewayRouteCondition(kind, ns, name, typ string) cond {
	e.t.Helper()
	var obj struct {
		Status struct {
			Parents []struct {
				ControllerName string `json:"controllerName"`
				Conditions     []cond `json:"conditions"`
			} `json:"parents"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(e.kubectl("-n", ns, "get", kind, name, "-o", "json")), &obj); err != nil {
		e.t.Fatal(err)
	}
	for _, p := range obj.Status.Parents {
		if p.ControllerName != mesh.GatewayControllerName {
			continue
		}
		for _, c := range p.Conditions {
			if c.Type == typ {
				return c
			}
		}
	}
	return cond{Type: typ, Message: "no parent status from " + mesh.GatewayControllerName}
}

// testCA is a throwaway CA for the steps' certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial atomic.Int64

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// issue signs a server (DNS names) or client certificate.
func (ca *testCA) issue(t *testing.T, cn string, dns []string, client bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageServerAuth
	if client {
		usage = x509.ExtKeyUsageClientAuth
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func tlsSecret(ns, name string, c tls.Certificate) string {
	kd, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	b64 := func(typ string, der []byte) string {
		return base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	}
	return fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: %s\n  tls.key: %s\n",
		name, ns, b64("CERTIFICATE", c.Certificate[0]), b64("PRIVATE KEY", kd))
}

func caConfigMap(ns, name string, caPEM []byte) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s, namespace: %s}\ndata:\n  ca.crt: |\n    %s\n",
		name, ns, strings.ReplaceAll(strings.TrimSpace(string(caPEM)), "\n", "\n    "))
}

// testGatewayDeletion: deleting the Gateway removes everything provisioned
// for it (owned by the Gateway: the garbage collector deletes it) and its
// address goes back to the load balancer's pool.
func testGatewayDeletion(t *testing.T, e *env) {
	needEdge(t)
	sel := "gateway.networking.k8s.io/gateway-name=edge"
	kinds := "deployment,service,serviceaccount,configmap,pod"
	if out := strings.TrimSpace(e.kubectl("-n", "ingress", "get", kinds, "-l", sel, "-o", "name")); out == "" {
		t.Fatalf("nothing provisioned for ingress/edge carries %s", sel)
	}
	e.kubectl("-n", "ingress", "delete", "gateway", "edge", "--wait=true")
	e.eventually(2*time.Minute, "the data plane of ingress/edge removed", func() string {
		if out := strings.TrimSpace(e.kubectl("-n", "ingress", "get", kinds, "-l", sel, "-o", "name")); out != "" {
			return "left: " + strings.ReplaceAll(out, "\n", ", ")
		}
		return ""
	})
	if _, err := tcpTest(net.JoinHostPort(edge.addr, "1433")); err == nil {
		t.Errorf("%s:1433 still answers after the Gateway was deleted", edge.addr)
	}
	edge.addr = ""
}
