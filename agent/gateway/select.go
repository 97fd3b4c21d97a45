package gateway

import (
	"net"
	"strings"
)

// NormalizeHost lowers a Host header or SNI and drops its port and a
// trailing dot ("Foo.Example.com.:8080" -> "foo.example.com").
func NormalizeHost(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// HostMatches reports whether a listener or virtual host hostname matches
// a normalized host: "" matches any host; "*.example.com" matches any host
// with one or more labels before ".example.com" (not "example.com"); any
// other name only itself.
func HostMatches(pattern, host string) bool {
	if pattern == "" {
		return true
	}
	pattern = strings.ToLower(pattern)
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return pattern == host
}

// PickListener returns the first listener whose hostname matches host, in
// the port's match order. An empty host (no SNI) matches only a listener
// with an empty hostname.
func (p *Port) PickListener(host string) *Listener {
	for _, l := range p.Listeners {
		if host == "" && l.Hostname != "" {
			continue
		}
		if HostMatches(l.Hostname, host) {
			return l
		}
	}
	return nil
}

// PickVHost returns the first virtual host whose hostname matches host.
func (l *Listener) PickVHost(host string) *VHost {
	for i := range l.VHosts {
		if HostMatches(l.VHosts[i].Hostname, host) {
			return &l.VHosts[i]
		}
	}
	return nil
}

// PickCert chooses a terminating listener's certificate for an SNI: the
// first that names it exactly, else the first whose wildcard covers it
// (one label, as certificate wildcards do), else the first.
func (l *Listener) PickCert(sni string) *Cert {
	if len(l.Certs) == 0 {
		return nil
	}
	sni = NormalizeHost(sni)
	for i := range l.Certs {
		for _, h := range l.Certs[i].Hostnames {
			if strings.EqualFold(h, sni) {
				return &l.Certs[i]
			}
		}
	}
	if dot := strings.IndexByte(sni, '.'); dot > 0 {
		for i := range l.Certs {
			for _, h := range l.Certs[i].Hostnames {
				if strings.HasPrefix(h, "*.") && strings.EqualFold(h[1:], sni[dot:]) {
					return &l.Certs[i]
				}
			}
		}
	}
	return &l.Certs[0]
}
