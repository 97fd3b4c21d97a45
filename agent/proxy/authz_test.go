package proxy_test

import (
	"context"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/test/echo/echopb"
)

// Authorization through the whole node proxy: captured caller -> outbound
// -> mTLS tunnel -> inbound (authorization) -> pod.

func TestAuthzL4RefusedCallerNeverReachesThePod(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, withMetrics(reg))
	var accepted atomic.Int64
	ep := e.tcpPod("db", "db", func(c net.Conn) { accepted.Add(1); io.Copy(c, c) })
	e.cluster("db/db:5432", weftv1.Protocol_PROTOCOL_TCP, ep)
	e.service("db", "db", "10.96.0.20", 5432, weftv1.Protocol_PROTOCOL_TCP, "db/db:5432")
	e.pol.Authz = []*weftv1.AuthzPolicy{{Name: "db/app-only", Action: weftv1.AuthzAction_AUTHZ_ACTION_ALLOW, Workloads: []string{ep.Pod},
		Rules: []*weftv1.AuthzRule{{Sources: []*weftv1.AuthzSource{{Namespace: "app"}}, Ports: []uint32{ep.Port}}}}}
	e.apply()

	refused := e.dial(e.caller("other"), "10.96.0.20:5432")
	defer refused.Close()
	refused.Write([]byte("secret"))
	refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(refused); len(b) != 0 || isTimeout(err) {
		t.Fatalf("refused caller read %q %v, want its connection closed", b, err)
	}
	allowed := e.dial(e.caller("app"), "10.96.0.20:5432")
	defer allowed.Close()
	allowed.Write([]byte("hi"))
	allowed.(*net.TCPConn).CloseWrite()
	allowed.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(allowed); string(b) != "hi" {
		t.Fatalf("allowed caller: %q %v", b, err)
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("the pod accepted %d connections, want only the allowed caller's", n)
	}
	// No rule of the ALLOW policy matched: no single policy decided.
	if got := sumBy(t, reg, "weft_authz_refused_total", nil, "policy", "level"); len(got) != 1 || got["|network"] != 1 {
		t.Errorf("weft_authz_refused_total %v, want one network refusal without a deciding policy", got)
	}
}

func TestAuthzHTTPRefusedRequestThroughTheProxy(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, withMetrics(reg))
	ep := e.httpPod("web", "web")
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	e.service("web", "web", "10.96.0.40", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	e.pol.Authz = []*weftv1.AuthzPolicy{{Name: "web/no-admin-writes", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Application: true,
		Workloads: []string{ep.Pod},
		Rules: []*weftv1.AuthzRule{{Sources: []*weftv1.AuthzSource{{Namespace: "app"}},
			Http: []*weftv1.HTTPMatch{{Method: "POST", Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/admin"}}}}}}}
	e.apply()
	caller := e.caller("app")
	var dials atomic.Int64
	tr := &http.Transport{DisableCompression: true, MaxConnsPerHost: 1, DialContext: func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		return e.dialErr(caller, "10.96.0.40:80")
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	do := func(method, path string) int {
		t.Helper()
		req, _ := http.NewRequest(method, "http://10.96.0.40"+path, strings.NewReader("x"))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, s := range []struct {
		method, path string
		want         int
	}{{"GET", "/admin", 200}, {"POST", "/admin/x", 403}, {"POST", "/cart", 200}, {"GET", "/", 200}} {
		if got := do(s.method, s.path); got != s.want {
			t.Fatalf("%s %s: %d, want %d", s.method, s.path, got, s.want)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the caller opened %d connections, want the 403 to keep the first", n)
	}
	if got := sumBy(t, reg, "weft_authz_refused_total", nil, "policy", "level"); len(got) != 1 || got["web/no-admin-writes|application"] != 1 {
		t.Errorf("weft_authz_refused_total %v, want one application refusal by web/no-admin-writes", got)
	}
	// removed: applies to the next request
	e.pol.Authz = nil
	e.apply()
	tr.CloseIdleConnections()
	if got := do("POST", "/admin/x"); got != 200 {
		t.Fatalf("after the policy was removed: %d", got)
	}
}

func TestAuthzGRPCPermissionDeniedThroughTheProxy(t *testing.T) {
	e, cc, eps := grpcEnv(t)
	for _, ep := range eps {
		e.pol.Authz = append(e.pol.Authz, &weftv1.AuthzPolicy{Name: "rpc/no-ping-" + ep.Pod[len("rpc/"):], Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY,
			Application: true, Workloads: []string{ep.Pod},
			Rules: []*weftv1.AuthzRule{{AnySource: true, Http: []*weftv1.HTTPMatch{{Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_EXACT, Value: "/weft.echo.v1.Echo/Ping"}}}}}})
	}
	e.apply()
	cl := echopb.NewEchoClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Ping(ctx, &echopb.EchoRequest{Message: "p"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Ping: %v, want PermissionDenied", err)
	}
	if r, err := cl.Echo(ctx, &echopb.EchoRequest{Message: "hi"}); err != nil || r.GetMessage() != "hi" {
		t.Fatalf("Echo after a denied Ping: %v %v", r, err)
	}
}

// A request the caller's proxy accepts is not refused by the destination
// for its header size when it is served at L7 there.
func TestAuthzL7AcceptsWhatTheSourceAccepts(t *testing.T) {
	e := newEnv(t)
	ep := e.httpPod("web", "web")
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	e.service("web", "web", "10.96.0.40", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	e.pol.Authz = []*weftv1.AuthzPolicy{{Name: "web/no-admin", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Application: true,
		Workloads: []string{ep.Pod}, Rules: []*weftv1.AuthzRule{{AnySource: true, Http: []*weftv1.HTTPMatch{prefix("/admin")}}}}}
	e.apply()
	req, _ := http.NewRequest("GET", "http://10.96.0.40/big", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 40<<10)) // under the 60 KiB the source accepts
	resp, err := e.client(e.caller("app"), "10.96.0.40:80").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a 40 KiB header: %d", resp.StatusCode)
	}
}
