package route

import (
	"net/http"
	"strings"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func corsRule(name string, c *weftv1.CORS) *weftv1.Rule {
	r := rule(name, be("infra-backend-v1", 1))
	r.Filters = []*weftv1.Filter{{Kind: &weftv1.Filter_Cors{Cors: c}}}
	return r
}

// conformance/tests/httproute-cors.{yaml,go} (v1.7.0).
func corsTable(t *testing.T) *Table {
	return mustCompile(t, httpTable([]*weftv1.Rule{
		corsRule("cors-1", &weftv1.CORS{
			AllowOrigins:     []string{"https://www.foo.com", "https://*.bar.com"},
			AllowMethods:     []string{"GET", "OPTIONS"},
			AllowHeaders:     []string{"x-header-1", "x-header-2"},
			ExposeHeaders:    []string{"x-header-3", "x-header-4"},
			AllowCredentials: true,
			MaxAgeSeconds:    3600,
		}),
		corsRule("cors-2", &weftv1.CORS{AllowOrigins: []string{"https://www.foo.com"}, AllowMethods: []string{"*"}}),
		corsRule("wildcard-origin", &weftv1.CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"PUT"}}),
		corsRule("wildcard-creds", &weftv1.CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}, AllowCredentials: true}),
		corsRule("wildcard-unauth", &weftv1.CORS{AllowOrigins: []string{"*"}, AllowMethods: []string{"*"}, AllowHeaders: []string{"*"}}),
	},
		hm(0, pathM(prefix, "/cors-1")),
		hm(1, pathM(prefix, "/cors-2")),
		hm(2, pathM(prefix, "/cors-wildcard-origin")),
		hm(4, pathM(prefix, "/cors-wildcard-methods-headers-unauth")),
		hm(3, pathM(prefix, "/cors-wildcard-methods-headers")),
	))
}

type corsCase struct {
	name    string
	method  string
	path    string
	headers []string
	// preflight: the proxy answers with one of these statuses
	preflight bool
	want      map[string]string // header -> value; "" means absent
}

func TestCORSConformance(t *testing.T) {
	tb := corsTable(t)
	withOrigin := func(o string, rest ...string) []string {
		return append([]string{"Origin", o}, rest...)
	}
	cases := []corsCase{
		{
			name: "preflight exact origin", method: "OPTIONS", path: "/cors-1", preflight: true,
			headers: withOrigin("https://www.foo.com", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "x-header-1, x-header-2"),
			want: map[string]string{
				"Access-Control-Allow-Origin":      "https://www.foo.com",
				"Access-Control-Allow-Methods":     "GET, OPTIONS",
				"Access-Control-Allow-Headers":     "x-header-1, x-header-2",
				"Access-Control-Expose-Headers":    "x-header-3, x-header-4",
				"Access-Control-Max-Age":           "3600",
				"Access-Control-Allow-Credentials": "true",
			},
		},
		{
			name: "preflight wildcard origin", method: "OPTIONS", path: "/cors-1", preflight: true,
			headers: withOrigin("https://www.bar.com", "Access-Control-Request-Method", "GET"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://www.bar.com", "Access-Control-Allow-Credentials": "true"},
		},
		{
			name: "preflight wildcard several labels", method: "OPTIONS", path: "/cors-1", preflight: true,
			headers: withOrigin("https://xpto.www.bar.com", "Access-Control-Request-Method", "GET"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://xpto.www.bar.com"},
		},
		{
			name: "preflight non-matching origin", method: "OPTIONS", path: "/cors-1", preflight: true,
			headers: withOrigin("https://foobar.com", "Access-Control-Request-Method", "GET"),
			want:    map[string]string{"Access-Control-Allow-Origin": "", "Access-Control-Allow-Methods": ""},
		},
		{
			name: "preflight wildcard does not match the bare domain", method: "OPTIONS", path: "/cors-1", preflight: true,
			headers: withOrigin("https://bar.com", "Access-Control-Request-Method", "GET"),
			want:    map[string]string{"Access-Control-Allow-Origin": ""},
		},
		{
			name: "preflight wrong scheme", method: "OPTIONS", path: "/cors-1", preflight: true,
			headers: withOrigin("http://www.foo.com", "Access-Control-Request-Method", "GET"),
			want:    map[string]string{"Access-Control-Allow-Origin": ""},
		},
		{
			name: "preflight default port is implied", method: "OPTIONS", path: "/cors-1", preflight: true,
			headers: withOrigin("https://www.foo.com:443", "Access-Control-Request-Method", "GET"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com:443"},
		},
		{
			name: "simple request exact origin", method: "GET", path: "/cors-1",
			headers: withOrigin("https://www.foo.com"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-header-3, x-header-4"},
		},
		{
			name: "simple request wildcard origin", method: "GET", path: "/cors-1",
			headers: withOrigin("https://www.bar.com"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://www.bar.com"},
		},
		{
			name: "simple request non-matching origin", method: "GET", path: "/cors-1",
			headers: withOrigin("https://foobar.com"),
			want:    map[string]string{"Access-Control-Allow-Origin": ""},
		},
		{
			name: "preflight POST with wildcard methods", method: "OPTIONS", path: "/cors-2", preflight: true,
			headers: withOrigin("https://www.foo.com", "Access-Control-Request-Method", "POST"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com", "Access-Control-Allow-Methods": "POST", "Access-Control-Allow-Credentials": "", "Access-Control-Max-Age": "5"},
		},
		{
			name: "preflight wildcard origin", method: "OPTIONS", path: "/cors-wildcard-origin", preflight: true,
			headers: withOrigin("https://foobar.com:12345", "Access-Control-Request-Method", "PUT"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://foobar.com:12345", "Access-Control-Allow-Methods": "PUT", "Access-Control-Allow-Credentials": ""},
		},
		{
			name: "request wildcard origin", method: "PUT", path: "/cors-wildcard-origin",
			headers: withOrigin("https://foobar.com"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://foobar.com", "Access-Control-Allow-Credentials": ""},
		},
		{
			name: "preflight wildcards with credentials echo", method: "OPTIONS", path: "/cors-wildcard-methods-headers", preflight: true,
			headers: withOrigin("https://other.foo.com", "Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "x-header-1, x-header-2"),
			want: map[string]string{
				"Access-Control-Allow-Origin":      "https://other.foo.com",
				"Access-Control-Allow-Methods":     "PUT",
				"Access-Control-Allow-Headers":     "x-header-1, x-header-2",
				"Access-Control-Allow-Credentials": "true",
			},
		},
		{
			name: "preflight wildcards without credentials", method: "OPTIONS", path: "/cors-wildcard-methods-headers-unauth", preflight: true,
			headers: withOrigin("https://other.foo.com", "Access-Control-Request-Method", "PUT", "Access-Control-Request-Headers", "x-header-1, x-header-2"),
			want: map[string]string{
				"Access-Control-Allow-Origin":      "https://other.foo.com",
				"Access-Control-Allow-Methods":     "PUT",
				"Access-Control-Allow-Headers":     "x-header-1, x-header-2",
				"Access-Control-Allow-Credentials": "",
			},
		},
		{
			name: "request with credentials", method: "GET", path: "/cors-wildcard-methods-headers",
			headers: withOrigin("https://other.foo.com"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://other.foo.com", "Access-Control-Allow-Credentials": "true"},
		},
		{
			name: "OPTIONS without request method is not a preflight", method: "OPTIONS", path: "/cors-1",
			headers: withOrigin("https://www.foo.com"),
			want:    map[string]string{"Access-Control-Allow-Origin": "https://www.foo.com"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := hdr(c.headers...)
			d, ok := tb.Select(&Request{Method: c.method, Path: c.path, Header: h})
			if !ok {
				t.Fatal("no match")
			}
			p, err := d.Process(&HTTPRequest{Scheme: "http", Host: "gw", Port: 80, Path: c.path, Method: c.method, Header: h}, seq())
			if err != nil {
				t.Fatal(err)
			}
			var got http.Header
			if c.preflight {
				if p.Answer == nil || (p.Answer.Status != 204 && p.Answer.Status != 200) || p.Backend != nil {
					t.Fatalf("preflight not answered by the proxy: %+v", p)
				}
				got = p.Answer.Header
			} else {
				if p.Answer != nil || p.Backend == nil {
					t.Fatalf("request not forwarded: %+v", p)
				}
				got = make(http.Header)
				p.ApplyResponse(got)
			}
			for k, v := range c.want {
				if v == "" {
					if _, present := got[k]; present {
						t.Errorf("%s present: %q", k, got[k])
					}
					continue
				}
				if strings.Join(got[k], ",") != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestCORSExposeWildcard(t *testing.T) {
	withCreds, err := compileCORS([]string{"*"}, true, nil, nil, []string{"*", "x-a"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	noCreds, err := compileCORS([]string{"*"}, false, nil, nil, []string{"*"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	h := make(http.Header)
	withCreds.responseHeaders("https://a.example", h)
	if got := h.Get("Access-Control-Expose-Headers"); got != "x-a" {
		t.Errorf("with credentials: %q, want x-a (no *)", got)
	}
	h = make(http.Header)
	noCreds.responseHeaders("https://a.example", h)
	if got := h.Get("Access-Control-Expose-Headers"); got != "*" {
		t.Errorf("without credentials: %q, want *", got)
	}
}

func TestCORSOriginParsing(t *testing.T) {
	bad := []string{"foo.com", "ftp://foo.com", "https://", "https://foo.com/path", "https://foo.com:0", "https://foo.com:99999", "https://a.*.com", "https://*.", "https://*.*.com"}
	for _, o := range bad {
		if _, err := compileCORS([]string{o}, false, nil, nil, nil, 0); err == nil {
			t.Errorf("origin %q accepted", o)
		}
	}
	c, err := compileCORS([]string{"http://*:8080", "https://FOO.com"}, false, nil, nil, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]bool{
		"http://any.host:8080": true,
		"http://any.host":      false,
		"https://foo.com":      true, // hosts are case-insensitive
		"HTTPS://Foo.Com:443":  true,
		"null":                 false,
		"":                     false,
		"https://foo.com:abc":  false,
	} {
		if got := c.originAllowed(origin); got != want {
			t.Errorf("%q: %v, want %v", origin, got, want)
		}
	}
}
