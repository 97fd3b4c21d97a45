package proxy_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-mesh/weft/test/echo"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func get(t *testing.T, c *http.Client, url string, hdr ...string) (*http.Response, echo.Answer) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var a echo.Answer
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("answer %q: %v", body, err)
		}
	}
	return resp, a
}

const vip = "10.96.0.10:80"

// routedEnv: service web/web:80 with clusters v1 and v2 and a producer table:
// header x-canary: yes -> v2; /redirect -> 302; /broken -> invalid backend;
// /split -> v1:v2 = 1:1; /only -> v1. Everything else: no route (404).
func routedEnv(t testing.TB) (*env, uint64) {
	e := newEnv(t)
	v1 := e.httpPod("web", "web")
	v2 := e.httpPod("web", "web")
	e.cluster("web/v1:80", weftv1.Protocol_PROTOCOL_HTTP, v1)
	e.cluster("web/v2:80", weftv1.Protocol_PROTOCOL_HTTP, v2)
	sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/v1:80")
	sp.Producer = &weftv1.RouteTable{
		Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules: []*weftv1.Rule{
			{Route: "web/r", Index: 0, Backends: backends("web/v2:80", 1)},
			{Route: "web/r", Index: 1, Filters: []*weftv1.Filter{{Kind: &weftv1.Filter_RequestRedirect{RequestRedirect: &weftv1.RequestRedirect{Hostname: "elsewhere.example", StatusCode: 302}}}}},
			{Route: "web/r", Index: 2, Backends: []*weftv1.BackendRef{{Weight: 1, InvalidReason: "BackendNotFound"}}},
			{Route: "web/r", Index: 3, Backends: backends("web/v1:80", 1, "web/v2:80", 1)},
			{Route: "web/r", Index: 4, Backends: backends("web/v1:80", 1), Filters: []*weftv1.Filter{
				{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &weftv1.HeaderModifier{Set: []*weftv1.HeaderModifier_Header{{Name: "X-Added", Value: "yes"}}}}},
				{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &weftv1.HeaderModifier{Add: []*weftv1.HeaderModifier_Header{{Name: "X-Resp", Value: "r"}}}}},
			}},
		},
		Matches: []*weftv1.Match{
			{Rule: 0, Http: &weftv1.HTTPMatch{Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/"}, Headers: []*weftv1.StringMatch{{Type: weftv1.MatchType_MATCH_TYPE_EXACT, Name: "x-canary", Value: "yes"}}}},
			{Rule: 1, Http: prefix("/redirect")},
			{Rule: 2, Http: prefix("/broken")},
			{Rule: 3, Http: prefix("/split")},
			{Rule: 4, Http: prefix("/only")},
		},
	}
	e.apply()
	return e, e.caller("app")
}

func TestHTTPRouting(t *testing.T) {
	e, caller := routedEnv(t)
	c := e.client(caller, vip)

	resp, a := get(t, c, "http://"+vip+"/only/x?q=1")
	if resp.StatusCode != 200 || !strings.HasPrefix(a.Pod, "web/pod-") || a.Path != "/only/x?q=1" {
		t.Fatalf("only: %d %+v", resp.StatusCode, a)
	}
	v1 := a.Pod
	if a.Headers["X-Added"][0] != "yes" || resp.Header.Get("X-Resp") != "r" {
		t.Errorf("header filters: req %v resp %v", a.Headers, resp.Header)
	}
	if a.Host != vip {
		t.Errorf("host %q", a.Host)
	}
	if ua, ok := a.Headers["User-Agent"]; ok && ua[0] != "Go-http-client/1.1" {
		t.Errorf("user agent changed: %q", ua)
	}

	// header match wins over the path rules
	resp, a = get(t, c, "http://"+vip+"/only/x", "X-Canary", "yes")
	if resp.StatusCode != 200 || a.Pod == v1 {
		t.Fatalf("canary went to %q (v1 %q)", a.Pod, v1)
	}

	// 1:1 weights: both get a fair share
	counts := map[string]int{}
	for range 200 {
		_, a := get(t, c, "http://"+vip+"/split")
		counts[a.Pod]++
	}
	if len(counts) != 2 || counts[v1] < 60 || counts[v1] > 140 {
		t.Errorf("split 1:1 gave %v", counts)
	}

	resp, _ = get(t, c, "http://"+vip+"/nothing")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("no match: %d", resp.StatusCode)
	}
	resp, _ = get(t, c, "http://"+vip+"/broken")
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("invalid backend: %d", resp.StatusCode)
	}
	resp, _ = get(t, c, "http://"+vip+"/redirect/a?b=c")
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "http://elsewhere.example/redirect/a?b=c" {
		t.Errorf("redirect: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestHTTPKeepAliveChunkedAndHopByHop(t *testing.T) {
	e, caller := routedEnv(t)
	conn := e.dial(caller, vip)
	defer conn.Close()
	br := bufio.NewReader(conn)
	// two requests on one connection; the second has a chunked body and
	// hop-by-hop headers that must not reach the backend
	fmt.Fprintf(conn, "GET /only/1 HTTP/1.1\r\nHost: web\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Fprintf(conn, "POST /only/2 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: secret\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("second: %v %v", resp, err)
	}
	var a echo.Answer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, h := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization", "Connection"} {
		if _, ok := a.Headers[h]; ok {
			t.Errorf("hop-by-hop %s reached the backend", h)
		}
	}
	if a.Method != "POST" || a.Path != "/only/2" {
		t.Errorf("answer %+v", a)
	}
}

func TestHTTPMalformedGets400AndClose(t *testing.T) {
	e, caller := routedEnv(t)
	conn := e.dial(caller, vip)
	defer conn.Close()
	conn.Write([]byte("GET /only HTTP/1.1\r\nHost: web\r\nBad Header\r\n\r\n"))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("connection not closed: %v", err)
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 400") {
		t.Fatalf("got %q", b)
	}
}

func TestConsumerTableOverridesProducer(t *testing.T) {
	e := newEnv(t)
	prod := e.httpPod("web", "web")
	cons := e.httpPod("web", "web")
	e.cluster("web/prod:80", weftv1.Protocol_PROTOCOL_HTTP, prod)
	e.cluster("web/cons:80", weftv1.Protocol_PROTOCOL_HTTP, cons)
	sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/prod:80")
	table := func(cl string) *weftv1.RouteTable {
		return &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
			Rules:   []*weftv1.Rule{{Route: "x/r", Backends: backends(cl, 1)}},
			Matches: []*weftv1.Match{{Rule: 0, Http: prefix("/")}}}
	}
	sp.Producer = table("web/prod:80")
	sp.Consumers = map[string]*weftv1.RouteTable{"blue": table("web/cons:80")}
	e.apply()
	_, a := get(t, e.client(e.caller("blue"), vip), "http://"+vip+"/")
	if a.Pod != cons.Pod {
		t.Errorf("consumer namespace went to %s, want %s", a.Pod, cons.Pod)
	}
	_, a = get(t, e.client(e.caller("green"), vip), "http://"+vip+"/")
	if a.Pod != prod.Pod {
		t.Errorf("other namespace went to %s, want %s", a.Pod, prod.Pod)
	}
}

func TestSessionCookieSticksThroughProxy(t *testing.T) {
	e := newEnv(t)
	var eps []*weftv1.Endpoint
	for range 4 {
		eps = append(eps, e.httpPod("web", "web"))
	}
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, eps...)
	sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules: []*weftv1.Rule{{Route: "web/r", Backends: backends("web/web:80", 1),
			Session: &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_COOKIE, Name: "sticky", Lifetime: weftv1.SessionPersistence_LIFETIME_SESSION}}},
		Matches: []*weftv1.Match{{Rule: 0, Http: prefix("/")}}}
	e.apply()
	c := e.client(e.caller("app"), vip)
	resp, first := get(t, c, "http://"+vip+"/")
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "sticky" {
			cookie = ck
		}
	}
	if cookie == nil {
		t.Fatalf("no session cookie in %v", resp.Header)
	}
	for range 20 {
		_, a := get(t, c, "http://"+vip+"/", "Cookie", "sticky="+cookie.Value)
		if a.Pod != first.Pod {
			t.Fatalf("session moved from %s to %s", first.Pod, a.Pod)
		}
	}
	// without the cookie requests spread
	seen := map[string]bool{}
	for range 40 {
		_, a := get(t, c, "http://"+vip+"/")
		seen[a.Pod] = true
	}
	if len(seen) < 2 {
		t.Errorf("without cookie all requests went to %v", seen)
	}
}

func TestTimeoutsAndRetries(t *testing.T) {
	e := newEnv(t)
	ep := e.httpPod("web", "web")
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	sp := e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	sp.Producer = &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
		Rules: []*weftv1.Rule{
			{Route: "web/r", Backends: backends("web/web:80", 1), RequestTimeout: dur(200 * time.Millisecond)},
			{Route: "web/r", Index: 1, Backends: backends("web/web:80", 1), Retry: &weftv1.Retry{Codes: []uint32{503}, Attempts: 2, Backoff: dur(time.Millisecond)}},
			{Route: "web/r", Index: 2, Backends: backends("web/web:80", 1), BackendRequestTimeout: dur(200 * time.Millisecond)},
		},
		Matches: []*weftv1.Match{{Rule: 0, Http: prefix("/slow")}, {Rule: 1, Http: prefix("/status")}, {Rule: 2, Http: prefix("/bslow")}}}
	e.apply()
	c := e.client(e.caller("app"), vip)
	start := time.Now()
	resp, _ := get(t, c, "http://"+vip+"/slow?delay=3s")
	if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > 2*time.Second {
		t.Errorf("request timeout: %d after %v", resp.StatusCode, time.Since(start))
	}
	start = time.Now()
	resp, _ = get(t, c, "http://"+vip+"/bslow?delay=3s")
	if resp.StatusCode != http.StatusGatewayTimeout || time.Since(start) > 2*time.Second {
		t.Errorf("backend request timeout: %d after %v", resp.StatusCode, time.Since(start))
	}
	resp, a := get(t, c, "http://"+vip+"/bslow?delay=10ms")
	if resp.StatusCode != 200 || a.Path != "/bslow?delay=10ms" {
		t.Errorf("fast enough request: %d", resp.StatusCode)
	}
	// the echo pod always answers 503 here: three tries, then the 503 is
	// passed on
	resp, _ = get(t, c, "http://"+vip+"/status/503")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("retried 503: %d", resp.StatusCode)
	}
}

func TestNoRecordIsRefused(t *testing.T) {
	e, _ := routedEnv(t)
	c, err := e.dialErr(424242, vip) // a cookie no caller has
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	// closed at once (EOF, or a reset since our request was never read)
	b, err := io.ReadAll(c)
	if len(b) != 0 || (err != nil && !errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("unknown caller got %q %v", b, err)
	}
}

func TestBadPolicyKeepsPrevious(t *testing.T) {
	e, caller := routedEnv(t)
	bad := &weftv1.NodePolicy{Node: node, TrustDomain: "cluster.local", NodeTunnels: e.pol.NodeTunnels,
		Services: []*weftv1.ServicePort{{Namespace: "web", Name: "web", Vips: []string{"not-an-ip"}, Port: 80}}}
	if err := e.p.Update(bad); err == nil {
		t.Fatal("bad policy accepted")
	}
	bad = &weftv1.NodePolicy{Node: node, TrustDomain: "cluster.local", NodeTunnels: e.pol.NodeTunnels,
		Services: []*weftv1.ServicePort{{Namespace: "web", Name: "web", Vips: []string{"10.96.0.10"}, Port: 80,
			Producer: &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP, Matches: []*weftv1.Match{{Rule: 7}}}}}}
	if err := e.p.Update(bad); err == nil {
		t.Fatal("table with a dangling match accepted")
	}
	if err := e.p.Update(&weftv1.NodePolicy{Node: "other"}); err == nil {
		t.Fatal("policy of another node accepted")
	}
	resp, _ := get(t, e.client(caller, vip), "http://"+vip+"/only")
	if resp.StatusCode != 200 {
		t.Fatalf("previous policy lost: %d", resp.StatusCode)
	}
}

// A streamed answer reaches the client as it comes (the proxy's delayed
// flush), and trailers, announced or not, survive even when the whole
// answer is in before the proxy's first flush.
func TestHTTPStreamedAnswersAndTrailers(t *testing.T) {
	e := newEnv(t)
	next := make(chan struct{})
	ep := e.handlerPod("web", "web", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			select {
			case <-next: // the client read "first"
			case <-time.After(5 * time.Second):
			}
			io.WriteString(w, "second\n")
		case "/trailers":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, "body")
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		}
	})
	e.cluster("web/web:80", weftv1.Protocol_PROTOCOL_HTTP, ep)
	e.service("web", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "web/web:80")
	e.apply()
	c := e.client(e.caller("app"), vip)

	resp, err := c.Get("http://" + vip + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	got := make(chan string, 1)
	go func() { l, _ := br.ReadString('\n'); got <- l }()
	select {
	case l := <-got:
		if l != "first\n" {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the first chunk did not reach the client while the backend held the rest")
	}
	close(next)
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	if string(rest) != "second\n" {
		t.Fatalf("rest %q", rest)
	}

	for range 20 { // the answer is complete at once: no flush ran before the end
		resp, err = c.Get("http://" + vip + "/trailers")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "body" || resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Late") != "yes" {
			t.Fatalf("body %q trailers %v", body, resp.Trailer)
		}
	}
}
