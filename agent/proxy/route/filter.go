package route

import (
	"net/http"
	"strings"
)

// FilterKind says which field of a Filter is set.
type FilterKind uint8

const (
	FilterRequestHeaders FilterKind = iota + 1
	FilterResponseHeaders
	FilterRedirect
	FilterRewrite
	FilterMirror
	FilterCORS
)

// Filter is one compiled filter; exactly the field named by Kind is set.
type Filter struct {
	Kind     FilterKind
	Headers  *HeaderModifier // FilterRequestHeaders, FilterResponseHeaders
	Redirect *Redirect
	Rewrite  *Rewrite
	Mirror   *Mirror
	CORS     *CORS
}

// HeaderModifier is a compiled request or response header modifier. Names
// are canonical (net/http) keys; matching is case-insensitive.
type HeaderModifier struct {
	Set    []Header
	Add    []Header
	Remove []string
}

// Header is one name/value pair.
type Header struct {
	Name  string
	Value string
}

// Apply edits h in place: set replaces every value of the name, add
// appends a value (so the backend sees "old,new" when joined), remove drops
// the name. The order is set, add, remove, as Envoy and the conformance
// tests expect.
func (m *HeaderModifier) Apply(h http.Header) {
	for _, s := range m.Set {
		h[s.Name] = []string{s.Value}
	}
	for _, a := range m.Add {
		h[a.Name] = append(h[a.Name], a.Value)
	}
	for _, r := range m.Remove {
		delete(h, r)
	}
}

// Mirror is a compiled RequestMirror filter.
type Mirror struct {
	// Cluster receives a copy of mirrored requests; its responses are
	// discarded and never affect the client's response.
	Cluster     string
	Numerator   uint32
	Denominator uint32
}

// Mirrored reports whether this request is mirrored: with probability
// Numerator/Denominator, drawing rnd(Denominator).
func (m *Mirror) Mirrored(rnd func(n int) int) bool {
	if m.Numerator == 0 {
		return false
	}
	if m.Numerator >= m.Denominator {
		return true
	}
	return rnd(int(m.Denominator)) < int(m.Numerator)
}

// HTTPRequest is the part of a request the filters read and change. The
// proxy fills it from the incoming request, runs Process, and forwards the
// (possibly modified) values.
type HTTPRequest struct {
	// Scheme the client used: "http" (the mesh default) or "https".
	Scheme string
	// Host is the authority (Host header or :authority), maybe with a port.
	Host string
	// Port is the Service port the request was sent to: the "listener
	// port" of the redirect rules.
	Port uint32
	// Path is the raw path with optional "?query".
	Path   string
	Method string
	Header http.Header
}

// Answer is a response the proxy produces itself without a backend: a
// redirect or a CORS preflight answer. Body is empty.
type Answer struct {
	Status int
	Header http.Header
}

// Plan is what Process decided for one request.
type Plan struct {
	// Answer, when non-nil, is the whole response: send it and forward
	// nothing (Backend may be nil).
	Answer *Answer
	// Backend is the picked backend (nil when Answer was decided before
	// backend selection).
	Backend *Backend
	// Mirrors are the clusters that get a copy of this request.
	Mirrors []string

	response []*HeaderModifier
	cors     []*CORS
	origin   string
}

// ApplyResponse edits the backend's response headers: the response header
// modifiers of the rule then the backend, and the CORS headers for the
// request's Origin.
func (p *Plan) ApplyResponse(h http.Header) {
	for _, c := range p.cors {
		c.responseHeaders(p.origin, h)
	}
	for _, m := range p.response {
		m.Apply(h)
	}
}

// Process runs the rule-level filters, picks a backend by weight (rnd as in
// PickBackend), then runs that backend's filters, editing req in place
// (headers, Host, Path). A redirect or a CORS preflight answers the request
// (Plan.Answer); when it comes from a rule-level filter no backend is
// picked, so a redirect rule needs no backends. The error is ErrNoBackend
// or ErrInvalidBackend: answer 500.
func (d *Decision) Process(req *HTTPRequest, rnd func(n int) int) (Plan, error) {
	var p Plan
	if d == nil || d.Rule == nil {
		return p, ErrNoBackend
	}
	if req == nil {
		req = &HTTPRequest{}
	}
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	if o := req.Header["Origin"]; len(o) > 0 {
		p.origin = o[0]
	}
	if p.run(d, d.Rule.Filters, req, rnd) {
		return p, nil
	}
	b, err := d.Rule.PickBackend(rnd)
	if err != nil {
		return p, err
	}
	p.Backend = b
	p.run(d, b.Filters, req, rnd)
	return p, nil
}

// run applies filters in order and reports whether one answered.
func (p *Plan) run(d *Decision, fs []Filter, req *HTTPRequest, rnd func(n int) int) bool {
	for i := range fs {
		f := &fs[i]
		switch f.Kind {
		case FilterRequestHeaders:
			f.Headers.Apply(req.Header)
		case FilterResponseHeaders:
			p.response = append(p.response, f.Headers)
		case FilterRedirect:
			loc, status := f.Redirect.Location(req, d.MatchedPrefix)
			p.Answer = &Answer{Status: status, Header: http.Header{"Location": {loc}}}
			return true
		case FilterRewrite:
			req.Host, req.Path = f.Rewrite.Apply(req.Host, req.Path, d.MatchedPrefix)
		case FilterMirror:
			if f.Mirror.Mirrored(rnd) {
				p.Mirrors = append(p.Mirrors, f.Mirror.Cluster)
			}
		case FilterCORS:
			if IsPreflight(req.Method, req.Header) {
				p.Answer = f.CORS.Preflight(req.Header)
				return true
			}
			p.cors = append(p.cors, f.CORS)
		}
	}
	return false
}

// splitPathQuery splits "path?query" into path and "?query" (with the "?").
func splitPathQuery(p string) (path, query string) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i], p[i:]
	}
	return p, ""
}
