package gateway

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// fakeController serves one gateway snapshot and refuses Identity.Sign, as
// the controller does until it signs for gateways.
type fakeController struct {
	weftv1.UnimplementedPolicyServer
	weftv1.UnimplementedIdentityServer
	snap *weftv1.PolicySnapshot
	acks chan *weftv1.PolicyRequest
}

func (s *fakeController) Stream(st weftv1.Policy_StreamServer) error {
	sub, err := st.Recv()
	if err != nil {
		return err
	}
	s.acks <- sub
	if err := st.Send(s.snap); err != nil {
		return err
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		s.acks <- r
	}
}

func (s *fakeController) Sign(context.Context, *weftv1.SignRequest) (*weftv1.SignResponse, error) {
	return nil, status.Error(codes.PermissionDenied, "gateway identities are not signed yet")
}

func TestRunServesAppliesAndDrains(t *testing.T) {
	ca := newCA(t)
	_, _, srvCert := ca.issue(t, false, []string{"localhost"})
	dir := t.TempDir()
	caFile, tokFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token")
	os.WriteFile(caFile, ca.pem, 0o600)
	os.WriteFile(tokFile, []byte("tok\n"), 0o600)

	a := echoServer(t, "a")
	p := policy([]*weftv1.GatewayPort{gport(80, httpListener("web", "", vhost("", httpTableTo("/", be("a", 1)))))}, cluster("a", a))
	p.Identity = "spiffe://cluster.local/ns/infra/sa/gw"
	ctl := &fakeController{snap: &weftv1.PolicySnapshot{Version: 1, ControllerNonce: "n", Gateway: p}, acks: make(chan *weftv1.PolicyRequest, 8)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srvCert}})))
	weftv1.RegisterPolicyServer(srv, ctl)
	weftv1.RegisterIdentityServer(srv, ctl)
	go srv.Serve(ln)
	defer srv.Stop()

	tl := &testListens{fail: map[uint32]bool{}}
	health := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	go func() {
		done <- Run(ctx, RunConfig{
			Gateway: "infra/gw", ControllerAddr: "localhost:" + port, ControllerCAFile: caFile,
			Token:      func() (string, error) { b, err := os.ReadFile(tokFile); return strings.TrimSpace(string(b)), err },
			HealthAddr: health, GracePeriod: 2 * time.Second, Data: Config{Listen: tl.listen},
		})
	}()
	if sub := <-ctl.acks; sub.GetGateway() != "infra/gw" {
		t.Fatalf("subscribe = %v", sub)
	}
	if ack := <-ctl.acks; ack.GetVersion() != 1 || ack.GetError() != "" {
		t.Fatalf("want ACK of 1, got %v", ack)
	}
	waitStatus(t, "http://"+health+"/readyz", 200)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the drain")
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: never %d (last %v)", url, want, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
