package route

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// byteSource turns fuzz input into choices; it yields zeros when exhausted.
type byteSource struct{ b []byte }

func (s *byteSource) next() int {
	if len(s.b) == 0 {
		return 0
	}
	v := s.b[0]
	s.b = s.b[1:]
	return int(v)
}

func (s *byteSource) pick(options []string) string { return options[s.next()%len(options)] }

var (
	fuzzPaths   = []string{"/", "/a", "/a/", "/a/b", "/ab", "/a//b", "/b/c/d", "", "a", "/a/b/", "/%61", "/a?x", "*"}
	fuzzRegexes = []string{"/a.*", "/[ab]+", "(", ".*", "/a/b", "[z-a]", "x|y", "", "\\d+", "/a/b/.*", "/a//b.*", "(?i)/a/b", "/b/c/d?", "/a/b|/b/c.*"}
	fuzzNames   = []string{"x-a", "X-A", "q", "x-b", "x-a", "q", "x-b", "", "bad name"}
	fuzzValues  = []string{"1", "2", "", "v,w", "\r\n", "a"}
	fuzzMethods = []string{"", "", "GET", "POST", "GET", "G T"}
	fuzzQueries = []string{"", "?q=1", "?q=2&q=1", "?x-a=1", "?%zz", "?q"}
	fuzzGRPC    = []string{"", "pkg.S", "M", "pkg\\..*", "(", "Get.*"}
)

// fuzzMatchType is mostly valid, sometimes unspecified or unknown.
func fuzzMatchType(s *byteSource) weftv1.MatchType {
	return []weftv1.MatchType{1, 1, 1, 2, 2, 3, 3, 0, 4}[s.next()%9]
}

func fuzzStringMatches(s *byteSource) []*weftv1.StringMatch {
	n := []int{0, 0, 0, 1, 1, 2}[s.next()%6]
	out := make([]*weftv1.StringMatch, n)
	for i := range out {
		t := fuzzMatchType(s)
		v := s.pick(fuzzValues)
		if t == weftv1.MatchType_MATCH_TYPE_REGEX {
			v = s.pick(fuzzRegexes)
		}
		out[i] = &weftv1.StringMatch{Type: t, Name: s.pick(fuzzNames), Value: v}
	}
	return out
}

func fuzzFilter(s *byteSource) *weftv1.Filter {
	pmod := func() *weftv1.PathModifier {
		if s.next()%2 == 0 {
			return nil
		}
		return &weftv1.PathModifier{Type: weftv1.PathModifier_Type(s.next() % 4), Value: s.pick(fuzzPaths)}
	}
	switch s.next() % 13 % 7 {
	case 0:
		return &weftv1.Filter{Kind: &weftv1.Filter_RequestHeaderModifier{RequestHeaderModifier: &weftv1.HeaderModifier{
			Set: []*weftv1.HeaderModifier_Header{{Name: s.pick(fuzzNames), Value: s.pick(fuzzValues)}}, Remove: []string{s.pick(fuzzNames)}}}}
	case 1:
		return &weftv1.Filter{Kind: &weftv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: &weftv1.HeaderModifier{
			Add: []*weftv1.HeaderModifier_Header{{Name: s.pick(fuzzNames), Value: s.pick(fuzzValues)}}}}}
	case 2:
		return &weftv1.Filter{Kind: &weftv1.Filter_RequestRedirect{RequestRedirect: &weftv1.RequestRedirect{
			Scheme: s.pick([]string{"", "http", "https", "ftp"}), Hostname: s.pick([]string{"", "example.org", "a b"}),
			Port: uint32(s.next() * 300), StatusCode: uint32([]int{0, 301, 302, 200, 308}[s.next()%5]), Path: pmod()}}}
	case 3:
		return &weftv1.Filter{Kind: &weftv1.Filter_UrlRewrite{UrlRewrite: &weftv1.URLRewrite{Hostname: s.pick([]string{"", "h"}), Path: pmod()}}}
	case 4:
		return &weftv1.Filter{Kind: &weftv1.Filter_RequestMirror{RequestMirror: &weftv1.RequestMirror{
			Cluster: s.pick([]string{"", "m"}), Numerator: uint32(s.next() % 5), Denominator: uint32(s.next() % 5)}}}
	case 5:
		return &weftv1.Filter{Kind: &weftv1.Filter_Cors{Cors: &weftv1.CORS{
			AllowOrigins: []string{s.pick([]string{"*", "https://*.a.com", "http://b.com:8080", "bad"})},
			AllowMethods: []string{s.pick([]string{"*", "GET", "G T"})}, AllowCredentials: s.next()%2 == 0,
			AllowHeaders: []string{s.pick([]string{"*", "x-a"})}, ExposeHeaders: []string{s.pick([]string{"*", "x-b"})}}}}
	}
	return &weftv1.Filter{}
}

func fuzzTable(s *byteSource) *weftv1.RouteTable {
	kind := []weftv1.RouteKind{1, 1, 1, 2, 2, 3, 0}[s.next()%7]
	rt := &weftv1.RouteTable{Kind: kind}
	nr := s.next()%4 + 1
	for i := range nr {
		r := &weftv1.Rule{Route: "ns/r", Name: string(rune('a' + i)), RouteKind: kind}
		for range s.next() % 3 {
			b := &weftv1.BackendRef{Cluster: s.pick([]string{"c1", "c2", ""}), Weight: uint32(s.next() % 4)}
			if b.Cluster == "" {
				b.InvalidReason = "BackendNotFound"
			}
			if s.next()%4 == 0 && (kind != weftv1.RouteKind_ROUTE_KIND_TCP || s.next()%8 == 0) {
				b.Filters = []*weftv1.Filter{fuzzFilter(s)}
			}
			r.Backends = append(r.Backends, b)
		}
		if s.next()%3 == 0 && (kind != weftv1.RouteKind_ROUTE_KIND_TCP || s.next()%8 == 0) {
			r.Filters = append(r.Filters, fuzzFilter(s))
		}
		rt.Rules = append(rt.Rules, r)
	}
	nm := s.next() % 8
	for range nm {
		ri := s.next() % (nr + 1)
		if s.next()%8 != 0 {
			ri %= nr // mostly in range
		}
		m := &weftv1.Match{Rule: uint32(ri)}
		sel := s.next() % 5
		switch {
		case kind == weftv1.RouteKind_ROUTE_KIND_HTTP && sel != 0:
			sel = 0
		case kind == weftv1.RouteKind_ROUTE_KIND_GRPC && sel != 0:
			sel = 1
		case kind == weftv1.RouteKind_ROUTE_KIND_TCP && sel != 0:
			sel = 2
		}
		switch sel % 3 {
		case 0:
			h := &weftv1.HTTPMatch{Method: s.pick(fuzzMethods), Headers: fuzzStringMatches(s), QueryParams: fuzzStringMatches(s)}
			if s.next()%4 != 0 {
				t := fuzzMatchType(s)
				v := s.pick(fuzzPaths)
				if t == weftv1.MatchType_MATCH_TYPE_REGEX {
					v = s.pick(fuzzRegexes)
				}
				h.Path = &weftv1.StringMatch{Type: t, Value: v}
			}
			m.Http = h
		case 1:
			m.Grpc = &weftv1.GRPCMatch{Type: fuzzMatchType(s), Service: s.pick(fuzzGRPC), Method: s.pick(fuzzGRPC), Headers: fuzzStringMatches(s)}
		}
		rt.Matches = append(rt.Matches, m)
	}
	return rt
}

func fuzzRequest(s *byteSource) *Request {
	h := make(http.Header)
	for range s.next() % 3 {
		h.Add(s.pick(fuzzNames), s.pick(fuzzValues))
	}
	if s.next()%3 == 0 {
		h.Set("Origin", s.pick([]string{"https://x.a.com", "http://b.com:8080", "null"}))
		h.Set("Access-Control-Request-Method", "GET")
	}
	return &Request{
		Method: s.pick([]string{"GET", "POST", "OPTIONS", ""}),
		Path:   s.pick(fuzzPaths) + s.pick(fuzzQueries),
		Header: h,
	}
}

// linearSelect is the index-free reference: the first match in order.
func linearSelect(t *Table, req *Request) (int, bool) {
	ctx := t.newEval(context.Background(), req)
	for i := range t.matches {
		if t.matches[i].eval(&ctx) {
			return int(t.matches[i].rule), true
		}
	}
	return 0, false
}

func FuzzSelect(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 0, 1, 1, 3, 0, 0, 5, 0, 1, 1, 2, 2, 1, 0, 0})
	f.Add([]byte("\x01\x03\x02\x01\x05\x02\x00\x03\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a"))
	f.Add([]byte("\x02\x01\x01\x01\x04\x01\x01\x02\x03\x01\x01\x02\x02\x00\x01\x02"))
	f.Add([]byte(strings.Repeat("\x01\x02\x03\x04\x05\x06\x07", 20)))
	f.Add([]byte(strings.Repeat("\x01\x00\x01\x02", 30)))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := &byteSource{b: data}
		rt := fuzzTable(s)
		tb, err := Compile(rt)
		if err != nil {
			return
		}
		rnd := func(n int) int { return s.next() % n }
		for range 4 {
			req := fuzzRequest(s)
			d, ok := tb.Select(req)
			wantRule, wantOK := linearSelect(tb, req)
			if ok != wantOK || (ok && d.Rule != &tb.rules[wantRule]) {
				t.Fatalf("indexed Select (%v) differs from linear scan (%v, rule %d) for %+v", ok, wantOK, wantRule, req)
			}
			if !ok {
				continue
			}
			hr := &HTTPRequest{Scheme: "http", Host: "h:81", Port: uint32(s.next()), Path: req.Path, Method: req.Method, Header: req.Header}
			p, err := d.Process(hr, rnd)
			if err == nil && p.Answer == nil {
				if p.Backend == nil || p.Backend.Weight == 0 {
					t.Fatalf("forwarded with backend %+v", p.Backend)
				}
				p.ApplyResponse(make(http.Header))
			}
			if p.Answer != nil && p.Answer.Status == 0 {
				t.Fatal("answer without status")
			}
		}
	})
}

// The generator must reach compiled tables that match requests, or
// FuzzSelect would only exercise Compile's rejections.
func TestFuzzGeneratorReachesSelect(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	compiled, matched := 0, 0
	for range 3000 {
		data := make([]byte, 120)
		for i := range data {
			data[i] = byte(r.IntN(256))
		}
		s := &byteSource{b: data}
		tb, err := Compile(fuzzTable(s))
		if err != nil {
			continue
		}
		compiled++
		if _, ok := tb.Select(fuzzRequest(s)); ok {
			matched++
		}
	}
	t.Logf("compiled %d, matched %d of 3000", compiled, matched)
	if compiled < 200 || matched < 80 {
		t.Fatalf("compiled %d, matched %d of 3000: generator too restrictive", compiled, matched)
	}
}
