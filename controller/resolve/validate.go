package resolve

import (
	"golang.org/x/net/http/httpguts"

	"fmt"
	"strconv"
	"strings"
)

// The node proxy rejects a whole policy it cannot compile (and keeps its
// last good one), so resolution checks every value the proxy checks and
// drops just the offending rule, with a status that says why. These checks
// mirror agent/proxy/route and agent/proxy/session (a test keeps them in
// step).

// maxPatternLen bounds regular expressions and paths.
const maxPatternLen = 1024

// validPathValue checks a path used in a match or a path modifier.
func validPathValue(p string) error {
	if p == "" {
		return nil
	}
	if p[0] != '/' {
		return fmt.Errorf("path %q must start with /", p)
	}
	if len(p) > maxPatternLen {
		return fmt.Errorf("path is longer than %d characters", maxPatternLen)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c == '?' || c == '#' {
			return fmt.Errorf("path %q contains a space, control character, '?' or '#'", p)
		}
	}
	return nil
}

// checkHeaderName checks a header name used in a match or modifier.
func checkHeaderName(what, name string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("%s name %q is not a valid HTTP header name", what, name)
	}
	return nil
}

// validOrigin checks a CORS allowOrigins entry: "*" or
// <scheme>://<host>[:<port>] with scheme http or https; the host may be
// "*" or start with "*.".
func validOrigin(o string) bool {
	if o == "*" {
		return true
	}
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok {
		return false
	}
	if s := strings.ToLower(scheme); s != "http" && s != "https" {
		return false
	}
	host := rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.HasSuffix(rest, "]") {
		n, err := strconv.ParseUint(rest[i+1:], 10, 16)
		if err != nil || n == 0 {
			return false
		}
		host = rest[:i]
	}
	if host == "" || strings.ContainsAny(host, "/?#@ \t") {
		return false
	}
	if host == "*" {
		return true
	}
	if suffix, ok := strings.CutPrefix(host, "*."); ok {
		return suffix != "" && !strings.Contains(suffix, "*")
	}
	return !strings.Contains(host, "*")
}

// validCookiePath checks a session cookie Path attribute.
func validCookiePath(p string) bool {
	if p == "" || p[0] != '/' || strings.ContainsAny(p, ";\x7f") {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < ' ' {
			return false
		}
	}
	return true
}

// isToken reports whether s is an RFC 9110 token (header names, methods,
// cookie names).
var isToken = httpguts.ValidHeaderFieldName
