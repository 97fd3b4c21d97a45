package h2c

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2/hpack"
)

// commonHeaders maps the lower-case wire names of common fields to their
// canonical http.Header keys, and back: neither direction allocates for
// them.
var (
	lowerToCanon = map[string]string{}
	canonToLower = map[string]string{}
)

func init() {
	for _, k := range []string{
		"accept", "accept-charset", "accept-encoding", "accept-language", "accept-ranges", "access-control-allow-credentials",
		"access-control-allow-headers", "access-control-allow-methods", "access-control-allow-origin", "access-control-expose-headers",
		"access-control-max-age", "access-control-request-headers", "access-control-request-method", "age", "allow", "authorization",
		"cache-control", "content-disposition", "content-encoding", "content-language", "content-length", "content-location",
		"content-range", "content-type", "cookie", "date", "etag", "expect", "expires", "from", "host", "if-match",
		"if-modified-since", "if-none-match", "if-unmodified-since", "last-modified", "link", "location", "max-forwards", "origin",
		"proxy-authenticate", "proxy-authorization", "range", "referer", "refresh", "retry-after", "server", "set-cookie",
		"strict-transport-security", "te", "trailer", "transfer-encoding", "user-agent", "vary", "via", "www-authenticate",
		"x-forwarded-for", "x-forwarded-proto", "x-request-id", "x-content-type-options",
		"grpc-status", "grpc-message", "grpc-status-details-bin", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
		"grpc-message-type", "grpc-previous-rpc-attempts", "grpc-retry-pushback-ms",
		"traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
	} {
		c := textproto.CanonicalMIMEHeaderKey(k)
		lowerToCanon[k] = c
		canonToLower[c] = k
	}
}

// canonical is the http.Header key of a wire field name.
func canonical(name string) string {
	if c, ok := lowerToCanon[name]; ok {
		return c
	}
	return textproto.CanonicalMIMEHeaderKey(name)
}

// lower is the wire name of an http.Header key.
func lower(key string) string {
	if l, ok := canonToLower[key]; ok {
		return l
	}
	return strings.ToLower(key)
}

// connectionSpecific reports the fields HTTP/2 forbids (RFC 9113 8.2.2),
// by wire name; "te" is allowed with "trailers" only.
func connectionSpecific(name string) bool {
	switch name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// encodeHeader writes h's fields, lower-cased, skipping what HTTP/2 must
// not carry (connection-specific fields, Host, a TE other than
// "trailers", the Trailer declaration, http.TrailerPrefix keys), invalid
// names or values, and skip's keys.
func encodeHeader(e *hpack.Encoder, h http.Header, skip []string) {
	for k, vs := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) || slices.Contains(skip, k) {
			continue
		}
		name := lower(k)
		switch {
		case connectionSpecific(name), name == "host", name == "trailer":
			continue
		case name == "te":
			if httpguts.HeaderValuesContainsToken(vs, "trailers") {
				e.WriteField(hpack.HeaderField{Name: "te", Value: "trailers"})
			}
			continue
		case name == "user-agent" && len(vs) == 1 && vs[0] == "":
			continue // an empty User-Agent means none
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range vs {
			if !httpguts.ValidHeaderFieldValue(v) {
				continue
			}
			e.WriteField(hpack.HeaderField{Name: name, Value: v, Sensitive: sensitive(name)})
		}
	}
}

// sensitive fields are never indexed by hpack (RFC 7541 7.1.3).
func sensitive(name string) bool {
	return name == "authorization" || name == "proxy-authorization" || name == "cookie" || name == "set-cookie"
}

// headerOf builds the http.Header of a block's regular fields: canonical
// keys, "cookie" fields joined (RFC 9113 8.2.3). ok is false when the
// block carries a connection-specific field or a TE other than
// "trailers", which makes a message malformed.
func headerOf(fields []hpack.HeaderField) (h http.Header, ok bool) {
	n := 0
	for _, f := range fields {
		if !f.IsPseudo() {
			n++
		}
	}
	h = make(http.Header, n)
	// one array holds every key's first value (as net/textproto does): a
	// key seen again appends past its capacity of 1, to a copy
	vals := make([]string, n)
	var cookies []string
	for _, f := range fields {
		if f.IsPseudo() {
			continue
		}
		if connectionSpecific(f.Name) || f.Name == "te" && f.Value != "trailers" {
			return nil, false
		}
		if f.Name == "cookie" {
			cookies = append(cookies, f.Value)
			continue
		}
		k := canonical(f.Name)
		if vs, ok := h[k]; ok {
			h[k] = append(vs, f.Value)
		} else {
			vals[0] = f.Value
			h[k] = vals[:1:1]
			vals = vals[1:]
		}
	}
	if len(cookies) > 0 {
		h["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	return h, true
}

// trailerOf builds the trailers of a block; ok is false when it carries a
// pseudo-header (RFC 9113 8.1).
func trailerOf(fields []hpack.HeaderField) (map[string][]string, bool) {
	t := make(map[string][]string, len(fields))
	for _, f := range fields {
		if f.IsPseudo() {
			return nil, false
		}
		k := canonical(f.Name)
		t[k] = append(t[k], f.Value)
	}
	return t, true
}

// declaredTrailers is the Trailer header's keys, as a map of empty values
// (nil when none), as net/http fills Request.Trailer and
// Response.Trailer.
func declaredTrailers(h http.Header) http.Header {
	vs := h["Trailer"]
	if len(vs) == 0 {
		return nil
	}
	t := make(http.Header)
	for _, v := range vs {
		for k := range strings.SplitSeq(v, ",") {
			if k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)); k != "" {
				switch k {
				case "Transfer-Encoding", "Trailer", "Content-Length":
				default:
					t[k] = nil
				}
			}
		}
	}
	return t
}
