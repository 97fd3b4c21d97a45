// Package echobasic checks `weft-echo basic`, the stand-in for the conformance suite's
// echo-basic image, with the suite's own clients and comparisons
// (sigs.k8s.io/gateway-api/conformance/utils/...): what a Gateway conformance test
// would read from a backend, read the same way, on loopback.
//
// weft-echo runs as the lab runs it: the binary, `basic`, and only the environment the
// suite's manifests give the container. It cannot run in this test's process: its
// basicpb and the suite's grpcechoserver (our stand-in, generated from the same proto)
// register the same proto names, and a program linking both panics at start.
//
// This is its own package, not part of test/conformance's, whose TestMain brings up
// the lab.
package echobasic_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	pb "sigs.k8s.io/gateway-api-conformance-images/echo-basic/grpcechoserver"
	"sigs.k8s.io/gateway-api-conformance-images/echo-basic/udpechoserver"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	grpcutil "sigs.k8s.io/gateway-api/conformance/utils/grpc"
	httputil "sigs.k8s.io/gateway-api/conformance/utils/http"
	"sigs.k8s.io/gateway-api/conformance/utils/roundtripper"
	"sigs.k8s.io/gateway-api/conformance/utils/tcp"
	"sigs.k8s.io/gateway-api/conformance/utils/udp"
	wsutil "sigs.k8s.io/gateway-api/conformance/utils/websocket"

	"github.com/weft-mesh/weft/test/lab/cluster"
	"github.com/weft-mesh/weft/test/syncbuf"
)

const ns = "gateway-conformance-infra"

// weftEcho is the binary under test, built once by TestMain.
var weftEcho string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "echobasic")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	weftEcho = filepath.Join(dir, "weft-echo")
	build := exec.Command("go", "build", "-o", weftEcho, "./test/echo/cmd/weft-echo")
	build.Dir = filepath.Join("..", "..", "..") // the weft module: the lab runs what it builds
	build.Env = append(os.Environ(), "GOTOOLCHAIN=auto", "GOFLAGS=-buildvcs=false")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build weft-echo: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// timeouts are the suite's, shortened: the server is local and starts at once.
func timeouts() config.TimeoutConfig {
	c := config.DefaultTimeoutConfig()
	c.MaxTimeToConsistency = 5 * time.Second
	c.RequestTimeout = 5 * time.Second
	c.RequiredConsecutiveSuccesses = 2
	return c
}

// echo is a running `weft-echo basic`.
type echo struct {
	ports  map[string]string // env name → port
	stdout *syncbuf.Buffer
}

func (e echo) addr(portEnv string) string { return net.JoinHostPort("127.0.0.1", e.ports[portEnv]) }

// startEcho runs `weft-echo basic` with env plus a free loopback port for each of
// portEnvs, and waits until its TCP ports accept connections.
func startEcho(t *testing.T, env map[string]string, tcpPorts, udpPorts []string) echo {
	t.Helper()
	for try := 1; ; try++ {
		e, err := tryStartEcho(t, env, tcpPorts, udpPorts)
		if err == nil {
			return e
		}
		// a free port can be taken by another process before weft-echo
		// binds it: pick others
		if try < 3 && strings.Contains(err.Error(), "address already in use") {
			t.Logf("try %d: %v; again with other ports", try, err)
			continue
		}
		t.Fatal(err)
	}
}

// tryStartEcho starts weft-echo basic on free ports and waits until its TCP
// ports accept; on an error, the process is gone.
func tryStartEcho(t *testing.T, env map[string]string, tcpPorts, udpPorts []string) (echo, error) {
	t.Helper()
	e := echo{ports: map[string]string{}, stdout: &syncbuf.Buffer{}}
	argEnv := []string{}
	for k, v := range env {
		argEnv = append(argEnv, k+"="+v)
	}
	for _, name := range append(append([]string{}, tcpPorts...), udpPorts...) {
		e.ports[name] = freePort(t, slices.Contains(udpPorts, name))
		argEnv = append(argEnv, name+"="+e.ports[name])
	}
	cmd := exec.Command(weftEcho, "basic")
	cmd.Env = argEnv
	var stderr syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = e.stdout, &stderr
	if err := cmd.Start(); err != nil {
		return e, err
	}
	// exited is closed once the process is reaped: every waiter sees it
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	for _, name := range tcpPorts {
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", e.addr(name), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				return e, fmt.Errorf("weft-echo basic exited: %v\n%s", waitErr, &stderr)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				stop()
				return e, fmt.Errorf("%s %s never accepted a connection: %v\n%s", name, e.addr(name), err, &stderr)
			}
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("weft-echo basic stdout:\n%s\nstderr:\n%s", e.stdout, &stderr)
		}
	})
	return e, nil
}

func freePort(t *testing.T, udp bool) string {
	t.Helper()
	var addr net.Addr
	if udp {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = pc.LocalAddr()
		pc.Close()
	} else {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr()
		l.Close()
	}
	_, port, _ := net.SplitHostPort(addr.String())
	return port
}

func contextWithTimeout(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), 10*time.Second)
}

// pki is a throwaway CA, a server certificate for abc.example.com and a client
// certificate, written where a test's manifests would mount them.
type pki struct {
	caPEM, clientCertPEM, clientKeyPEM []byte
	caFile, certFile, keyFile          string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	ca, err := cluster.NewCA("echobasic test CA")
	if err != nil {
		t.Fatal(err)
	}
	serverCert, serverKey, err := ca.Issue(cluster.CertSpec{CommonName: "abc.example.com", DNSNames: []string{"abc.example.com"}, Server: true})
	if err != nil {
		t.Fatal(err)
	}
	p := pki{caPEM: ca.CertPEM()}
	if p.clientCertPEM, p.clientKeyPEM, err = ca.Issue(cluster.CertSpec{CommonName: "gateway", Client: true}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p.caFile, p.certFile, p.keyFile = filepath.Join(dir, "ca"), filepath.Join(dir, "crt"), filepath.Join(dir, "key")
	for f, b := range map[string][]byte{p.caFile: p.caPEM, p.certFile: serverCert, p.keyFile: serverKey} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// roundTrip sends expected's request as the suite does and compares the answer with
// the suite's CompareRoundTrip.
func roundTrip(t *testing.T, addr, protocol, scheme string, expected httputil.ExpectedResponse, tweak func(*roundtripper.Request)) *roundtripper.CapturedRequest {
	t.Helper()
	rt := &roundtripper.DefaultRoundTripper{TimeoutConfig: timeouts()}
	req := httputil.MakeRequest(t, &expected, addr, protocol, scheme)
	if tweak != nil {
		tweak(&req)
	}
	cReq, cRes, err := rt.CaptureRoundTrip(req)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if err := httputil.CompareRoundTrip(t, &req, cReq, cRes, expected); err != nil {
		t.Errorf("%s: %v", expected.GetTestCaseName(0), err)
	}
	return cReq
}

func TestHTTPWithSuiteClient(t *testing.T) {
	e := startEcho(t, map[string]string{"POD_NAME": "infra-backend-v1-7d9f8-x2x4q", "NAMESPACE": ns}, []string{"HTTP_PORT", "H2C_PORT"}, nil)

	t.Run("echo", func(t *testing.T) {
		cReq := roundTrip(t, e.addr("HTTP_PORT"), "HTTP", "http", httputil.ExpectedResponse{
			Request: httputil.Request{Host: "foo.example.com", Method: "POST", Path: "/v2/echo?q=1", Headers: map[string]string{"X-Echo-Test": "yes"}, Body: "some body"},
			ExpectedRequest: &httputil.ExpectedRequest{
				Request:       httputil.Request{Host: "foo.example.com", Method: "POST", Path: "/v2/echo?q=1", Headers: map[string]string{"X-Echo-Test": "yes"}},
				AbsentHeaders: []string{"X-Not-Sent"},
				HTTPPort:      e.ports["HTTP_PORT"],
			},
			BackendSetResponseHeaders: map[string]string{"X-Header-Set": "set-by-backend"},
			Response:                  httputil.Response{StatusCode: 200, Headers: map[string]string{"X-Header-Set": "set-by-backend"}, AbsentHeaders: []string{"X-Not-Set"}},
			Backend:                   "infra-backend-v1",
			Namespace:                 ns,
		}, nil)
		if cReq.Protocol != "HTTP/1.1" || cReq.TLS.ServerName != "" {
			t.Errorf("captured %+v", cReq)
		}
	})
	t.Run("mirror log line", func(t *testing.T) {
		path := "/mirror?gateway-api-conformance-request-id=4711"
		roundTrip(t, e.addr("HTTP_PORT"), "HTTP", "http", httputil.ExpectedResponse{Request: httputil.Request{Path: path}, Backend: "infra-backend-v1", Namespace: ns}, nil)
		// Like the suite, look for the line in the log until it shows up: stdout is a pipe.
		re := httputil.GetMirrorLogRegexp(path)
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if slices.ContainsFunc(strings.Split(e.stdout.String(), "\n"), re.MatchString) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stdout lacks %s:\n%s", re, e.stdout)
			}
		}
	})
	t.Run("h2c", func(t *testing.T) {
		roundTrip(t, e.addr("H2C_PORT"), roundtripper.H2CPriorKnowledgeProtocol, "http", httputil.ExpectedResponse{
			Request:   httputil.Request{Path: "/h2c"},
			Response:  httputil.Response{StatusCode: 200, Protocol: "HTTP/2.0"},
			Backend:   "infra-backend-v1",
			Namespace: ns,
		}, nil)
	})
	t.Run("retry", func(t *testing.T) {
		path := "/retry/code-500-attempts-3?responseCode=500&succeedAfter=2&uuid=" + fmt.Sprint(time.Now().UnixNano())
		for _, code := range []int{500, 500, 200} {
			roundTrip(t, e.addr("HTTP_PORT"), "HTTP", "http", httputil.ExpectedResponse{
				Request: httputil.Request{Path: path}, Response: httputil.Response{StatusCode: code}, Backend: "infra-backend-v1", Namespace: ns,
			}, nil)
		}
	})
	t.Run("websocket", func(t *testing.T) {
		ws, err := (&wsutil.DefaultDialer{}).Dial("ws://"+e.addr("HTTP_PORT")+"/ws", "", "ws://gateway/"+t.Name())
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		var text string
		if err := websocket.Message.Send(ws, "Websocket Support!"); err != nil {
			t.Fatal(err)
		}
		if err := websocket.Message.Receive(ws, &text); err != nil || text != "Websocket Support!" {
			t.Errorf("text frame: %q, %v", text, err)
		}
		var bin []byte
		if err := websocket.Message.Send(ws, []byte{1, 2, 3, 4, 5, 6, 7}); err != nil {
			t.Fatal(err)
		}
		if err := websocket.Message.Receive(ws, &bin); err != nil || !bytes.Equal(bin, []byte{1, 2, 3, 4, 5, 6, 7}) {
			t.Errorf("binary frame: %v, %v", bin, err)
		}
	})
}

func TestHTTPSWithSuiteClient(t *testing.T) {
	p := newPKI(t)
	e := startEcho(t, map[string]string{
		"POD_NAME": "tls-backend-5b6c7-abcde", "NAMESPACE": ns,
		"TLS_SERVER_CERT": p.certFile, "TLS_SERVER_PRIVKEY": p.keyFile, "TLS_CLIENT_CACERTS": p.caFile,
	}, []string{"HTTP_PORT", "H2C_PORT", "HTTPS_PORT"}, nil)
	clientCert, err := tls.X509KeyPair(p.clientCertPEM, p.clientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	withTLS := func(sni string, presentCert bool) func(*roundtripper.Request) {
		return func(r *roundtripper.Request) {
			r.ServerName, r.ServerCertificate = sni, p.caPEM
			if presentCert {
				r.GetClientCertificateHook = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &clientCert, nil }
			}
		}
	}

	t.Run("SNI and client certificate", func(t *testing.T) {
		cReq := roundTrip(t, e.addr("HTTPS_PORT"), roundtripper.HTTPSProtocol, "https", httputil.ExpectedResponse{
			Request:   httputil.Request{Host: "abc.example.com", Path: "/", SNI: "abc.example.com", ClientCert: string(p.clientCertPEM)},
			Response:  httputil.Response{StatusCode: 200},
			Backend:   "tls-backend",
			Namespace: ns,
		}, withTLS("abc.example.com", true))
		if cReq.TLS.Version != "TLSv1.3" || cReq.TLS.CipherSuite == "" {
			t.Errorf("captured TLS %+v", cReq.TLS)
		}
	})
	t.Run("h2", func(t *testing.T) {
		cReq := roundTrip(t, e.addr("HTTPS_PORT"), roundtripper.H2Protocol, "https", httputil.ExpectedResponse{
			Request:   httputil.Request{Host: "abc.example.com", Path: "/h2", SNI: "abc.example.com"},
			Response:  httputil.Response{StatusCode: 200, Protocol: "HTTP/2.0"},
			Backend:   "tls-backend",
			Namespace: ns,
		}, withTLS("abc.example.com", false))
		if cReq.TLS.NegotiatedProtocol != "h2" || len(cReq.TLS.PeerCertificates) != 0 {
			t.Errorf("captured TLS %+v", cReq.TLS)
		}
	})
}

// grpcTimeouts need one success only: each success is one call.
func grpcTimeouts() config.TimeoutConfig {
	c := timeouts()
	c.RequiredConsecutiveSuccesses = 1
	return c
}

func TestGRPCWithSuiteClient(t *testing.T) {
	p := newPKI(t)
	e := startEcho(t, map[string]string{
		"POD_NAME": "grpc-infra-backend-v1-6f7d8-zzzzz", "NAMESPACE": ns, "GRPC_ECHO_SERVER": "1",
		"TLS_SERVER_CERT": p.certFile, "TLS_SERVER_PRIV_KEY": p.keyFile,
	}, []string{"HTTP_PORT", "HTTPS_PORT"}, nil)
	addr := e.addr("HTTP_PORT")

	for _, exp := range []grpcutil.ExpectedResponse{
		{EchoRequest: &pb.EchoRequest{}, Backend: "grpc-infra-backend-v1", Namespace: ns},
		{EchoTwoRequest: &pb.EchoRequest{}, Backend: "grpc-infra-backend-v1", Namespace: ns,
			RequestMetadata: &grpcutil.RequestMetadata{Authority: "grpc.example.com", Metadata: map[string]string{"x-grpc-test": "v"}}},
		{EchoThreeRequest: &pb.EchoRequest{}, Response: grpcutil.Response{Code: codes.Unimplemented}},
	} {
		t.Run(exp.GetTestCaseName(0), func(t *testing.T) {
			grpcutil.MakeRequestAndExpectEventuallyConsistentResponse(t, nil, grpcTimeouts(), addr, exp)
		})
	}

	t.Run("metadata and authority echoed", func(t *testing.T) {
		c := &grpcutil.DefaultClient{}
		defer c.Close()
		resp, err := c.SendRPC(t, addr, grpcutil.ExpectedResponse{
			EchoRequest:     &pb.EchoRequest{},
			RequestMetadata: &grpcutil.RequestMetadata{Authority: "grpc.example.com", Metadata: map[string]string{"x-grpc-test": "v"}},
		}, 5*time.Second)
		if err != nil || resp.Code != codes.OK {
			t.Fatalf("SendRPC: %v, %v", resp, err)
		}
		a := resp.Response.GetAssertions()
		headers := map[string]string{}
		for _, h := range a.GetHeaders() {
			headers[h.GetKey()] = h.GetValue()
		}
		if a.GetAuthority() != "grpc.example.com" || headers[":authority"] != "grpc.example.com" || headers["x-grpc-test"] != "v" {
			t.Errorf("assertions %v", a)
		}
		if a.GetContext().GetServiceName() != "" || a.GetTlsAssertions() != nil {
			t.Errorf("assertions %v", a)
		}
	})

	t.Run("TLS port", func(t *testing.T) {
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(p.caPEM)
		conn, err := grpc.NewClient(e.addr("HTTPS_PORT"), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{ServerName: "abc.example.com", RootCAs: roots})))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := contextWithTimeout(t)
		defer cancel()
		resp, err := pb.NewGrpcEchoClient(conn).Echo(metadata.AppendToOutgoingContext(ctx, "x-a", "b"), &pb.EchoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		a := resp.GetAssertions()
		ta := a.GetTlsAssertions()
		if a.GetFullyQualifiedMethod() != "/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo" || a.GetContext().GetPod() != "grpc-infra-backend-v1-6f7d8-zzzzz" {
			t.Errorf("assertions %v", a)
		}
		if ta.GetServerName() != "abc.example.com" || ta.GetNegotiatedProtocol() != "h2" || ta.GetVersion() != "TLSv1.3" {
			t.Errorf("TLS assertions %v", ta)
		}
	})
}

func TestTCPWithSuiteClient(t *testing.T) {
	p := newPKI(t)
	e := startEcho(t, map[string]string{
		"POD_NAME": "tcp-backend-84d5c-q9w8e", "NAMESPACE": ns, "TCP_ECHO_SERVER": "1",
		"TLS_SERVER_CERT": p.certFile, "TLS_SERVER_PRIV_KEY": p.keyFile,
	}, []string{"TCP_PORT", "TLS_PORT"}, nil)

	tcp.MakeTCPRequestAndExpectEventuallyValidResponse(t, timeouts(), e.addr("TCP_PORT"), nil, "", false,
		tcp.ExpectedResponse{Backend: "tcp-backend", Namespace: ns})
	tcp.MakeTCPRequestAndExpectEventuallyValidResponse(t, timeouts(), e.addr("TLS_PORT"), p.caPEM, "abc.example.com", true,
		tcp.ExpectedResponse{BackendIsTLS: true, Backend: "tcp-backend", Namespace: ns, Hostname: "abc.example.com"})

	ctx, cancel := contextWithTimeout(t)
	defer cancel()
	pod, err := tcp.EchoSendOnce(ctx, e.addr("TCP_PORT"), 5*time.Second)
	if err != nil || pod != "tcp-backend-84d5c-q9w8e" {
		t.Errorf("EchoSendOnce: %q, %v", pod, err)
	}
}

func TestTCPResetWithSuiteClient(t *testing.T) {
	e := startEcho(t, map[string]string{"POD_NAME": "tcp-backend-1-2", "NAMESPACE": ns, "TCP_ECHO_SERVER": "1", "TCP_MODE": "RESET"}, []string{"TCP_PORT"}, nil)
	ctx, cancel := contextWithTimeout(t)
	defer cancel()
	if pod, err := tcp.EchoSendOnce(ctx, e.addr("TCP_PORT"), 5*time.Second); err == nil {
		t.Errorf("TCP_MODE=RESET answered as %q", pod)
	}
}

func TestUDPWithSuiteClient(t *testing.T) {
	e := startEcho(t, map[string]string{"POD_NAME": "udp-backend-v1-1-2", "NAMESPACE": ns, "UDP_ECHO_SERVER": "1", "SERVICE_NAME": "udp-backend-v1"}, nil, []string{"UDP_PORT"})
	udp.ExpectEchoResponseFromBackend(t, timeouts(), e.addr("UDP_PORT"), udp.ExpectedResponse{Service: "udp-backend-v1", Namespace: ns})

	// The UDPRoute weight test decodes the answer as the images' udpechoserver.EchoResponse.
	c, err := net.Dial("udp", e.addr("UDP_PORT"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("gateway-api-conformance-udp-weight\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	line := buf[:n]
	var resp udpechoserver.EchoResponse
	if err := json.Unmarshal(line, &resp); err != nil || resp.Pod != "udp-backend-v1-1-2" || resp.Request != "gateway-api-conformance-udp-weight\n" {
		t.Errorf("answer %q: %+v, %v", line, resp, err)
	}
}
