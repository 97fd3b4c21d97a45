package outbound

import (
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// appendRequest appends the HTTP/1.1 request that outRequest's Write would
// send for r with target and body, byte for byte, without the fmt calls,
// the header sort buffer and the transfer writer Request.Write allocates
// per request (on the event-loop source that was 9% of the CPU). It
// covers the requests a loop sends: an ASCII Host that needs no cleaning,
// a target starting with one slash, no control bytes, no trailers; false
// for anything else, which the caller writes with Request.Write. A test
// compares the two.
func appendRequest(b []byte, method, host, target string, h http.Header, body []byte) ([]byte, bool) {
	if method == "" || !asciiHost(host) || !httpguts.ValidHostHeader(host) || len(target) == 0 || target[0] != '/' ||
		strings.HasPrefix(target, "//") || hasCTL(target) {
		return b, false
	}
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, host...)
	b = append(b, "\r\n"...)
	ua := "Go-http-client/1.1"
	if vv, ok := h["User-Agent"]; ok {
		ua = ""
		if len(vv) > 0 {
			ua = textproto.TrimString(headerNewlineToSpace.Replace(vv[0]))
		}
	}
	if ua != "" {
		b = append(b, "User-Agent: "...)
		b = append(b, ua...)
		b = append(b, "\r\n"...)
	}
	// Request.Write's transfer writer: a length when there is a body, and
	// a zero one for the methods servers expect it with
	switch {
	case len(body) > 0:
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	case method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch:
		b = append(b, "Content-Length: 0\r\n"...)
	}
	var keys [32]string
	ks := keys[:0]
	for k := range h {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		ks = append(ks, k)
	}
	slices.Sort(ks)
	for _, k := range ks {
		if !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		for _, v := range h[k] {
			if strings.ContainsAny(v, "\r\n") {
				v = headerNewlineToSpace.Replace(v)
			}
			b = append(b, k...)
			b = append(b, ": "...)
			b = append(b, textproto.TrimString(v)...)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	return append(b, body...), true
}

// headerNewlineToSpace is net/http's: line breaks in a value become spaces.
var headerNewlineToSpace = strings.NewReplacer("\n", " ", "\r", " ")

func asciiHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 0x80 || c == '%' || c == ' ' || c == '/' {
			return false
		}
	}
	return true
}

func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return true
		}
	}
	return false
}
