package proxy_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/test/echo"
	"github.com/weft-mesh/weft/test/echo/echopb"
)

// traceHeaders are W3C trace context and B3 (single and multi header)
// headers as a traced client sends them.
var traceHeaders = map[string]string{
	"Traceparent":       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	"Tracestate":        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
	"B3":                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
	"X-B3-Traceid":      "80f198ee56343ba864fe8b2a57d3eff7",
	"X-B3-Spanid":       "e457b5a2e4d86bd1",
	"X-B3-Parentspanid": "05e3ac9a4f6e3b90",
	"X-B3-Sampled":      "1",
	"X-B3-Flags":        "1",
}

// checkTrace fails unless the headers a backend received carry exactly the
// trace headers sent (sent nil: none at all).
func checkTrace(t *testing.T, path string, got map[string][]string, sent map[string]string) {
	t.Helper()
	for k, want := range traceHeaders {
		v, ok := got[k]
		switch {
		case sent == nil && ok:
			t.Errorf("%s: the proxy invented %s: %q", path, k, v)
		case sent != nil && !slices.Equal(v, []string{want}):
			t.Errorf("%s: %s arrived as %q, sent %q", path, k, v, want)
		}
	}
}

// TestTraceHeadersPassThroughUnchanged: W3C traceparent/tracestate and B3
// headers reach the backend unchanged on every L7 path (HTTP/1.1, h2c,
// gRPC; routed, default backend), and a request that carries none gets
// none from the proxy. Metrics are on, as in the agent.
func TestTraceHeadersPassThroughUnchanged(t *testing.T) {
	e, _, _ := metricsEnv(t)
	g := e.grpcPod("rpc", "rpc")
	e.cluster("rpc/g:9090", weftv1.Protocol_PROTOCOL_GRPC, g)
	e.service("rpc", "rpc", "10.96.0.30", 9090, weftv1.Protocol_PROTOCOL_GRPC, "rpc/g:9090")
	e.service("web", "plain", "10.96.0.11", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/v1:80")
	e.apply()
	caller := e.callerOf("app", "shop")
	for _, tc := range []struct {
		name string
		c    *http.Client
		dst  string
	}{
		{"http1 routed", e.client(caller, vip), vip},
		{"h2c routed", h2cClient(e, caller, vip), vip},
		{"http1 no route table", e.client(caller, "10.96.0.11:80"), "10.96.0.11:80"},
	} {
		for _, sent := range []map[string]string{traceHeaders, nil} {
			req, _ := http.NewRequest("GET", "http://"+tc.dst+"/ok", nil)
			for k, v := range sent {
				req.Header[k] = []string{v}
			}
			resp, err := tc.c.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			var a echo.Answer
			err = json.NewDecoder(resp.Body).Decode(&a)
			resp.Body.Close()
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("%s: %d %v", tc.name, resp.StatusCode, err)
			}
			checkTrace(t, tc.name, a.Headers, sent)
			for k := range traceHeaders {
				if _, ok := resp.Header[k]; ok {
					t.Errorf("%s: the answer carries %s", tc.name, k)
				}
			}
		}
	}

	cc, err := grpc.NewClient("passthrough:///10.96.0.30:9090", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return e.dialErr(caller, "10.96.0.30:9090") }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cl := echopb.NewEchoClient(cc)
	for _, sent := range []map[string]string{traceHeaders, nil} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var md metadata.MD
		for k, v := range sent {
			md = metadata.Join(md, metadata.Pairs(k, v))
		}
		r, err := cl.Echo(metadata.NewOutgoingContext(ctx, md), &echopb.EchoRequest{Message: "t"})
		cancel()
		if err != nil {
			t.Fatalf("grpc: %v", err)
		}
		got := map[string][]string{}
		for k, h := range r.GetHeaders() {
			got[http.CanonicalHeaderKey(k)] = h.GetValues()
		}
		checkTrace(t, "grpc", got, sent)
	}
}
