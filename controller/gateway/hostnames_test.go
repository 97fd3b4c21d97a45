package gateway

import (
	"slices"
	"strings"
	"testing"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestIntersect is the hostname intersection table of the HTTPRoute,
// GRPCRoute and TLSRoute hostnames doc comments and of the
// httproute-hostname-intersection and tlsroute-hostname-intersection
// conformance tests.
func TestIntersect(t *testing.T) {
	for _, tc := range []struct {
		listener, route, want string
		ok                    bool
	}{
		// "A Listener with test.example.com as the hostname matches
		// HTTPRoutes that have ... at least one of test.example.com or
		// *.example.com."
		{"test.example.com", "test.example.com", "test.example.com", true},
		{"test.example.com", "*.example.com", "test.example.com", true},
		{"test.example.com", "example.com", "", false},
		{"test.example.com", "*.test.example.com", "", false},
		// "A Listener with *.example.com ... *.example.com,
		// test.example.com, and foo.test.example.com would all match. On
		// the other hand, example.com and test.example.net would not."
		{"*.example.com", "*.example.com", "*.example.com", true},
		{"*.example.com", "test.example.com", "test.example.com", true},
		{"*.example.com", "foo.test.example.com", "foo.test.example.com", true},
		{"*.example.com", "example.com", "", false},
		{"*.example.com", "test.example.net", "", false},
		// TLSRoute: "a listener with something.example.com matches a
		// TLSRoute with hostname *.example.com".
		{"something.example.com", "*.example.com", "something.example.com", true},
		// Wildcards inside wildcards: the narrower one is the intersection
		// (tlsroute-hostname-intersection, listener "*.com").
		{"*.com", "*.example.com", "*.example.com", true},
		{"*.example.com", "*.com", "*.example.com", true},
		{"*.example.com", "*.foo.example.com", "*.foo.example.com", true},
		{"*.a.com", "*.b.com", "", false},
		{"*.xexample.com", "*.example.com", "", false},
		{"*.example.com", "xexample.com", "", false},
		// An empty listener hostname matches everything; so does an empty
		// route hostname list (routeHosts), modelled here as "".
		{"", "very.specific.com", "very.specific.com", true},
		{"", "*.wildcard.io", "*.wildcard.io", true},
		{"very.specific.com", "", "very.specific.com", true},
		{"", "", "", true},
		// httproute-hostname-intersection.
		{"very.specific.com", "non.matching.com", "", false},
		{"very.specific.com", "*.nonmatchingwildcard.io", "", false},
		{"very.specific.com", "*.specific.com", "very.specific.com", true},
		{"*.wildcard.io", "wildcard.io", "", false},
		{"*.wildcard.io", "foo.bar.wildcard.io", "foo.bar.wildcard.io", true},
		{"*.anotherwildcard.io", "*.anotherwildcard.io", "*.anotherwildcard.io", true},
		// Case does not matter.
		{"Foo.Example.com", "*.EXAMPLE.com", "foo.example.com", true},
	} {
		got, ok := intersect(tc.listener, tc.route)
		if got != tc.want && ok || ok != tc.ok {
			t.Errorf("intersect(%q, %q) = %q, %v; want %q, %v", tc.listener, tc.route, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHostMatches(t *testing.T) {
	for _, tc := range []struct {
		pattern, host string
		want          bool
	}{
		{"*.example.com", "test.example.com", true},
		{"*.example.com", "foo.test.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "xexample.com", false},
		{"example.com", "example.com", true},
		{"example.com", "www.example.com", false},
		{"", "anything.at.all", true},
		{"*.Example.COM", "a.example.com", true},
	} {
		if got := hostMatches(tc.pattern, tc.host); got != tc.want {
			t.Errorf("hostMatches(%q, %q) = %v, want %v", tc.pattern, tc.host, got, tc.want)
		}
	}
}

// TestCompareHostnames checks the listener precedence of the Gateway spec:
// "foo.example.com" before "*.example.com" before "", and
// "*.foo.example.com" before "*.example.com".
func TestCompareHostnames(t *testing.T) {
	got := []string{"", "*.example.com", "*.com", "foo.example.com", "*.foo.example.com", "a.com"}
	slices.SortFunc(got, compareHostnames)
	want := []string{"foo.example.com", "a.com", "*.foo.example.com", "*.example.com", "*.com", ""}
	if !slices.Equal(got, want) {
		t.Errorf("order %q, want %q", got, want)
	}
}

func TestRouteHosts(t *testing.T) {
	for _, tc := range []struct {
		listener string
		route    []gwv1.Hostname
		want     []hostMatch
	}{
		{"", nil, []hostMatch{{"", ""}}},
		{"abc.example.com", nil, []hostMatch{{"abc.example.com", ""}}},
		// The HTTPRoute doc: "if a Listener specified *.example.com, and
		// the HTTPRoute specified test.example.com and test.example.net,
		// test.example.net must not be considered for a match."
		{"*.example.com", []gwv1.Hostname{"test.example.com", "test.example.net"}, []hostMatch{{"test.example.com", "test.example.com"}}},
		// Two route hostnames with one intersection keep the most specific
		// original (httproute-multiple-routes-attachment-same-hostname-
		// intersection).
		{"abc.example.com", []gwv1.Hostname{"*.com", "*.example.com"}, []hostMatch{{"abc.example.com", "*.example.com"}}},
		{"abc.example.com", []gwv1.Hostname{"nope.org"}, nil},
	} {
		if got := routeHosts(tc.listener, tc.route); !slices.Equal(got, tc.want) {
			t.Errorf("routeHosts(%q, %q) = %v, want %v", tc.listener, tc.route, got, tc.want)
		}
	}
}

func TestCheckHostname(t *testing.T) {
	for h, ok := range map[gwv1.Hostname]bool{
		"example.com": true, "*.example.com": true, "10.0.0.1": false, "::1": false,
		"foo.*.com": false, "*": false, "Bad_Name.com": false, "": false,
	} {
		if err := checkHostname(h); (err == nil) != ok {
			t.Errorf("checkHostname(%q) = %v, want ok=%v", h, err, ok)
		}
	}
}

// FuzzIntersect checks the algebra of hostname intersection on arbitrary
// patterns and hosts: it is symmetric, the result is one of its inputs,
// and a host matches the result exactly when it matches both patterns.
func FuzzIntersect(f *testing.F) {
	for _, s := range [][3]string{
		{"*.example.com", "foo.example.com", "foo.example.com"},
		{"*.com", "*.example.com", "a.example.com"},
		{"", "*.a.io", "x.a.io"},
		{"a.b", "*.b", "b"},
		{"*.a.b", "*.b", "c.a.b"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, host string) {
		if strings.HasPrefix(host, "*") || host == "" {
			return
		}
		ab, okAB := intersect(a, b)
		ba, okBA := intersect(b, a)
		if okAB != okBA || okAB && ab != ba {
			t.Fatalf("intersect(%q, %q) = %q, %v but intersect(%q, %q) = %q, %v", a, b, ab, okAB, b, a, ba, okBA)
		}
		both := hostMatches(a, host) && hostMatches(b, host)
		if !okAB {
			if both && validPattern(a) && validPattern(b) {
				t.Fatalf("intersect(%q, %q) is empty but %q matches both", a, b, host)
			}
			return
		}
		if ab != strings.ToLower(a) && ab != strings.ToLower(b) {
			t.Fatalf("intersect(%q, %q) = %q, which is neither", a, b, ab)
		}
		if validPattern(a) && validPattern(b) && hostMatches(ab, host) != both {
			t.Fatalf("host %q: matches intersect(%q, %q) = %q: %v, matches both: %v", host, a, b, ab, hostMatches(ab, host), both)
		}
	})
}

// validPattern is the shape the API allows (a wildcard only as a whole
// first label); the algebra is only promised for those.
func validPattern(p string) bool {
	rest, _ := strings.CutPrefix(p, "*.")
	return !strings.Contains(rest, "*") && (p == "" || rest != "") && !strings.HasPrefix(rest, ".") && !strings.Contains(rest, "..")
}
