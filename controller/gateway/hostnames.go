package gateway

import (
	"cmp"
	"fmt"
	"net/netip"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Hostname patterns, as Listener.hostname and the spec.hostnames of
// HTTPRoute, GRPCRoute and TLSRoute define them: "" matches every host;
// "*.example.com" matches every host that ends in ".example.com" and has at
// least one more label (foo.example.com and a.b.example.com, not
// example.com); anything else matches itself. Comparisons ignore case.

// hostMatches reports whether the precise host matches pattern.
func hostMatches(pattern, host string) bool {
	pattern, host = strings.ToLower(pattern), strings.ToLower(host)
	if pattern == "" {
		return true
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return host == pattern
}

// intersect returns the pattern matching exactly the hosts that both
// patterns match (it is always a or b), and false when there are none:
// listener "*.example.com" and route "foo.example.com" give
// "foo.example.com"; "*.example.com" and "*.foo.example.com" give
// "*.foo.example.com"; "" and x give x.
func intersect(a, b string) (string, bool) {
	a, b = strings.ToLower(a), strings.ToLower(b)
	aw, bw := strings.HasPrefix(a, "*."), strings.HasPrefix(b, "*.")
	switch {
	case a == "":
		return b, true
	case b == "":
		return a, true
	case !aw && !bw:
		return a, a == b
	case aw && !bw:
		return b, hostMatches(a, b)
	case !aw && bw:
		return a, hostMatches(b, a)
	case a == b || strings.HasSuffix(a, b[1:]):
		return a, true
	case strings.HasSuffix(b, a[1:]):
		return b, true
	}
	return "", false
}

// compareHostnames orders patterns from the most specific to the least, the
// order in which requests are matched against listener (and route)
// hostnames: precise names first, then wildcards with more labels after the
// "*" first ("*.foo.example.com" before "*.example.com"), then "".
// Negative means a is more specific.
func compareHostnames(a, b string) int {
	rank := func(h string) int {
		switch {
		case h == "":
			return 2
		case strings.HasPrefix(h, "*."):
			return 1
		}
		return 0
	}
	return cmp.Or(
		cmp.Compare(rank(a), rank(b)),
		cmp.Compare(strings.Count(b, "."), strings.Count(a, ".")),
		cmp.Compare(len(b), len(a)),
		strings.Compare(a, b),
	)
}

// checkHostname validates a listener or route hostname: an RFC 1123 DNS
// name, optionally with a leading "*." label, and not an IP address.
func checkHostname(h gwv1.Hostname) error {
	s := string(h)
	if _, err := netip.ParseAddr(s); err == nil {
		return fmt.Errorf("hostname %q is an IP address; hostnames must be DNS names", s)
	}
	var errs []string
	if strings.HasPrefix(s, "*") {
		errs = validation.IsWildcardDNS1123Subdomain(s)
	} else {
		errs = validation.IsDNS1123Subdomain(s)
	}
	if len(errs) > 0 {
		return fmt.Errorf("hostname %q is not valid: %s", s, strings.Join(errs, "; "))
	}
	return nil
}

// hostMatch is one hostname a route serves on a listener: the intersection
// of the listener's hostname and one of the route's, and the route
// hostname it came from (which decides precedence among routes whose
// intersections are equal).
type hostMatch struct {
	host, original string
}

// routeHosts intersects a listener hostname with a route's hostnames. A
// route without hostnames serves the listener's hostname; route hostnames
// that do not intersect are ignored; none left means the route does not
// match the listener. Each intersection is kept once, with its most
// specific original.
func routeHosts(listener string, hostnames []gwv1.Hostname) []hostMatch {
	if len(hostnames) == 0 {
		return []hostMatch{{host: strings.ToLower(listener)}}
	}
	var out []hostMatch
	for _, h := range hostnames {
		host, ok := intersect(listener, string(h))
		if !ok {
			continue
		}
		orig := strings.ToLower(string(h))
		dup := false
		for i := range out {
			if out[i].host == host {
				dup = true
				if compareHostnames(orig, out[i].original) < 0 {
					out[i].original = orig
				}
			}
		}
		if !dup {
			out = append(out, hostMatch{host: host, original: orig})
		}
	}
	return out
}
