package weftv1

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

func TestValueChecks(t *testing.T) {
	long := "/" + strings.Repeat("a", DefaultLimits.MaxPatternLen)
	for _, tc := range []struct {
		name string
		err  error
		want error // nil: valid
	}{
		{"path", ValidatePath("/a/b"), nil},
		{"empty path (unset)", ValidatePath(""), nil},
		{"relative path", ValidatePath("a"), ErrInvalidPath},
		{"path with query", ValidatePath("/a?b"), ErrInvalidPath},
		{"path with space", ValidatePath("/a b"), ErrInvalidPath},
		{"long path", ValidatePath(long), ErrInvalidPath},
		{"match path", ValidateMatchPath("/a"), nil},
		{"empty match path", ValidateMatchPath(""), ErrInvalidPath},
		{"match path with //", ValidateMatchPath("/a//b"), ErrInvalidPath},
		{"header name", ValidateHeaderName("x-user"), nil},
		{"header name with space", ValidateHeaderName("x user"), ErrInvalidHeaderName},
		{"empty header name", ValidateHeaderName(""), ErrInvalidHeaderName},
		{"header value with tab", ValidateHeaderValue("a\tb"), nil},
		{"header value with newline", ValidateHeaderValue("a\nb"), ErrInvalidHeaderValue},
		{"method", ValidateMethod("PATCH"), nil},
		{"method with space", ValidateMethod("GE T"), ErrInvalidMethod},
		{"hostname", ValidateHostname("example.org"), nil},
		{"hostname with underscore", ValidateHostname("exa_mple.org"), ErrInvalidHostname},
		{"long hostname", ValidateHostname(strings.Repeat("a", 254)), ErrInvalidHostname},
		{"cookie name", ValidateCookieName("JSESSIONID"), nil},
		{"cookie name with ;", ValidateCookieName("a;b"), ErrInvalidCookie},
		{"cookie path", ValidateCookiePath("/app"), nil},
		{"cookie path with ;", ValidateCookiePath("/a;Domain=evil"), ErrInvalidCookie},
		{"relative cookie path", ValidateCookiePath("app"), ErrInvalidCookie},
	} {
		if tc.want == nil && tc.err != nil || tc.want != nil && !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
}

func TestCompileRegex(t *testing.T) {
	re, err := CompileRegex("/api/v[0-9]+")
	if err != nil || !re.MatchString("/api/v2") || re.MatchString("/api/v2/x") {
		t.Fatalf("full match: %v, %v", re, err)
	}
	for _, bad := range []string{"(", "/(?=admin).*", "a)|(b", strings.Repeat("a", DefaultLimits.MaxPatternLen+1)} {
		if _, err := CompileRegex(bad); !errors.Is(err, ErrInvalidRegex) {
			t.Errorf("%.20q: %v, want ErrInvalidRegex", bad, err)
		}
	}
	if _, err := (Limits{MaxPatternLen: 3}).CompileRegex("abcd"); !errors.Is(err, ErrInvalidRegex) {
		t.Errorf("limit not applied: %v", err)
	}
}

func TestParseOrigin(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Origin
		ok   bool
	}{
		{"https://example.org", Origin{Scheme: "https", Host: "example.org", Port: 443}, true},
		{"HTTP://Example.org:8080", Origin{Scheme: "http", Host: "example.org", Port: 8080}, true},
		{"https://*.example.org", Origin{Scheme: "https", HostSuffix: ".example.org", Port: 443}, true},
		{"http://*", Origin{Scheme: "http", AnyHost: true, Port: 80}, true},
		{"http://[::1]", Origin{Scheme: "http", Host: "[::1]", Port: 80}, true},
		{"example.org", Origin{}, false},
		{"ftp://example.org", Origin{}, false},
		{"https://example.org:0", Origin{}, false},
		{"https://example.org:99999", Origin{}, false},
		{"https://ex*ample.org", Origin{}, false},
		{"https://*.", Origin{}, false},
		{"https://a.org/path", Origin{}, false},
		{"https://user@a.org", Origin{}, false},
		{"https://", Origin{}, false},
	} {
		got, err := ParseOrigin(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParseOrigin(%q) = %+v, %v", tc.in, got, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidOrigin) {
			t.Errorf("ParseOrigin(%q): %v is not ErrInvalidOrigin", tc.in, err)
		}
	}
}

func TestSessionPersistenceValidate(t *testing.T) {
	d := durationpb.New
	ok := []*SessionPersistence{
		nil,
		{},
		{Type: SessionPersistence_TYPE_COOKIE, Name: "JSESSIONID", CookiePath: "/a", Lifetime: SessionPersistence_LIFETIME_PERMANENT, AbsoluteTimeout: d(time.Hour)},
		{Type: SessionPersistence_TYPE_HEADER, Name: "x-session", AbsoluteTimeout: d(time.Minute)},
		{Lifetime: SessionPersistence_LIFETIME_PERMANENT, AbsoluteTimeout: d(500 * time.Millisecond)},
	}
	for _, s := range ok {
		if err := s.Validate(); err != nil {
			t.Errorf("%v: %v", s, err)
		}
	}
	bad := []*SessionPersistence{
		{Lifetime: SessionPersistence_LIFETIME_PERMANENT},
		{Lifetime: 7},
		{Name: "a b"},
		{CookiePath: "rel"},
		{CookiePath: "/a;Domain=evil"},
		{CookiePath: "/a\n"},
		{AbsoluteTimeout: d(-time.Second)},
		{AbsoluteTimeout: &durationpb.Duration{Seconds: 1, Nanos: -5}},
		{Type: SessionPersistence_TYPE_HEADER},
		{Type: SessionPersistence_TYPE_HEADER, Name: "x:y"},
		{Type: SessionPersistence_TYPE_HEADER, Name: "x", Lifetime: SessionPersistence_LIFETIME_PERMANENT, AbsoluteTimeout: d(time.Hour)},
		{Type: 5},
	}
	for _, s := range bad {
		if err := s.Validate(); !errors.Is(err, ErrInvalidSession) {
			t.Errorf("%v accepted (%v)", s, err)
		}
	}
}

func TestRouteTableValidateJoinsEveryProblem(t *testing.T) {
	tbl := &RouteTable{
		Kind: RouteKind_ROUTE_KIND_HTTP,
		Rules: []*Rule{{
			Route: "ns/r",
			Filters: []*Filter{
				{Kind: &Filter_RequestHeaderModifier{RequestHeaderModifier: &HeaderModifier{Remove: []string{"bad name"}}}},
				{Kind: &Filter_RequestRedirect{RequestRedirect: &RequestRedirect{Path: &PathModifier{Type: PathModifier_TYPE_PREFIX, Value: "/x"}}}},
			},
			Backends: []*BackendRef{{Cluster: "c", Weight: DefaultLimits.MaxWeight + 1}},
		}},
		Matches: []*Match{
			{Http: &HTTPMatch{Path: &StringMatch{Type: MatchType_MATCH_TYPE_EXACT, Value: "/a"}}},
			{Http: &HTTPMatch{Headers: []*StringMatch{{Name: "x", Type: MatchType_MATCH_TYPE_REGEX, Value: "("}}}},
			{Rule: 3},
		},
	}
	err := tbl.Validate()
	for _, want := range []error{ErrInvalidHeaderName, ErrInvalidBackend, ErrInvalidMatch, ErrInvalidRegex} {
		if !errors.Is(err, want) {
			t.Errorf("error does not wrap %v:\n%v", want, err)
		}
	}
	for _, where := range []string{"rule 0 (ns/r): filter 0", "rule 0 (ns/r): backend 0", "match 0: invalid match: ReplacePrefixMatch", "match 1: x: invalid regular expression", "match 2: invalid match: rule index 3"} {
		if !strings.Contains(err.Error(), where) {
			t.Errorf("error does not say %q:\n%v", where, err)
		}
	}
}

func TestRouteTableValidateKinds(t *testing.T) {
	hdr := &Filter{Kind: &Filter_RequestHeaderModifier{RequestHeaderModifier: &HeaderModifier{}}}
	redirect := &Filter{Kind: &Filter_RequestRedirect{RequestRedirect: &RequestRedirect{}}}
	rewrite := &Filter{Kind: &Filter_UrlRewrite{UrlRewrite: &URLRewrite{}}}
	rule := func(fs ...*Filter) []*Rule { return []*Rule{{Filters: fs, Backends: []*BackendRef{{Cluster: "c"}}}} }
	for _, tc := range []struct {
		name string
		t    *RouteTable
		want error
	}{
		{"nil", nil, ErrInvalidTable},
		{"no kind", &RouteTable{}, ErrInvalidTable},
		{"http ok", &RouteTable{Kind: RouteKind_ROUTE_KIND_HTTP, Rules: rule(hdr, redirect)}, nil},
		{"grpc redirect", &RouteTable{Kind: RouteKind_ROUTE_KIND_GRPC, Rules: rule(redirect)}, ErrInvalidFilter},
		{"tcp filter", &RouteTable{Kind: RouteKind_ROUTE_KIND_TCP, Rules: rule(hdr)}, ErrInvalidFilter},
		{"repeated", &RouteTable{Kind: RouteKind_ROUTE_KIND_HTTP, Rules: rule(hdr, hdr)}, ErrInvalidFilter},
		{"redirect and rewrite", &RouteTable{Kind: RouteKind_ROUTE_KIND_HTTP, Rules: rule(redirect, rewrite)}, ErrInvalidFilter},
		{"gRPC match in HTTP", &RouteTable{Kind: RouteKind_ROUTE_KIND_HTTP, Rules: rule(), Matches: []*Match{{Grpc: &GRPCMatch{}}}}, ErrInvalidMatch},
		{"backend without cluster", &RouteTable{Kind: RouteKind_ROUTE_KIND_TCP, Rules: []*Rule{{Backends: []*BackendRef{{}}}}}, ErrInvalidBackend},
		{"empty filter", &RouteTable{Kind: RouteKind_ROUTE_KIND_HTTP, Rules: rule(&Filter{})}, ErrInvalidFilter},
	} {
		err := tc.t.Validate()
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
