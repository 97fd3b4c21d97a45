package session

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

var (
	t0   = time.Date(2026, 11, 22, 2, 0, 0, 0, time.UTC)
	key1 = bytes.Repeat([]byte{1}, 32)
	key2 = bytes.Repeat([]byte{2}, 32)
)

func ep(ip, pod string) *weftv1.Endpoint {
	return &weftv1.Endpoint{Ip: ip, Port: 8080, Pod: "ns/" + pod, Ready: true, Serving: true}
}

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	if cfg.Keys == nil {
		cfg.Keys = [][]byte{key1}
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// picker returns the endpoints in turn and counts calls.
type picker struct {
	i, calls int
}

func (p *picker) pick(eps []*weftv1.Endpoint) *weftv1.Endpoint {
	p.calls++
	for range eps {
		e := eps[p.i%len(eps)]
		p.i++
		if e.GetReady() {
			return e
		}
	}
	return nil
}

func cookieCfg(lifetime weftv1.SessionPersistence_Lifetime, timeout time.Duration) *weftv1.SessionPersistence {
	c := &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_COOKIE, Name: "sticky", Lifetime: lifetime}
	if timeout > 0 {
		c.AbsoluteTimeout = durationpb.New(timeout)
	}
	return c
}

func withCookie(c *http.Cookie) http.Header {
	h := make(http.Header)
	if c != nil {
		h.Set("Cookie", c.Name+"="+c.Value)
	}
	return h
}

func TestCookieSessionPinsEndpoint(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b"), ep("10.244.3.9", "c")}
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, 0)
	p := &picker{i: 1}
	first := m.Resolve(cfg, "ns/echo:80", eps, http.Header{}, t0, p.pick)
	if first.Endpoint != eps[1] || first.Pinned || first.SetCookie == nil {
		t.Fatalf("first: %+v", first)
	}
	c := first.SetCookie
	if c.Name != "sticky" || c.Path != "/" || c.MaxAge != 0 || !c.Expires.IsZero() || !c.HttpOnly {
		t.Fatalf("session cookie attributes: %+v", c)
	}
	if s := c.String(); strings.Contains(s, "Max-Age") || strings.Contains(s, "Expires") {
		t.Fatalf("session cookie carries a lifetime: %s", s)
	}
	for i := range 50 {
		r := m.Resolve(cfg, "ns/echo:80", eps, withCookie(c), t0.Add(time.Duration(i)*time.Hour), p.pick)
		if r.Endpoint != eps[1] || !r.Pinned || r.SetCookie != nil {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	if p.calls != 1 {
		t.Fatalf("pick called %d times, want 1", p.calls)
	}
}

func TestCookiePermanentLifetime(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_PERMANENT, 5*time.Minute)
	cfg.CookiePath = "/app"
	p := &picker{}
	r := m.Resolve(cfg, "c", eps, http.Header{}, t0, p.pick)
	c := r.SetCookie
	if c == nil || c.MaxAge != 300 || !c.Expires.Equal(t0.Add(5*time.Minute)) || c.Path != "/app" {
		t.Fatalf("permanent cookie: %+v", c)
	}
	if s := c.String(); !strings.Contains(s, "Max-Age=300") || !strings.Contains(s, "Expires=Sun, 22 Nov 2026 02:05:00 GMT") {
		t.Fatalf("Set-Cookie %q", s)
	}
	// Valid until the absolute timeout, then a new pick and a new cookie.
	if r2 := m.Resolve(cfg, "c", eps, withCookie(c), t0.Add(299*time.Second), p.pick); !r2.Pinned || r2.Endpoint != eps[0] {
		t.Fatalf("before expiry: %+v", r2)
	}
	r3 := m.Resolve(cfg, "c", eps, withCookie(c), t0.Add(300*time.Second), p.pick)
	if r3.Pinned || r3.SetCookie == nil || r3.Endpoint != eps[1] {
		t.Fatalf("after expiry: %+v", r3)
	}
}

func TestCookiePermanentSubSecondTimeout(t *testing.T) {
	m := newManager(t, Config{})
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_PERMANENT, 1500*time.Millisecond)
	r := m.Resolve(cfg, "c", []*weftv1.Endpoint{ep("10.244.1.5", "a")}, http.Header{}, t0, (&picker{}).pick)
	if r.SetCookie.MaxAge != 2 {
		t.Fatalf("Max-Age %d, want 2 (rounded up)", r.SetCookie.MaxAge)
	}
}

func TestCookieSessionLifetimeTrackedServerSide(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, time.Hour)
	p := &picker{}
	r := m.Resolve(cfg, "c", eps, http.Header{}, t0, p.pick)
	if r.SetCookie.MaxAge != 0 || !r.SetCookie.Expires.IsZero() {
		t.Fatalf("session cookie with lifetime attributes: %+v", r.SetCookie)
	}
	if r2 := m.Resolve(cfg, "c", eps, withCookie(r.SetCookie), t0.Add(59*time.Minute), p.pick); !r2.Pinned {
		t.Fatalf("inside the timeout: %+v", r2)
	}
	if r3 := m.Resolve(cfg, "c", eps, withCookie(r.SetCookie), t0.Add(time.Hour), p.pick); r3.Pinned || r3.SetCookie == nil {
		t.Fatalf("at the timeout: %+v", r3)
	}
}

func TestCookieRejectsForgery(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, 0)
	good := m.Resolve(cfg, "c", eps, http.Header{}, t0, (&picker{}).pick).SetCookie.Value
	raw, _ := base64.RawURLEncoding.DecodeString(good)

	// Layout: version 0, tag 1-4, issued 5-12, address length 13,
	// address 14-17, port 18-19, MAC 20-35.
	// Point the value at the other endpoint (10.244.2.7) keeping the MAC.
	retarget := append([]byte(nil), raw...)
	copy(retarget[14:18], []byte{10, 244, 2, 7})
	// Flip one MAC bit.
	flipped := append([]byte(nil), raw...)
	flipped[len(flipped)-1] ^= 1
	// Move the issue time back (would extend a timed session).
	older := append([]byte(nil), raw...)
	older[12]--
	// Another port on the same pod.
	port := append([]byte(nil), raw...)
	port[19]++
	other := newManager(t, Config{Keys: [][]byte{key2}})
	otherKey := other.Resolve(cfg, "c", eps, http.Header{}, t0, (&picker{}).pick).SetCookie.Value

	enc := base64.RawURLEncoding.EncodeToString
	cases := map[string]string{
		"retargeted":     enc(retarget),
		"mac bit":        enc(flipped),
		"issue time":     enc(older),
		"other key":      otherKey,
		"truncated":      good[:len(good)-2],
		"garbage":        "not-a-cookie",
		"padded":         good + "==",
		"empty":          "",
		"port":           enc(port),
		"non-url b64":    "+" + good[1:],
		"version 2":      enc(append([]byte{2}, raw[1:]...)),
		"long":           strings.Repeat("A", 500),
		"address length": enc(append(append([]byte(nil), raw[:13]...), append([]byte{5}, raw[14:]...)...)),
		"too many dots":  "....." + good,
	}
	for name, v := range cases {
		p := &picker{i: 1}
		h := http.Header{"Cookie": {"sticky=" + v}}
		r := m.Resolve(cfg, "c", eps, h, t0, p.pick)
		if r.Pinned || p.calls != 1 || r.SetCookie == nil {
			t.Errorf("%s: accepted: %+v", name, r)
		}
	}
	// The genuine value still works.
	if r := m.Resolve(cfg, "c", eps, http.Header{"Cookie": {"sticky=" + good}}, t0, (&picker{}).pick); !r.Pinned {
		t.Fatalf("genuine cookie rejected: %+v", r)
	}
}

// A cookie issued for one cluster (backend) does not pin in another, even
// if the other cluster has an endpoint at the same address.
func TestCookieBoundToCluster(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a")}
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, 0)
	c := m.Resolve(cfg, "ns/v1:80", eps, http.Header{}, t0, (&picker{}).pick).SetCookie
	if r := m.Resolve(cfg, "ns/v2:80", eps, withCookie(c), t0, (&picker{}).pick); r.Pinned {
		t.Fatalf("cookie moved to another cluster: %+v", r)
	}
	if r := m.Resolve(cfg, "ns/v1:80", eps, withCookie(c), t0, (&picker{}).pick); !r.Pinned {
		t.Fatalf("cookie rejected in its own cluster: %+v", r)
	}
}

func TestCookieKeyRotation(t *testing.T) {
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, 0)
	old := newManager(t, Config{Keys: [][]byte{key1}})
	c := old.Resolve(cfg, "c", eps, http.Header{}, t0, (&picker{i: 1}).pick).SetCookie
	rotated := newManager(t, Config{Keys: [][]byte{key2, key1}})
	if r := rotated.Resolve(cfg, "c", eps, withCookie(c), t0, (&picker{}).pick); !r.Pinned || r.Endpoint != eps[1] {
		t.Fatalf("old-key cookie after rotation: %+v", r)
	}
	dropped := newManager(t, Config{Keys: [][]byte{key2}})
	if r := dropped.Resolve(cfg, "c", eps, withCookie(c), t0, (&picker{}).pick); r.Pinned {
		t.Fatalf("cookie of a dropped key accepted: %+v", r)
	}
}

func TestCookieEndpointChanges(t *testing.T) {
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, 0)
	m := newManager(t, Config{})
	a, b := ep("10.244.1.5", "a"), ep("10.244.2.7", "b")
	c := m.Resolve(cfg, "c", []*weftv1.Endpoint{a, b}, http.Header{}, t0, (&picker{}).pick).SetCookie

	terminating := &weftv1.Endpoint{Ip: a.Ip, Port: a.Port, Pod: a.Pod, Serving: true, Terminating: true}
	notServing := &weftv1.Endpoint{Ip: a.Ip, Port: a.Port, Pod: a.Pod, Terminating: true}
	reusedIP := &weftv1.Endpoint{Ip: a.Ip, Port: a.Port, Pod: "ns/new-pod", Ready: true, Serving: true}
	cases := []struct {
		name   string
		eps    []*weftv1.Endpoint
		pinned bool
	}{
		{"still there", []*weftv1.Endpoint{a, b}, true},
		{"terminating but serving keeps its sessions", []*weftv1.Endpoint{terminating, b}, true},
		{"not serving", []*weftv1.Endpoint{notServing, b}, false},
		{"gone", []*weftv1.Endpoint{b}, false},
		{"IP reused by another pod", []*weftv1.Endpoint{reusedIP, b}, false},
	}
	for _, tc := range cases {
		p := &picker{i: 1}
		r := m.Resolve(cfg, "c", tc.eps, withCookie(c), t0, p.pick)
		if r.Pinned != tc.pinned {
			t.Errorf("%s: pinned %v, want %v (%+v)", tc.name, r.Pinned, tc.pinned, r)
			continue
		}
		if tc.pinned && (r.Endpoint.Ip != a.Ip || r.SetCookie != nil) {
			t.Errorf("%s: %+v", tc.name, r)
		}
		if !tc.pinned && (r.SetCookie == nil || p.calls != 1 || r.Endpoint == nil) {
			t.Errorf("%s: not re-picked with a new cookie: %+v", tc.name, r)
		}
	}
}

func TestCookieSeveralValues(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, 0)
	c := m.Resolve(cfg, "c", eps, http.Header{}, t0, (&picker{i: 1}).pick).SetCookie
	h := http.Header{"Cookie": {`other=1; sticky=bogus`, `sticky="` + c.Value + `"; x=y`}}
	if r := m.Resolve(cfg, "c", eps, h, t0, (&picker{}).pick); !r.Pinned || r.Endpoint != eps[1] {
		t.Fatalf("valid second value not used: %+v", r)
	}
}

func TestCookieIPv6AndDefaults(t *testing.T) {
	m := newManager(t, Config{})
	v6 := &weftv1.Endpoint{Ip: "fd00:10:244::5", Port: 443, Pod: "ns/v6", Ready: true}
	cfg := &weftv1.SessionPersistence{} // type unspecified: cookie, default name
	r := m.Resolve(cfg, "c", []*weftv1.Endpoint{v6}, http.Header{}, t0, (&picker{}).pick)
	if r.SetCookie == nil || r.SetCookie.Name != DefaultCookieName {
		t.Fatalf("%+v", r)
	}
	// The controller may spell the address differently later.
	respelled := &weftv1.Endpoint{Ip: "fd00:10:244:0:0:0:0:5", Port: 443, Pod: "ns/v6", Ready: true}
	if r2 := m.Resolve(cfg, "c", []*weftv1.Endpoint{respelled}, withCookie(r.SetCookie), t0, (&picker{}).pick); !r2.Pinned {
		t.Fatalf("v6 cookie rejected: %+v", r2)
	}
}

func TestResolveWithoutPersistenceOrEndpoints(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a")}
	p := &picker{}
	if r := m.Resolve(nil, "c", eps, http.Header{}, t0, p.pick); r.Endpoint != eps[0] || r.SetCookie != nil || r.HeaderName != "" {
		t.Fatalf("nil config: %+v", r)
	}
	none := func([]*weftv1.Endpoint) *weftv1.Endpoint { return nil }
	if r := m.Resolve(cookieCfg(1, 0), "c", nil, http.Header{}, t0, none); r.Endpoint != nil || r.SetCookie != nil {
		t.Fatalf("no endpoint: %+v", r)
	}
	if r := m.Resolve(&weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_HEADER, Name: "x-s"}, "c", nil, http.Header{}, t0, none); r.Endpoint != nil || r.HeaderName != "" {
		t.Fatalf("no endpoint (header): %+v", r)
	}
}

func TestNewRejectsShortKey(t *testing.T) {
	if _, err := New(Config{Keys: [][]byte{[]byte("short")}}); !errors.Is(err, ErrShortKey) {
		t.Fatalf("err %v", err)
	}
	// No key: a random one is generated from Rand.
	m, err := New(Config{Rand: bytes.NewReader(bytes.Repeat([]byte{9}, 64))})
	if err != nil || len(m.keys) != 1 {
		t.Fatalf("generated key: %v %v", m, err)
	}
	same := newManager(t, Config{Keys: [][]byte{bytes.Repeat([]byte{9}, 32)}})
	ap := netip.MustParseAddrPort("10.0.0.1:80")
	if m.encodeCookie("c", "p", ap, t0) != same.encodeCookie("c", "p", ap, t0) {
		t.Fatal("generated key is not the 32 bytes read from Rand")
	}
	if _, err := New(Config{Rand: bytes.NewReader(nil)}); err == nil {
		t.Fatal("no error when the random source fails")
	}
}

// The proxy calls Resolve from many goroutines at once (run with -race).
func TestResolveConcurrent(t *testing.T) {
	m := newManager(t, Config{HeaderTableSize: 64})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	cookie := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, time.Hour)
	header := headerCfg(time.Hour)
	c := m.Resolve(cookie, "c", eps, http.Header{}, t0, (&picker{}).pick).SetCookie
	done := make(chan bool)
	for g := range 8 {
		go func() {
			ok := true
			for i := range 200 {
				pick := func(e []*weftv1.Endpoint) *weftv1.Endpoint { return e[i%len(e)] }
				if r := m.Resolve(cookie, "c", eps, withCookie(c), t0, pick); !r.Pinned || r.Endpoint != eps[0] {
					ok = false
				}
				v := fmt.Sprintf("s-%d-%d", g, i%10)
				m.Resolve(header, "c", eps, http.Header{"X-Session-Id": {v}}, t0, pick)
				m.Resolve(header, "c", eps, http.Header{}, t0, pick)
			}
			done <- ok
		}()
	}
	for range 8 {
		if !<-done {
			t.Error("a pinned cookie was not honoured under concurrency")
		}
	}
	if n := m.HeaderSessions(); n > 64 {
		t.Fatalf("header table grew to %d, bound 64", n)
	}
}

// A re-issued cookie keeps one entry per other cluster, at most
// maxEntries in all, and drops this cluster's stale entries.
func TestCookieEntriesCarryOver(t *testing.T) {
	m := newManager(t, Config{})
	cfg := cookieCfg(weftv1.SessionPersistence_LIFETIME_SESSION, 0)
	a := []*weftv1.Endpoint{ep("10.244.1.5", "a")}
	var entries []string
	for _, cl := range []string{"c1", "c2", "c3", "c4", "c5"} {
		entries = append(entries, m.Resolve(cfg, cl, a, http.Header{}, t0, (&picker{}).pick).SetCookie.Value)
	}
	// Duplicate of c1, and a stale entry of the target cluster (its
	// endpoint is gone).
	stale := m.Resolve(cfg, "target", []*weftv1.Endpoint{ep("10.244.9.9", "old")}, http.Header{}, t0, (&picker{}).pick).SetCookie.Value
	value := strings.Join([]string{stale, entries[0], entries[0], entries[1]}, ".")
	r := m.Resolve(cfg, "target", a, http.Header{"Cookie": {"sticky=" + value}}, t0, (&picker{}).pick)
	if r.Pinned || r.SetCookie == nil {
		t.Fatalf("%+v", r)
	}
	got := strings.Split(r.SetCookie.Value, ".")
	if len(got) != 3 || got[1] != entries[0] || got[2] != entries[1] {
		t.Fatalf("entries %q, want new + c1 + c2", got)
	}
	// net/http keeps the value intact in the Set-Cookie line.
	if line := r.SetCookie.String(); !strings.HasPrefix(line, "sticky="+r.SetCookie.Value+"; Path=/; HttpOnly; SameSite=Lax") {
		t.Fatalf("Set-Cookie %q", line)
	}
	// The new entry and the carried ones all still pin in their clusters.
	for i, cl := range []string{"target", "c1", "c2"} {
		if r := m.Resolve(cfg, cl, a, withCookie(r.SetCookie), t0, (&picker{}).pick); !r.Pinned {
			t.Errorf("entry %d (%s) no longer pins", i, cl)
		}
	}
	// Never more than maxEntries.
	value = strings.Join(entries, ".")
	r = m.Resolve(cfg, "target", a, http.Header{"Cookie": {"sticky=" + value}}, t0, (&picker{}).pick)
	if n := len(strings.Split(r.SetCookie.Value, ".")); n != maxEntries {
		t.Fatalf("%d entries, want %d", n, maxEntries)
	}
}
