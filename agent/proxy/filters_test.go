package proxy_test

import (
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// handlerPod serves h as a pod of namespace ns.
func (e *env) handlerPod(ns, sa string, h http.HandlerFunc) *weftv1.Endpoint {
	l, ep := e.pod(ns, sa)
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	e.t.Cleanup(func() { srv.Close() })
	return ep
}

func TestRetryReplaysUntilSuccess(t *testing.T) {
	e := newEnv(t)
	var calls atomic.Int32
	var bodies atomic.Int32
	ep := e.handlerPod("web", "web", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if string(b) == "payload" {
			bodies.Add(1)
		}
		if calls.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules:   []*weftv1.Rule{{Route: "web/r", Backends: backends("web/web:80", 1), Retry: &weftv1.Retry{Codes: []uint32{503}, Attempts: 2, Backoff: dur(time.Millisecond)}}},
		Matches: []*weftv1.Match{{Rule: 0, Http: prefix("/")}}}
	e.apply()
	c := e.client(e.caller("app"), vip)
	resp, err := c.Post("http://"+vip+"/", "text/plain", stringsReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "ok" || calls.Load() != 3 || bodies.Load() != 3 {
		t.Fatalf("status %d body %q after %d calls (%d with the body)", resp.StatusCode, b, calls.Load(), bodies.Load())
	}
}

func TestMirrorNeverAffectsResponse(t *testing.T) {
	e := newEnv(t)
	mirrored := make(chan string, 4)
	main := e.httpPod("web", "web")
	shadow := e.handlerPod("web", "shadow", func(w http.ResponseWriter, r *http.Request) {
		mirrored <- r.URL.Path
		w.WriteHeader(http.StatusInternalServerError) // must not reach the client
	})
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, main)
	e.cluster("web/shadow:80", weftv1.Protocol_PROTOCOL_HTTP, shadow)
	sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules: []*weftv1.Rule{{Route: "web/r", Backends: backends("web/web:80", 1), Filters: []*weftv1.Filter{
			{Kind: &weftv1.Filter_RequestMirror{RequestMirror: &weftv1.RequestMirror{Cluster: "web/shadow:80", Numerator: 100, Denominator: 100}}}}}},
		Matches: []*weftv1.Match{{Rule: 0, Http: prefix("/")}}}
	e.apply()
	resp, a := get(t, e.client(e.caller("app"), vip), "http://"+vip+"/m")
	if resp.StatusCode != 200 || a.Pod != main.Pod {
		t.Fatalf("client got %d from %q", resp.StatusCode, a.Pod)
	}
	select {
	case p := <-mirrored:
		if p != "/m" {
			t.Errorf("mirror saw %q", p)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request was not mirrored")
	}
}

func TestRewriteAndCORSPreflight(t *testing.T) {
	e := newEnv(t)
	ep := e.httpPod("web", "web")
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules: []*weftv1.Rule{{Route: "web/r", Backends: backends("web/web:80", 1), Filters: []*weftv1.Filter{
			{Kind: &weftv1.Filter_UrlRewrite{UrlRewrite: &weftv1.URLRewrite{Hostname: "backend.example", Path: &weftv1.PathModifier{Type: weftv1.PathModifier_TYPE_PREFIX, Value: "/v2"}}}},
			{Kind: &weftv1.Filter_Cors{Cors: &weftv1.CORS{AllowOrigins: []string{"https://app.example"}, AllowMethods: []string{"GET", "PUT"}}}},
		}}},
		Matches: []*weftv1.Match{{Rule: 0, Http: prefix("/v1")}}}
	e.apply()
	c := e.client(e.caller("app"), vip)
	resp, a := get(t, c, "http://"+vip+"/v1/items?x=1", "Origin", "https://app.example")
	if resp.StatusCode != 200 || a.Path != "/v2/items?x=1" || a.Host != "backend.example" {
		t.Fatalf("rewrite: %d path %q host %q", resp.StatusCode, a.Path, a.Host)
	}
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Errorf("cors response headers: %v", resp.Header)
	}
	req, _ := http.NewRequest(http.MethodOptions, "http://"+vip+"/v1/items", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "PUT")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 || resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || resp.Header.Get("X-Echo-Pod") != "" {
		t.Errorf("preflight must be answered by the proxy: %d %v", resp.StatusCode, resp.Header)
	}
}
