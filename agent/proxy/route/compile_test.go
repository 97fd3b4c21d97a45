package route

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func withFilter(f *weftv1.Filter) *weftv1.Rule {
	r := rule("r", be("c", 1))
	r.Filters = []*weftv1.Filter{f}
	return r
}

func rh(name, value string) *weftv1.Filter {
	return &weftv1.Filter{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &weftv1.HeaderModifier{
		Set: []*weftv1.HeaderModifier_Header{{Name: name, Value: value}}}}}
}

func redirectF(rr *weftv1.RequestRedirect) *weftv1.Filter {
	return &weftv1.Filter{Kind: &weftv1.Filter_RequestRedirect{RequestRedirect: rr}}
}

func rewriteF(rw *weftv1.URLRewrite) *weftv1.Filter {
	return &weftv1.Filter{Kind: &weftv1.Filter_UrlRewrite{UrlRewrite: rw}}
}

// Every invalid thing in a RouteTable is rejected by Compile, with a
// message that says what.
func TestCompileRejects(t *testing.T) {
	anyMatch := []*weftv1.Match{hm(0, nil)}
	one := func(r *weftv1.Rule, ms ...*weftv1.Match) *weftv1.RouteTable {
		if len(ms) == 0 {
			ms = anyMatch
		}
		return httpTable([]*weftv1.Rule{r}, ms...)
	}
	twoFilters := rule("r", be("c", 1))
	twoFilters.Filters = []*weftv1.Filter{redirectF(&weftv1.RequestRedirect{}), rewriteF(&weftv1.URLRewrite{Hostname: "a"})}
	redirectAndBackendRewrite := rule("r", be("c", 1))
	redirectAndBackendRewrite.Filters = []*weftv1.Filter{redirectF(&weftv1.RequestRedirect{})}
	redirectAndBackendRewrite.Backends[0].Filters = []*weftv1.Filter{rewriteF(&weftv1.URLRewrite{Hostname: "a"})}
	dupRH := rule("r", be("c", 1))
	dupRH.Filters = []*weftv1.Filter{rh("a", "1"), rh("b", "2")}
	grpcRedirect := rule("r", be("c", 1))
	grpcRedirect.Filters = []*weftv1.Filter{redirectF(&weftv1.RequestRedirect{})}
	tcpFilter := rule("r", be("c", 1))
	tcpFilter.Filters = []*weftv1.Filter{rh("a", "1")}
	prefixRewrite := withFilter(rewriteF(&weftv1.URLRewrite{Path: pm(weftv1.PathModifier_TYPE_PREFIX, "/x")}))
	withTimeout := func(d *durationpb.Duration) *weftv1.Rule { r := rule("r", be("c", 1)); r.RequestTimeout = d; return r }
	withRetry := func(rt *weftv1.Retry) *weftv1.Rule { r := rule("r", be("c", 1)); r.Retry = rt; return r }
	withSession := func(s *weftv1.SessionPersistence) *weftv1.Rule { r := rule("r", be("c", 1)); r.Session = s; return r }
	backendSession := rule("r", &weftv1.BackendRef{Cluster: "c", Weight: 1, Session: &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_HEADER}})

	cases := []struct {
		name string
		rt   *weftv1.RouteTable
		want string
	}{
		{"nil table", nil, "nil table"},
		{"kind unspecified", &weftv1.RouteTable{}, "unsupported kind"},
		{"match rule out of range", httpTable(nil, hm(0, nil)), "out of range"},
		{"nil match", httpTable([]*weftv1.Rule{rule("r")}, nil), "nil match"},
		{"nil rule", httpTable([]*weftv1.Rule{nil}), "nil rule"},
		{"bad regex path", one(rule("r"), hm(0, pathM(regex, "a("))), "regular expression"},
		{"bad regex header", one(rule("r"), hm(0, nil, withHeader(regex, "x", "[z-a]"))), "regular expression"},
		{"bad regex query", one(rule("r"), hm(0, nil, withQuery(regex, "q", "*"))), "regular expression"},
		{"regex too long", one(rule("r"), hm(0, pathM(regex, strings.Repeat("a", 2000)))), "longer than"},
		{"path without slash", one(rule("r"), hm(0, pathM(prefix, "foo"))), "invalid"},
		{"empty exact path", one(rule("r"), hm(0, pathM(exact, ""))), "invalid"},
		{"path with //", one(rule("r"), hm(0, pathM(prefix, "/a//b"))), "invalid"},
		{"path with space", one(rule("r"), hm(0, pathM(exact, "/a b"))), "invalid"},
		{"path type unspecified", one(rule("r"), hm(0, pathM(weftv1.MatchType_MATCH_TYPE_UNSPECIFIED, "/"))), "unsupported"},
		{"header prefix type", one(rule("r"), hm(0, nil, withHeader(prefix, "x", "1"))), "unsupported"},
		{"header name invalid", one(rule("r"), hm(0, nil, withHeader(exact, "bad name", "1"))), "header name"},
		{"query name empty", one(rule("r"), hm(0, nil, withQuery(exact, "", "1"))), "query parameter name"},
		{"method invalid", one(rule("r"), hm(0, nil, withMethod("GE T"))), "method"},
		{"grpc match in http table", httpTable([]*weftv1.Rule{rule("r")}, gm(0, exact, "s", "m")), "gRPC match"},
		{"http match in grpc table", grpcTable([]*weftv1.Rule{rule("r")}, hm(0, nil)), "HTTP match"},
		{"grpc type unspecified", grpcTable([]*weftv1.Rule{rule("r")}, gm(0, weftv1.MatchType_MATCH_TYPE_UNSPECIFIED, "s", "")), "unsupported"},
		{"grpc bad regex", grpcTable([]*weftv1.Rule{rule("r")}, gm(0, regex, "(", "")), "regular expression"},
		{"l7 match in tcp table", &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_TCP, Rules: []*weftv1.Rule{rule("r")}, Matches: []*weftv1.Match{hm(0, nil)}}, "L7 match"},
		{"filter on tcp rule", &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_TCP, Rules: []*weftv1.Rule{tcpFilter}}, "TCP rule"},
		{"redirect on grpc rule", grpcTable([]*weftv1.Rule{grpcRedirect}), "gRPC rule"},
		{"empty filter", one(withFilter(&weftv1.Filter{})), "no filter kind"},
		{"header modifier bad name", one(withFilter(rh("a b", "1"))), "header name"},
		{"header modifier CRLF value", one(withFilter(rh("a", "1\r\nInjected: yes"))), "control characters"},
		{"header modifier bad remove", one(withFilter(&weftv1.Filter{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &weftv1.HeaderModifier{Remove: []string{""}}}})), "header name"},
		{"repeated header modifier", one(dupRH), "repeated"},
		{"redirect and rewrite", one(twoFilters), "RequestRedirect and URLRewrite"},
		{"redirect and backend rewrite", one(redirectAndBackendRewrite), "RequestRedirect and URLRewrite"},
		{"redirect bad scheme", one(withFilter(redirectF(&weftv1.RequestRedirect{Scheme: "ftp"}))), "scheme"},
		{"redirect bad status", one(withFilter(redirectF(&weftv1.RequestRedirect{StatusCode: 200}))), "status"},
		{"redirect bad port", one(withFilter(redirectF(&weftv1.RequestRedirect{Port: 70000}))), "port"},
		{"redirect bad hostname", one(withFilter(redirectF(&weftv1.RequestRedirect{Hostname: "a/b"}))), "hostname"},
		{"redirect bad path", one(withFilter(redirectF(&weftv1.RequestRedirect{Path: pm(weftv1.PathModifier_TYPE_FULL, "no-slash")}))), "path"},
		{"redirect path type unspecified", one(withFilter(redirectF(&weftv1.RequestRedirect{Path: pm(weftv1.PathModifier_TYPE_UNSPECIFIED, "/")}))), "unsupported"},
		{"rewrite bad hostname", one(withFilter(rewriteF(&weftv1.URLRewrite{Hostname: "a b"}))), "hostname"},
		{"prefix rewrite with exact match", one(prefixRewrite, hm(0, pathM(exact, "/a"))), "ReplacePrefixMatch"},
		{"prefix rewrite with regex match", one(prefixRewrite, hm(0, pathM(regex, "/a"))), "ReplacePrefixMatch"},
		{"mirror without cluster", one(withFilter(&weftv1.Filter{Kind: &weftv1.Filter_RequestMirror{RequestMirror: &weftv1.RequestMirror{Numerator: 1, Denominator: 1}}})), "mirror"},
		{"mirror denominator 0", one(withFilter(&weftv1.Filter{Kind: &weftv1.Filter_RequestMirror{RequestMirror: &weftv1.RequestMirror{Cluster: "m"}}})), "denominator"},
		{"mirror above 1", one(withFilter(&weftv1.Filter{Kind: &weftv1.Filter_RequestMirror{RequestMirror: &weftv1.RequestMirror{Cluster: "m", Numerator: 3, Denominator: 2}}})), "above 1"},
		{"cors bad origin", one(withFilter(&weftv1.Filter{Kind: &weftv1.Filter_Cors{Cors: &weftv1.CORS{AllowOrigins: []string{"foo.com"}}}})), "allowOrigin"},
		{"cors bad method", one(withFilter(&weftv1.Filter{Kind: &weftv1.Filter_Cors{Cors: &weftv1.CORS{AllowMethods: []string{"G T"}}}})), "allowMethod"},
		{"cors bad header", one(withFilter(&weftv1.Filter{Kind: &weftv1.Filter_Cors{Cors: &weftv1.CORS{AllowHeaders: []string{"a:b"}}}})), "allowHeader"},
		{"cors bad expose", one(withFilter(&weftv1.Filter{Kind: &weftv1.Filter_Cors{Cors: &weftv1.CORS{ExposeHeaders: []string{""}}}})), "exposeHeader"},
		{"backend without cluster or reason", one(rule("r", &weftv1.BackendRef{Weight: 1})), "no cluster"},
		{"nil backend", one(rule("r", nil)), "nil"},
		{"weight too large", one(rule("r", be("c", 2_000_000))), "weight"},
		{"negative timeout", one(withTimeout(durationpb.New(-time.Second))), "negative"},
		{"invalid timeout", one(withTimeout(&durationpb.Duration{Seconds: 1, Nanos: -1})), "timeout"},
		{"retry code", one(withRetry(&weftv1.Retry{Codes: []uint32{42}, Attempts: 1})), "retry code"},
		{"retry backoff", one(withRetry(&weftv1.Retry{Attempts: 1, Backoff: durationpb.New(-time.Second)})), "backoff"},
		{"session permanent without timeout", one(withSession(&weftv1.SessionPersistence{Lifetime: weftv1.SessionPersistence_LIFETIME_PERMANENT})), "absolute timeout"},
		{"session bad cookie name", one(withSession(&weftv1.SessionPersistence{Name: "a;b"})), "cookie name"},
		{"session bad cookie path", one(withSession(&weftv1.SessionPersistence{CookiePath: "x"})), "cookie path"},
		{"session header without name", one(backendSession), "header name"},
		{"session unknown type", one(withSession(&weftv1.SessionPersistence{Type: 9})), "type"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tb, err := Compile(c.rt)
			if err == nil {
				t.Fatalf("compiled: %+v", tb)
			}
			if !errors.Is(err, ErrInvalidTable) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want ErrInvalidTable mentioning %q", err, c.want)
			}
		})
	}
}

func TestCompileKeepsValues(t *testing.T) {
	r := rule("r", be("a", 3), &weftv1.BackendRef{Weight: 1, InvalidReason: "RefNotPermitted"})
	r.RequestTimeout = durationpb.New(3 * time.Second)
	r.BackendRequestTimeout = durationpb.New(time.Second)
	r.Retry = &weftv1.Retry{Codes: []uint32{503}, Attempts: 2, Backoff: durationpb.New(100 * time.Millisecond)}
	tb := mustCompile(t, httpTable([]*weftv1.Rule{r}, hm(0, nil)))
	got := tb.Rules()[0]
	if got.RequestTimeout != 3*time.Second || got.BackendRequestTimeout != time.Second {
		t.Errorf("timeouts %v %v", got.RequestTimeout, got.BackendRequestTimeout)
	}
	if got.Retry == nil || got.Retry.Attempts != 2 || got.Retry.Backoff != 100*time.Millisecond || len(got.Retry.Codes) != 1 {
		t.Errorf("retry %+v", got.Retry)
	}
	if got.totalWeight != 4 || got.Backends[1].Invalid != "RefNotPermitted" || got.Route != "ns/r" {
		t.Errorf("rule %+v", got)
	}
	if tb.Kind() != weftv1.RouteKind_ROUTE_KIND_HTTP {
		t.Errorf("kind %v", tb.Kind())
	}
}
