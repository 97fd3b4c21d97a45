package route

import (
	"net/url"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func TestSelectPathSemantics(t *testing.T) {
	rules := []*weftv1.Rule{rule("exact-foo"), rule("prefix-foo"), rule("prefix-slash-bar"), rule("regex"), rule("root")}
	tb := mustCompile(t, httpTable(rules,
		hm(0, pathM(exact, "/foo")),
		hm(1, pathM(prefix, "/foo")),
		hm(2, pathM(prefix, "/bar/")), // trailing slash ignored
		hm(3, pathM(regex, "/r/[0-9]+")),
		hm(4, pathM(prefix, "/")),
	))
	cases := []struct {
		path, want string
	}{
		{"/foo", "exact-foo"},
		{"/foo?x=1", "exact-foo"},
		{"/foo/", "prefix-foo"},
		{"/foo/bar", "prefix-foo"},
		{"/foo//bar", "prefix-foo"},
		{"/foobar", "root"},
		{"/Foo", "root"}, // case-sensitive
		{"/bar", "prefix-slash-bar"},
		{"/bar/", "prefix-slash-bar"},
		{"/bar/baz", "prefix-slash-bar"},
		{"/barn", "root"},
		{"/r/123", "regex"},
		{"/r/123/x", "root"}, // regex is a full match
		{"/r/12a", "root"},
		{"/", "root"},
		{"*", "root"},
		{"", "root"},
	}
	for _, c := range cases {
		if got := selectName(tb, &Request{Method: "GET", Path: c.path}); got != c.want {
			t.Errorf("path %q: got %q, want %q", c.path, got, c.want)
		}
	}
}

func TestSelectNoMatch(t *testing.T) {
	tb := mustCompile(t, httpTable([]*weftv1.Rule{rule("a")}, hm(0, pathM(exact, "/a"))))
	if d, ok := tb.Select(&Request{Method: "GET", Path: "/b"}); ok {
		t.Fatalf("got %+v, want no match", d)
	}
	var nilTable *Table
	if _, ok := nilTable.Select(&Request{Path: "/"}); ok {
		t.Fatal("nil table matched")
	}
}

// The controller sorts matches; Select must honour the given order across
// the exact, prefix and "always" candidate lists.
func TestSelectFollowsGivenOrderAcrossIndexes(t *testing.T) {
	rules := []*weftv1.Rule{rule("regex-first"), rule("exact"), rule("long-prefix"), rule("short-prefix"), rule("any")}
	tb := mustCompile(t, httpTable(rules,
		hm(0, pathM(regex, "/a/b/c"), withMethod("POST")),
		hm(1, pathM(exact, "/a/b/c")),
		hm(2, pathM(prefix, "/a/b")),
		hm(3, pathM(prefix, "/a")),
		&weftv1.Match{Rule: 4}, // no HTTP match: every request
	))
	cases := []struct {
		method, path, want string
	}{
		{"POST", "/a/b/c", "regex-first"},
		{"GET", "/a/b/c", "exact"},
		{"GET", "/a/b/c/d", "long-prefix"},
		{"GET", "/a/b", "long-prefix"},
		{"GET", "/a/x", "short-prefix"},
		{"GET", "/z", "any"},
	}
	for _, c := range cases {
		if got := selectName(tb, &Request{Method: c.method, Path: c.path}); got != c.want {
			t.Errorf("%s %s: got %q, want %q", c.method, c.path, got, c.want)
		}
	}
}

// Gateway API precedence, as the controller orders it: exact path, longest
// prefix, method, most headers, most query params. Given that order, each
// tie-breaker must decide.
func TestSelectPrecedenceRules(t *testing.T) {
	rules := []*weftv1.Rule{
		rule("exact"), rule("prefix-long"), rule("method+2hdr+q"), rule("method+2hdr"),
		rule("method+1hdr"), rule("method"), rule("2hdr"), rule("1hdr+2q"), rule("1hdr+1q"), rule("1hdr"), rule("prefix"),
	}
	tb := mustCompile(t, httpTable(rules,
		hm(0, pathM(exact, "/p")),
		hm(1, pathM(prefix, "/p/long")),
		hm(2, pathM(prefix, "/p"), withMethod("GET"), withHeader(exact, "a", "1"), withHeader(exact, "b", "1"), withQuery(exact, "q", "1")),
		hm(3, pathM(prefix, "/p"), withMethod("GET"), withHeader(exact, "a", "1"), withHeader(exact, "b", "1")),
		hm(4, pathM(prefix, "/p"), withMethod("GET"), withHeader(exact, "a", "1")),
		hm(5, pathM(prefix, "/p"), withMethod("GET")),
		hm(6, pathM(prefix, "/p"), withHeader(exact, "a", "1"), withHeader(exact, "b", "1")),
		hm(7, pathM(prefix, "/p"), withHeader(exact, "a", "1"), withQuery(exact, "q", "1"), withQuery(exact, "r", "1")),
		hm(8, pathM(prefix, "/p"), withHeader(exact, "a", "1"), withQuery(exact, "q", "1")),
		hm(9, pathM(prefix, "/p"), withHeader(exact, "a", "1")),
		hm(10, pathM(prefix, "/p")),
	))
	cases := []struct {
		name, method, path string
		h                  []string
		want               string
	}{
		{"exact beats everything", "GET", "/p?q=1", []string{"a", "1", "b", "1"}, "exact"},
		{"longest prefix beats method", "GET", "/p/long/x", []string{"a", "1"}, "prefix-long"},
		{"method+headers+query", "GET", "/p/x?q=1", []string{"a", "1", "b", "1"}, "method+2hdr+q"},
		{"method+2 headers", "GET", "/p/x", []string{"a", "1", "b", "1"}, "method+2hdr"},
		{"method+1 header", "GET", "/p/x", []string{"a", "1"}, "method+1hdr"},
		{"method alone beats headers", "GET", "/p/x", []string{"b", "1"}, "method"},
		{"more headers", "PUT", "/p/x", []string{"a", "1", "b", "1"}, "2hdr"},
		{"more query params", "PUT", "/p/x?q=1&r=1", []string{"a", "1"}, "1hdr+2q"},
		{"one query param", "PUT", "/p/x?q=1", []string{"a", "1"}, "1hdr+1q"},
		{"header only", "PUT", "/p/x", []string{"a", "1"}, "1hdr"},
		{"plain prefix", "PUT", "/p/x", nil, "prefix"},
	}
	for _, c := range cases {
		got := selectName(tb, &Request{Method: c.method, Path: c.path, Header: hdr(c.h...)})
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestSelectHeaderMatches(t *testing.T) {
	rules := []*weftv1.Rule{rule("exact"), rule("regex"), rule("first-wins"), rule("fallback")}
	tb := mustCompile(t, httpTable(rules,
		hm(0, nil, withHeader(exact, "x-version", "v2")),
		hm(1, nil, withHeader(regex, "X-Canary", "yes|true")),
		// Two entries for one name: only the first counts.
		hm(2, nil, withHeader(exact, "x-dup", "one"), withHeader(exact, "X-DUP", "two")),
		hm(3, nil),
	))
	cases := []struct {
		h    []string
		want string
	}{
		{[]string{"X-Version", "v2"}, "exact"},
		{[]string{"x-version", "v2"}, "exact"},    // names are case-insensitive
		{[]string{"X-Version", "V2"}, "fallback"}, // values are not
		{[]string{"X-Canary", "true"}, "regex"},
		{[]string{"X-Canary", "truex"}, "fallback"}, // regex is a full match
		{[]string{"X-Dup", "one"}, "first-wins"},
		{[]string{"X-Dup", "two"}, "fallback"},
		{[]string{"X-Version", "v1", "X-Version", "v2"}, "fallback"}, // joined "v1,v2"
		{nil, "fallback"},
	}
	for _, c := range cases {
		if got := selectName(tb, &Request{Method: "GET", Path: "/", Header: hdr(c.h...)}); got != c.want {
			t.Errorf("headers %v: got %q, want %q", c.h, got, c.want)
		}
	}
	// Joined multi-value header matches the joined form.
	tb2 := mustCompile(t, httpTable([]*weftv1.Rule{rule("joined")}, hm(0, nil, withHeader(exact, "x-v", "a,b"))))
	if got := selectName(tb2, &Request{Path: "/", Header: hdr("X-V", "a", "X-V", "b")}); got != "joined" {
		t.Errorf("multi-value header: got %q", got)
	}
}

func TestSelectQueryMatches(t *testing.T) {
	rules := []*weftv1.Rule{rule("exact"), rule("regex"), rule("fallback")}
	tb := mustCompile(t, httpTable(rules,
		hm(0, nil, withQuery(exact, "animal", "whale")),
		hm(1, nil, withQuery(regex, "color", "bl(ue|ack)")),
		hm(2, nil),
	))
	cases := []struct {
		path, want string
	}{
		{"/?animal=whale", "exact"},
		{"/x?a=1&animal=whale", "exact"},
		{"/?ANIMAL=whale", "fallback"}, // names are case-sensitive
		{"/?animal=Whale", "fallback"},
		{"/?animal=whale&animal=dolphin", "exact"}, // first value counts
		{"/?animal=dolphin&animal=whale", "fallback"},
		{"/?animal=wh%61le", "exact"}, // values are decoded
		{"/?color=black", "regex"},
		{"/?color=blacky", "fallback"},
		{"/?%zz=1&animal=whale", "exact"}, // a malformed pair does not hide the rest
		{"/", "fallback"},
	}
	for _, c := range cases {
		if got := selectName(tb, &Request{Method: "GET", Path: c.path}); got != c.want {
			t.Errorf("path %q: got %q, want %q", c.path, got, c.want)
		}
	}
	// A pre-parsed Query wins over the path's query.
	got := selectName(tb, &Request{Path: "/?animal=dolphin", Query: url.Values{"animal": {"whale"}}})
	if got != "exact" {
		t.Errorf("pre-parsed query: got %q", got)
	}
}

func TestSelectMethod(t *testing.T) {
	tb := mustCompile(t, httpTable([]*weftv1.Rule{rule("post"), rule("other")},
		hm(0, pathM(prefix, "/"), withMethod("POST")),
		hm(1, pathM(prefix, "/")),
	))
	for method, want := range map[string]string{"POST": "post", "post": "other", "GET": "other"} {
		if got := selectName(tb, &Request{Method: method, Path: "/x"}); got != want {
			t.Errorf("%s: got %q, want %q", method, got, want)
		}
	}
}

func TestSelectMatchedPrefix(t *testing.T) {
	tb := mustCompile(t, httpTable([]*weftv1.Rule{rule("a"), rule("b"), rule("c")},
		hm(0, pathM(exact, "/e")),
		hm(1, pathM(prefix, "/p/")),
		hm(2, nil),
	))
	for _, c := range []struct {
		path, prefix string
		match        int
	}{{"/e", "", 0}, {"/p/x", "/p", 1}, {"/z", "/", 2}} {
		d, ok := tb.Select(&Request{Path: c.path})
		if !ok || d.MatchedPrefix != c.prefix || d.Match != c.match {
			t.Errorf("%s: MatchedPrefix %q Match %d (ok %v), want %q %d", c.path, d.MatchedPrefix, d.Match, ok, c.prefix, c.match)
		}
	}
}

func grpcTable(rules []*weftv1.Rule, matches ...*weftv1.Match) *weftv1.RouteTable {
	for _, r := range rules {
		r.RouteKind = weftv1.RouteKind_ROUTE_KIND_GRPC
	}
	return &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_GRPC, Rules: rules, Matches: matches}
}

func gm(rule uint32, t weftv1.MatchType, svc, method string, headers ...*weftv1.StringMatch) *weftv1.Match {
	return &weftv1.Match{Rule: rule, Grpc: &weftv1.GRPCMatch{Type: t, Service: svc, Method: method, Headers: headers}}
}

func TestSelectGRPC(t *testing.T) {
	rules := []*weftv1.Rule{rule("svc-method"), rule("header"), rule("svc"), rule("method-only"), rule("regex"), rule("any")}
	tb := mustCompile(t, grpcTable(rules,
		gm(0, exact, "pkg.Echo", "Say"),
		gm(1, exact, "pkg.Echo", "", sm(exact, "x-tenant", "blue")),
		gm(2, exact, "pkg.Echo", ""),
		gm(3, exact, "", "Ping"),
		gm(4, regex, `pkg\.v[0-9]+\..*`, "Get.*"),
		&weftv1.Match{Rule: 5},
	))
	cases := []struct {
		path string
		h    []string
		want string
	}{
		{"/pkg.Echo/Say", nil, "svc-method"},
		{"/pkg.Echo/Shout", []string{"X-Tenant", "blue"}, "header"},
		{"/pkg.Echo/Shout", nil, "svc"},
		{"/other.Svc/Ping", nil, "method-only"},
		{"/pkg.v2.Store/GetItem", nil, "regex"},
		{"/pkg.v2.Store/PutItem", nil, "any"},
		{"/pkg.Echo.Say", nil, "any"},
	}
	for _, c := range cases {
		if got := selectName(tb, &Request{Path: c.path, Header: hdr(c.h...)}); got != c.want {
			t.Errorf("%s %v: got %q, want %q", c.path, c.h, got, c.want)
		}
	}
	// Explicit service/method fields win over Path.
	if got := selectName(tb, &Request{Path: "/ignored/x", GRPCService: "pkg.Echo", GRPCMethod: "Say"}); got != "svc-method" {
		t.Errorf("explicit service/method: got %q", got)
	}
}

func TestSelectTCP(t *testing.T) {
	rt := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_TCP,
		Rules:   []*weftv1.Rule{{Route: "ns/tcp", Name: "tcp", Backends: []*weftv1.BackendRef{be("c", 1)}}},
		Matches: []*weftv1.Match{{Rule: 0}}}
	tb := mustCompile(t, rt)
	if got := selectName(tb, &Request{}); got != "tcp" {
		t.Fatalf("got %q", got)
	}
}

// Regex path matches are indexed under their literal prefix's directory;
// a regex with no usable literal prefix is still found.
func TestSelectRegexIndexing(t *testing.T) {
	rules := []*weftv1.Rule{rule("deep"), rule("caseless"), rule("alt"), rule("any")}
	tb := mustCompile(t, httpTable(rules,
		hm(0, pathM(regex, "/api/v[0-9]+/items/.*")),
		hm(1, pathM(regex, "(?i)/admin/.*")),
		hm(2, pathM(regex, "/x/one|/y/two")),
		hm(3, pathM(regex, ".*")),
	))
	cases := map[string]string{
		"/api/v2/items/7":  "deep",
		"/api/v2/items":    "any",
		"/api/vx/items/7":  "any",
		"/ADMIN/users":     "caseless",
		"/admin/users":     "caseless",
		"/y/two":           "alt",
		"/x/one":           "alt",
		"/x/two":           "any",
		"relative/path":    "any",
		"/api/v2/items//7": "deep",
	}
	for path, want := range cases {
		if got := selectName(tb, &Request{Path: path}); got != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
}

// conformance/tests/mesh/httproute-matching (v1.7.0), with the matches in
// the order the controller's precedence sort gives them: longest prefix,
// then more headers, then rule order. Rule 0 is echo-v1, rule 1 echo-v2.
func TestMeshHTTPRouteMatching(t *testing.T) {
	rules := []*weftv1.Rule{rule("echo-v1"), rule("echo-v2")}
	tb := mustCompile(t, httpTable(rules,
		hm(1, pathM(prefix, "/v2")),
		hm(0, pathM(prefix, "/"), withHeader(exact, "version", "one")),
		hm(1, pathM(prefix, "/"), withHeader(exact, "version", "two")),
		hm(0, pathM(prefix, "/")),
	))
	cases := []struct {
		path string
		h    []string
		want string
	}{
		{"/", nil, "echo-v1"},
		{"/example", nil, "echo-v1"},
		{"/", []string{"Version", "one"}, "echo-v1"},
		{"/v2", nil, "echo-v2"},
		{"/v2/example", nil, "echo-v2"},
		{"/", []string{"Version", "two"}, "echo-v2"},
		{"/v2/", nil, "echo-v2"},
		{"/v2example", nil, "echo-v1"},
		{"/foo/v2/example", nil, "echo-v1"},
	}
	for _, c := range cases {
		if got := selectName(tb, &Request{Method: "GET", Path: c.path, Header: hdr(c.h...)}); got != c.want {
			t.Errorf("%s %v: got %q, want %q", c.path, c.h, got, c.want)
		}
	}
}
