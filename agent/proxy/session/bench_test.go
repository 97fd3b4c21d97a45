package session

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func benchEndpoints(n int) []*weftv1.Endpoint {
	eps := make([]*weftv1.Endpoint, n)
	for i := range eps {
		eps[i] = &weftv1.Endpoint{Ip: fmt.Sprintf("10.244.%d.%d", i/250, i%250+1), Port: 8080, Pod: fmt.Sprintf("ns/pod-%d", i), Ready: true, Serving: true}
	}
	return eps
}

func BenchmarkCookieEncode(b *testing.B) {
	m, _ := New(Config{Keys: [][]byte{key1}})
	ap := netip.MustParseAddrPort("10.244.1.5:8080")
	b.ReportAllocs()
	for b.Loop() {
		m.encodeCookie("ns/echo:80", "ns/echo-7d9f", ap, t0)
	}
}

func BenchmarkCookieDecodeVerify(b *testing.B) {
	m, _ := New(Config{Keys: [][]byte{key1}})
	eps := benchEndpoints(100)
	v := m.encodeCookie("ns/echo:80", eps[57].Pod, netip.MustParseAddrPort("10.244.0.58:8080"), t0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.verifyCookie(v, "ns/echo:80", eps, t0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// The per-request cost of a pinned cookie session (parse the Cookie header,
// verify, find the endpoint among 100).
func BenchmarkResolveCookiePinned(b *testing.B) {
	m, _ := New(Config{Keys: [][]byte{key1}})
	eps := benchEndpoints(100)
	cfg := &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_COOKIE, Name: "sticky"}
	first := m.Resolve(cfg, "c", eps, http.Header{}, t0, func(e []*weftv1.Endpoint) *weftv1.Endpoint { return e[57] })
	h := http.Header{"Cookie": {"a=1; sticky=" + first.SetCookie.Value + "; b=2"}}
	b.ReportAllocs()
	for b.Loop() {
		if r := m.Resolve(cfg, "c", eps, h, t0, nil); !r.Pinned {
			b.Fatal("not pinned")
		}
	}
}

func BenchmarkResolveHeaderPinned(b *testing.B) {
	m, _ := New(Config{Keys: [][]byte{key1}})
	eps := benchEndpoints(100)
	cfg := &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_HEADER, Name: "x-session"}
	first := m.Resolve(cfg, "c", eps, http.Header{}, t0, func(e []*weftv1.Endpoint) *weftv1.Endpoint { return e[57] })
	h := http.Header{"X-Session": {first.HeaderValue}}
	b.ReportAllocs()
	for b.Loop() {
		if r := m.Resolve(cfg, "c", eps, h, t0, nil); !r.Pinned {
			b.Fatal("not pinned")
		}
	}
}
