package route

import (
	"net"
	"strconv"
	"strings"
)

// PathModifierKind is the kind of a PathModifier.
type PathModifierKind uint8

const (
	// PathFull replaces the whole path (ReplaceFullPath).
	PathFull PathModifierKind = iota + 1
	// PathPrefix replaces the matched PathPrefix (ReplacePrefixMatch).
	PathPrefix
)

// PathModifier is a compiled HTTPPathModifier.
type PathModifier struct {
	Kind  PathModifierKind
	Value string
}

// Apply returns the modified path for path (no query), given the matched
// prefix (Decision.MatchedPrefix), following the HTTPPathModifier table of
// the Gateway API: "/foo/bar" with prefix "/foo" and replacement "/xyz" or
// "/xyz/" is "/xyz/bar"; "/foo" becomes "/xyz"; "/foo/" becomes "/xyz/";
// an empty or "/" replacement of "/foo" or "/foo/" gives "/".
func (m *PathModifier) Apply(path, matchedPrefix string) string {
	if m == nil {
		return path
	}
	switch m.Kind {
	case PathFull:
		if m.Value == "" {
			return "/"
		}
		return m.Value
	case PathPrefix:
		if matchedPrefix == "" {
			return path
		}
		prefix := matchedPrefix
		if prefix == "/" {
			prefix = ""
		}
		if !strings.HasPrefix(path, prefix) {
			return path
		}
		rest := path[len(prefix):]
		repl := strings.TrimRight(m.Value, "/")
		if rest == "" {
			if repl == "" {
				return "/"
			}
			return repl
		}
		if rest[0] != '/' {
			// Not an element boundary: PathPrefix matching never gives
			// this, keep the path rather than splice mid-element.
			return path
		}
		return repl + rest
	}
	return path
}

// Rewrite is a compiled URLRewrite filter.
type Rewrite struct {
	// Hostname replaces the Host header when non-empty.
	Hostname string
	// Path, when non-nil, rewrites the path; the query is kept.
	Path *PathModifier
}

// Apply returns the rewritten host and path (path with its query).
func (r *Rewrite) Apply(host, pathQuery, matchedPrefix string) (string, string) {
	if r.Hostname != "" {
		host = r.Hostname
	}
	if r.Path != nil {
		p, q := splitPathQuery(pathQuery)
		pathQuery = r.Path.Apply(p, matchedPrefix) + q
	}
	return host, pathQuery
}

// Redirect is a compiled RequestRedirect filter.
type Redirect struct {
	// Scheme "http" or "https"; empty: the request's.
	Scheme string
	// Hostname; empty: the request's Host without its port.
	Hostname string
	// Path; nil: the request's path.
	Path *PathModifier
	// Port; zero: derived (see Location).
	Port uint32
	// StatusCode 301, 302, 303, 307 or 308.
	StatusCode int
}

// Location returns the Location header and status of the redirect for req
// (the matched prefix for ReplacePrefixMatch). The port follows the
// HTTPRequestRedirectFilter rules: the configured port; else, when a scheme
// is configured, that scheme's well-known port (80, 443); else the
// listener port, which in the mesh is the Service port (req.Port; when
// zero, the port of req.Host). The port is left out when it is the
// scheme's default (http and 80, https and 443). The query is kept.
func (r *Redirect) Location(req *HTTPRequest, matchedPrefix string) (string, int) {
	scheme := r.Scheme
	if scheme == "" {
		scheme = req.Scheme
	}
	if scheme == "" {
		scheme = "http"
	}
	reqHost, reqPort := splitHostPort(req.Host)
	host := r.Hostname
	if host == "" {
		host = reqHost
	}
	var port uint32
	switch {
	case r.Port != 0:
		port = r.Port
	case r.Scheme != "":
		port = wellKnownPort(scheme)
	case req.Port != 0:
		port = req.Port
	default:
		port = reqPort
	}
	p, q := splitPathQuery(req.Path)
	if r.Path != nil {
		p = r.Path.Apply(p, matchedPrefix)
	}
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	var b strings.Builder
	b.Grow(len(scheme) + len(host) + len(p) + len(q) + 12)
	b.WriteString(scheme)
	b.WriteString("://")
	if strings.IndexByte(host, ':') >= 0 {
		b.WriteByte('[')
		b.WriteString(host)
		b.WriteByte(']')
	} else {
		b.WriteString(host)
	}
	if port != 0 && port != wellKnownPort(scheme) {
		b.WriteByte(':')
		b.WriteString(strconv.FormatUint(uint64(port), 10))
	}
	b.WriteString(p)
	b.WriteString(q)
	status := r.StatusCode
	if status == 0 {
		status = 302
	}
	return b.String(), status
}

func wellKnownPort(scheme string) uint32 {
	switch scheme {
	case "http":
		return 80
	case "https":
		return 443
	}
	return 0
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port"; a
// malformed port counts as none.
func splitHostPort(hp string) (string, uint32) {
	if h, p, err := net.SplitHostPort(hp); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil {
			return h, 0
		}
		return h, uint32(n)
	}
	return strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), 0
}
