package session

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// FuzzDecodeCookie: decoding never panics, and no value other than one
// this key issued for that endpoint, cluster and time authenticates.
func FuzzDecodeCookie(f *testing.F) {
	m, err := New(Config{Keys: [][]byte{key1}})
	if err != nil {
		f.Fatal(err)
	}
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b"), {Ip: "fd00::5", Port: 8080, Pod: "ns/v6", Ready: true}}
	good := m.encodeCookie("c", "ns/a", netip.MustParseAddrPort("10.244.1.5:8080"), t0)
	good6 := m.encodeCookie("c", "ns/v6", netip.MustParseAddrPort("[fd00::5]:8080"), t0)
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	f.Add(good)
	f.Add(good6)
	f.Add(good[:20])
	f.Add(good + "A")
	f.Add("")
	f.Add("=")
	f.Add("AQ")
	f.Add(base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), raw[:31]...), raw[31]^0x80)))
	f.Add(base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 44)))
	f.Add(base64.RawURLEncoding.EncodeToString(append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 16}, make([]byte, 34)...)))
	f.Add(good + "." + good6)
	f.Add(good6 + ".." + good + ".x.y.z")
	f.Fuzz(func(t *testing.T, v string) {
		// Whole cookie values (several entries) through Resolve: a re-issued
		// cookie is bounded and made only of well-formed entries.
		h := http.Header{"Cookie": {"weft-session=" + v}}
		first := func(e []*weftv1.Endpoint) *weftv1.Endpoint { return e[0] }
		r := m.Resolve(&weftv1.SessionPersistence{}, "c", eps, h, t0, first)
		if r.SetCookie != nil {
			parts := strings.Split(r.SetCookie.Value, ".")
			if len(parts) > maxEntries {
				t.Fatalf("%d entries", len(parts))
			}
			for _, p := range parts {
				if _, err := decodeCookie(p); err != nil {
					t.Fatalf("re-issued entry %q malformed", p)
				}
			}
		}
		c, err := decodeCookie(v)
		got, verr := m.verifyCookie(v, "c", eps, t0.Add(time.Minute), time.Hour)
		if err != nil {
			if verr == nil {
				t.Fatalf("undecodable %q verified", v)
			}
			return
		}
		if verr != nil {
			return
		}
		// Authenticated: it must be exactly what the key issues.
		want := m.encodeCookie("c", got.GetPod(), c.addr, time.Unix(c.issued, 0))
		if want != v {
			t.Fatalf("%q authenticated but the key issues %q", v, want)
		}
		// Through Resolve too.
		r = m.Resolve(&weftv1.SessionPersistence{}, "c", eps, h, t0, func([]*weftv1.Endpoint) *weftv1.Endpoint { return nil })
		if r.Endpoint != got {
			t.Fatalf("Resolve chose %v, verify %v", r.Endpoint, got)
		}
	})
}
