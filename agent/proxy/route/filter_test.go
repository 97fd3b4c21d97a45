package route

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// The HTTPPathModifier ReplacePrefixMatch table from the Gateway API
// (apis/v1/httproute_types.go, v1.7.0), row by row.
func TestPathModifierPrefixSpecTable(t *testing.T) {
	cases := []struct{ path, prefix, repl, want string }{
		{"/foo/bar", "/foo", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo", "/xyz/", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz", "/xyz/bar"},
		{"/foo/bar", "/foo/", "/xyz/", "/xyz/bar"},
		{"/foo", "/foo", "/xyz", "/xyz"},
		{"/foo/", "/foo", "/xyz", "/xyz/"},
		{"/foo/bar", "/foo", "", "/bar"},
		{"/foo/", "/foo", "", "/"},
		{"/foo", "/foo", "", "/"},
		{"/foo/", "/foo", "/", "/"},
		{"/foo", "/foo", "/", "/"},
	}
	for _, c := range cases {
		m := &PathModifier{Kind: PathPrefix, Value: c.repl}
		if got := m.Apply(c.path, normalisePrefix(c.prefix)); got != c.want {
			t.Errorf("%s prefix %s repl %q: got %q, want %q", c.path, c.prefix, c.repl, got, c.want)
		}
	}
	// Root prefix: the replacement is put in front.
	if got := (&PathModifier{Kind: PathPrefix, Value: "/v2"}).Apply("/a/b", "/"); got != "/v2/a/b" {
		t.Errorf("root prefix: got %q", got)
	}
}

func rewriteRule(name, repl string, typ weftv1.PathModifier_Type, extra ...*weftv1.Filter) *weftv1.Rule {
	r := rule(name, be("echo-v1", 1))
	r.Filters = append([]*weftv1.Filter{{Kind: &weftv1.Filter_UrlRewrite{UrlRewrite: &weftv1.URLRewrite{
		Path: &weftv1.PathModifier{Type: typ, Value: repl}}}}}, extra...)
	return r
}

func headerModFilter() *weftv1.Filter {
	return &weftv1.Filter{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &weftv1.HeaderModifier{
		Set:    []*weftv1.HeaderModifier_Header{{Name: "X-Header-Set", Value: "set-overwrites-values"}},
		Add:    []*weftv1.HeaderModifier_Header{{Name: "X-Header-Add", Value: "header-val-1"}, {Name: "X-Header-Add-Append", Value: "header-val-2"}},
		Remove: []string{"X-Header-Remove"},
	}}}
}

// conformance/tests/mesh/httproute-rewrite-path.{yaml,go} (v1.7.0).
func TestMeshHTTPRouteRewritePath(t *testing.T) {
	full, pre := weftv1.PathModifier_TYPE_FULL, weftv1.PathModifier_TYPE_PREFIX
	tb := mustCompile(t, httpTable([]*weftv1.Rule{
		rewriteRule("prefix-one", "/one", pre),
		rewriteRule("strip", "/", pre),
		rewriteRule("full-one", "/one", full),
		rewriteRule("full-headers", "/test", full, headerModFilter()),
		rewriteRule("prefix-headers", "/prefix", pre, headerModFilter()),
	},
		// Sorted by precedence (longest prefix first).
		hm(3, pathM(prefix, "/full/rewrite-path-and-modify-headers")),
		hm(4, pathM(prefix, "/prefix/rewrite-path-and-modify-headers")),
		hm(1, pathM(prefix, "/strip-prefix")),
		hm(0, pathM(prefix, "/prefix/one")),
		hm(2, pathM(prefix, "/full/one")),
	))
	reqHeaders := []string{"X-Header-Remove", "remove-val", "X-Header-Add-Append", "append-val-1", "X-Header-Set", "set-val"}
	wantHeaders := http.Header{
		"X-Header-Add":        {"header-val-1"},
		"X-Header-Add-Append": {"append-val-1", "header-val-2"},
		"X-Header-Set":        {"set-overwrites-values"},
	}
	cases := []struct {
		path, want string
		headers    bool
	}{
		{"/prefix/one/two", "/one/two", false},
		{"/strip-prefix/three", "/three", false},
		{"/strip-prefix", "/", false},
		{"/full/one/two", "/one", false},
		{"/full/rewrite-path-and-modify-headers/test", "/test", true},
		{"/prefix/rewrite-path-and-modify-headers/one", "/prefix/one", true},
		{"/prefix/one/two?q=1", "/one/two?q=1", false}, // the query is kept
	}
	for _, c := range cases {
		h := hdr()
		if c.headers {
			h = hdr(reqHeaders...)
		}
		d, ok := tb.Select(&Request{Method: "GET", Path: c.path, Header: h})
		if !ok {
			t.Fatalf("%s: no match", c.path)
		}
		req := &HTTPRequest{Scheme: "http", Host: "echo", Port: 80, Path: c.path, Method: "GET", Header: h}
		p, err := d.Process(req, seq())
		if err != nil || p.Answer != nil || p.Backend == nil || p.Backend.Cluster != "echo-v1" {
			t.Fatalf("%s: plan %+v err %v", c.path, p, err)
		}
		if req.Path != c.want {
			t.Errorf("%s: rewritten to %q, want %q", c.path, req.Path, c.want)
		}
		if req.Host != "echo" {
			t.Errorf("%s: host changed to %q", c.path, req.Host)
		}
		if c.headers && !reflect.DeepEqual(req.Header, wantHeaders) {
			t.Errorf("%s: headers %v, want %v", c.path, req.Header, wantHeaders)
		}
	}
}

func TestRewriteHostname(t *testing.T) {
	r := rule("r", be("c", 1))
	r.Filters = []*weftv1.Filter{{Kind: &weftv1.Filter_UrlRewrite{UrlRewrite: &weftv1.URLRewrite{Hostname: "elsewhere.example"}}}}
	tb := mustCompile(t, httpTable([]*weftv1.Rule{r}, hm(0, pathM(prefix, "/"))))
	d, _ := tb.Select(&Request{Path: "/a?b"})
	req := &HTTPRequest{Host: "echo:8080", Path: "/a?b", Header: hdr()}
	if _, err := d.Process(req, seq()); err != nil {
		t.Fatal(err)
	}
	if req.Host != "elsewhere.example" || req.Path != "/a?b" {
		t.Fatalf("host %q path %q", req.Host, req.Path)
	}
}

func redirectRule(name string, rr *weftv1.RequestRedirect) *weftv1.Rule {
	r := rule(name) // a redirect rule needs no backend
	r.Filters = []*weftv1.Filter{{Kind: &weftv1.Filter_RequestRedirect{RequestRedirect: rr}}}
	return r
}

type redirectCase struct {
	path     string
	port     uint32 // Service ("listener") port
	status   int
	location string
}

func runRedirects(t *testing.T, tb *Table, cases []redirectCase) {
	t.Helper()
	for _, c := range cases {
		d, ok := tb.Select(&Request{Method: "GET", Path: c.path})
		if !ok {
			t.Fatalf("%s: no match", c.path)
		}
		port := c.port
		if port == 0 {
			port = 80
		}
		p, err := d.Process(&HTTPRequest{Scheme: "http", Host: "echo", Port: port, Path: c.path, Method: "GET", Header: hdr()}, seq())
		if err != nil || p.Answer == nil {
			t.Fatalf("%s: plan %+v err %v", c.path, p, err)
		}
		if p.Answer.Status != c.status || p.Answer.Header.Get("Location") != c.location {
			t.Errorf("%s: %d %q, want %d %q", c.path, p.Answer.Status, p.Answer.Header.Get("Location"), c.status, c.location)
		}
		if p.Backend != nil {
			t.Errorf("%s: a rule-level redirect picked a backend", c.path)
		}
	}
}

func pm(t weftv1.PathModifier_Type, v string) *weftv1.PathModifier {
	return &weftv1.PathModifier{Type: t, Value: v}
}

// conformance/tests/mesh/httproute-redirect-path (v1.7.0).
func TestMeshHTTPRouteRedirectPath(t *testing.T) {
	full, pre := weftv1.PathModifier_TYPE_FULL, weftv1.PathModifier_TYPE_PREFIX
	tb := mustCompile(t, httpTable([]*weftv1.Rule{
		redirectRule("original-prefix", &weftv1.RequestRedirect{Path: pm(pre, "/replacement-prefix")}),
		redirectRule("full", &weftv1.RequestRedirect{Path: pm(full, "/full-path-replacement")}),
		redirectRule("path-and-host", &weftv1.RequestRedirect{Hostname: "example.org", Path: pm(pre, "/replacement-prefix")}),
		redirectRule("path-and-status", &weftv1.RequestRedirect{Path: pm(pre, "/replacement-prefix"), StatusCode: 301}),
		redirectRule("full-path-and-host", &weftv1.RequestRedirect{Hostname: "example.org", Path: pm(full, "/replacement-full")}),
		redirectRule("full-path-and-status", &weftv1.RequestRedirect{Path: pm(full, "/replacement-full"), StatusCode: 301}),
	},
		hm(5, pathM(prefix, "/full-path-and-status")),
		hm(4, pathM(prefix, "/full-path-and-host")),
		hm(0, pathM(prefix, "/original-prefix")),
		hm(3, pathM(prefix, "/path-and-status")),
		hm(2, pathM(prefix, "/path-and-host")),
		hm(1, pathM(prefix, "/full")),
	))
	runRedirects(t, tb, []redirectCase{
		{path: "/original-prefix/lemon", status: 302, location: "http://echo/replacement-prefix/lemon"},
		{path: "/full/path/original", status: 302, location: "http://echo/full-path-replacement"},
		{path: "/path-and-host", status: 302, location: "http://example.org/replacement-prefix"},
		{path: "/path-and-status", status: 301, location: "http://echo/replacement-prefix"},
		{path: "/full-path-and-host", status: 302, location: "http://example.org/replacement-full"},
		{path: "/full-path-and-status", status: 301, location: "http://echo/replacement-full"},
		{path: "/original-prefix/lemon?x=1&y", status: 302, location: "http://echo/replacement-prefix/lemon?x=1&y"},
	})
}

// conformance/tests/mesh/httproute-redirect-{port,scheme,host-and-status}
// and the Gateway test httproute-redirect-port-and-scheme (v1.7.0).
func TestRedirectPortSchemeHost(t *testing.T) {
	tb := mustCompile(t, httpTable([]*weftv1.Rule{
		redirectRule("port", &weftv1.RequestRedirect{Port: 8083}),
		redirectRule("port-and-host", &weftv1.RequestRedirect{Hostname: "example.org", Port: 8083}),
		redirectRule("port-and-status", &weftv1.RequestRedirect{Port: 8083, StatusCode: 301}),
		redirectRule("scheme", &weftv1.RequestRedirect{Scheme: "https"}),
		redirectRule("scheme-and-host", &weftv1.RequestRedirect{Scheme: "https", Hostname: "example.org"}),
		redirectRule("scheme-and-status", &weftv1.RequestRedirect{Scheme: "https", StatusCode: 301}),
		redirectRule("hostname", &weftv1.RequestRedirect{Hostname: "example.org"}),
		redirectRule("host-and-status", &weftv1.RequestRedirect{Hostname: "example.org", StatusCode: 301}),
		redirectRule("https-8443", &weftv1.RequestRedirect{Scheme: "https", Port: 8443}),
		redirectRule("https-443", &weftv1.RequestRedirect{Scheme: "https", Port: 443}),
		redirectRule("http-80", &weftv1.RequestRedirect{Port: 80}),
		redirectRule("http-8080", &weftv1.RequestRedirect{Scheme: "http", Port: 8080}),
		redirectRule("s307", &weftv1.RequestRedirect{StatusCode: 307}),
		redirectRule("s308", &weftv1.RequestRedirect{StatusCode: 308}),
		redirectRule("s303", &weftv1.RequestRedirect{StatusCode: 303}),
	},
		hm(0, pathM(exact, "/port")),
		hm(1, pathM(exact, "/port-and-host")),
		hm(2, pathM(exact, "/port-and-status")),
		hm(3, pathM(exact, "/scheme")),
		hm(4, pathM(exact, "/scheme-and-host")),
		hm(5, pathM(exact, "/scheme-and-status")),
		hm(6, pathM(exact, "/hostname-redirect")),
		hm(7, pathM(exact, "/host-and-status")),
		hm(8, pathM(exact, "/https-8443")),
		hm(9, pathM(exact, "/https-443")),
		hm(10, pathM(exact, "/http-80")),
		hm(11, pathM(exact, "/http-8080")),
		hm(12, pathM(exact, "/s307")),
		hm(13, pathM(exact, "/s308")),
		hm(14, pathM(exact, "/s303")),
	))
	runRedirects(t, tb, []redirectCase{
		{path: "/port", status: 302, location: "http://echo:8083/port"},
		{path: "/port-and-host", status: 302, location: "http://example.org:8083/port-and-host"},
		{path: "/port-and-status", status: 301, location: "http://echo:8083/port-and-status"},
		{path: "/scheme", status: 302, location: "https://echo/scheme"},
		// A scheme change uses the scheme's well-known port, not the Service port.
		{path: "/scheme", port: 8080, status: 302, location: "https://echo/scheme"},
		{path: "/scheme-and-host", status: 302, location: "https://example.org/scheme-and-host"},
		{path: "/scheme-and-status", status: 301, location: "https://echo/scheme-and-status"},
		{path: "/hostname-redirect", status: 302, location: "http://example.org/hostname-redirect"},
		// No scheme, no port: the listener (Service) port.
		{path: "/hostname-redirect", port: 8080, status: 302, location: "http://example.org:8080/hostname-redirect"},
		{path: "/host-and-status", status: 301, location: "http://example.org/host-and-status"},
		{path: "/https-8443", status: 302, location: "https://echo:8443/https-8443"},
		{path: "/https-443", status: 302, location: "https://echo/https-443"},
		{path: "/http-80", port: 8080, status: 302, location: "http://echo/http-80"},
		{path: "/http-8080", status: 302, location: "http://echo:8080/http-8080"},
		{path: "/s307", status: 307, location: "http://echo/s307"},
		{path: "/s308", status: 308, location: "http://echo/s308"},
		{path: "/s303", status: 303, location: "http://echo/s303"},
	})
}

func TestRedirectHostFromRequest(t *testing.T) {
	r := &Redirect{StatusCode: 302}
	cases := []struct {
		req  HTTPRequest
		want string
	}{
		// Unknown Service port: the Host header's port.
		{HTTPRequest{Host: "echo:9090", Path: "/a"}, "http://echo:9090/a"},
		{HTTPRequest{Host: "[fd00::1]:8080", Port: 8080, Path: "/a"}, "http://[fd00::1]:8080/a"},
		{HTTPRequest{Host: "[fd00::1]", Port: 80, Path: "/a"}, "http://[fd00::1]/a"},
		{HTTPRequest{Scheme: "https", Host: "echo", Port: 443, Path: "/a"}, "https://echo/a"},
		{HTTPRequest{Host: "echo", Port: 80, Path: ""}, "http://echo/"},
	}
	for _, c := range cases {
		if got, _ := r.Location(&c.req, ""); got != c.want {
			t.Errorf("%+v: got %q, want %q", c.req, got, c.want)
		}
	}
}

func TestHeaderModifiers(t *testing.T) {
	req := rule("r", be("c", 1))
	req.Filters = []*weftv1.Filter{
		headerModFilter(),
		{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &weftv1.HeaderModifier{
			Set:    []*weftv1.HeaderModifier_Header{{Name: "x-resp-set", Value: "rule"}},
			Add:    []*weftv1.HeaderModifier_Header{{Name: "X-Resp-Add", Value: "rule"}},
			Remove: []string{"x-resp-remove"},
		}}},
	}
	// Backend-level modifiers run after the rule's.
	req.Backends[0].Filters = []*weftv1.Filter{
		{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &weftv1.HeaderModifier{
			Set: []*weftv1.HeaderModifier_Header{{Name: "x-header-set", Value: "backend"}},
		}}},
		{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &weftv1.HeaderModifier{
			Add: []*weftv1.HeaderModifier_Header{{Name: "x-resp-add", Value: "backend"}},
		}}},
	}
	tb := mustCompile(t, httpTable([]*weftv1.Rule{req}, hm(0, nil)))
	d, _ := tb.Select(&Request{Path: "/"})
	in := hdr("X-Header-Remove", "x", "X-Header-Set", "old", "X-Header-Set", "older", "x-header-add-append", "a")
	hr := &HTTPRequest{Path: "/", Header: in}
	p, err := d.Process(hr, seq())
	if err != nil {
		t.Fatal(err)
	}
	wantReq := http.Header{
		"X-Header-Set":        {"backend"},
		"X-Header-Add":        {"header-val-1"},
		"X-Header-Add-Append": {"a", "header-val-2"},
	}
	if !reflect.DeepEqual(hr.Header, wantReq) {
		t.Errorf("request headers %v, want %v", hr.Header, wantReq)
	}
	resp := hdr("X-Resp-Remove", "gone", "X-Resp-Set", "backend-value", "X-Resp-Add", "orig")
	p.ApplyResponse(resp)
	wantResp := http.Header{"X-Resp-Set": {"rule"}, "X-Resp-Add": {"orig", "rule", "backend"}}
	if !reflect.DeepEqual(resp, wantResp) {
		t.Errorf("response headers %v, want %v", resp, wantResp)
	}
}

func TestMirror(t *testing.T) {
	cases := []struct {
		num, den uint32
		want     int // mirrored out of 1000 with a sequential source
	}{
		{100, 100, 1000},
		{1, 2, 500},
		{25, 100, 250},
		{0, 100, 0},
		{3, 1000, 3},
	}
	for _, c := range cases {
		r := rule("r", be("c", 1))
		r.Filters = []*weftv1.Filter{{Kind: &weftv1.Filter_RequestMirror{RequestMirror: &weftv1.RequestMirror{Cluster: "mirror", Numerator: c.num, Denominator: c.den}}}}
		tb := mustCompile(t, httpTable([]*weftv1.Rule{r}, hm(0, nil)))
		d, _ := tb.Select(&Request{Path: "/"})
		rnd := seq()
		got := 0
		for range 1000 {
			p, err := d.Process(&HTTPRequest{Path: "/", Header: hdr()}, rnd)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Mirrors) == 1 && p.Mirrors[0] == "mirror" {
				got++
			}
			if p.Backend.Cluster != "c" {
				t.Fatalf("mirror changed the backend to %q", p.Backend.Cluster)
			}
		}
		if got != c.want {
			t.Errorf("%d/%d: mirrored %d of 1000, want %d", c.num, c.den, got, c.want)
		}
	}
}

func TestProcessErrors(t *testing.T) {
	var zero Decision
	if _, err := zero.Process(&HTTPRequest{}, seq()); !errors.Is(err, ErrNoBackend) {
		t.Fatalf("zero decision: %v", err)
	}
	tb := mustCompile(t, httpTable([]*weftv1.Rule{rule("r", be("a", 0))}, hm(0, nil)))
	d, _ := tb.Select(&Request{Path: "/"})
	if _, err := d.Process(&HTTPRequest{Path: "/"}, seq()); !errors.Is(err, ErrNoBackend) {
		t.Fatalf("err %v, want ErrNoBackend", err)
	}
}

// A redirect on a backend runs after the backend is picked.
func TestBackendLevelRedirect(t *testing.T) {
	r := rule("r", be("a", 1), be("b", 1))
	r.Backends[1].Filters = []*weftv1.Filter{{Kind: &weftv1.Filter_RequestRedirect{RequestRedirect: &weftv1.RequestRedirect{Hostname: "b.example"}}}}
	tb := mustCompile(t, httpTable([]*weftv1.Rule{r}, hm(0, nil)))
	d, _ := tb.Select(&Request{Path: "/x"})
	rnd := seq()
	p1, _ := d.Process(&HTTPRequest{Host: "svc", Port: 80, Path: "/x"}, rnd)
	p2, _ := d.Process(&HTTPRequest{Host: "svc", Port: 80, Path: "/x"}, rnd)
	if p1.Answer != nil || p1.Backend.Cluster != "a" {
		t.Errorf("first: %+v", p1)
	}
	if p2.Answer == nil || p2.Answer.Header.Get("Location") != "http://b.example/x" {
		t.Errorf("second: %+v", p2)
	}
}

func TestProcessNilHeader(t *testing.T) {
	r := rule("r", be("a", 1))
	r.Filters = []*weftv1.Filter{headerModFilter()}
	tb := mustCompile(t, httpTable([]*weftv1.Rule{r}, hm(0, nil)))
	d, _ := tb.Select(&Request{Path: "/"})
	hr := &HTTPRequest{Path: "/"}
	if _, err := d.Process(hr, seq()); err != nil || !strings.EqualFold(hr.Header.Get("X-Header-Set"), "set-overwrites-values") {
		t.Fatalf("err %v header %v", err, hr.Header)
	}
}
