package session

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func headerCfg(timeout time.Duration) *weftv1.SessionPersistence {
	c := &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_HEADER, Name: "x-session-id"}
	if timeout > 0 {
		c.AbsoluteTimeout = durationpb.New(timeout)
	}
	return c
}

// counterReader yields 0,1,2,... so generated session values are known.
type counterReader struct{ n byte }

func (c *counterReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.n
		c.n++
	}
	return len(p), nil
}

func TestHeaderSessionIssuesAndPins(t *testing.T) {
	m := newManager(t, Config{Rand: &counterReader{}})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	cfg := headerCfg(0)
	p := &picker{i: 1}
	first := m.Resolve(cfg, "c", eps, http.Header{}, t0, p.pick)
	// The first response tells the client its session value (GEP-1619
	// GRPCRoute conformance: "First request MUST receive a session
	// identity header in the response metadata").
	if first.Endpoint != eps[1] || first.HeaderName != "X-Session-Id" || first.HeaderValue != "AAECAwQFBgcICQoLDA0ODw" {
		t.Fatalf("first: %+v", first)
	}
	h := http.Header{"X-Session-Id": {first.HeaderValue}}
	for i := range 50 {
		r := m.Resolve(cfg, "c", eps, h, t0.Add(time.Duration(i)*time.Second), p.pick)
		if !r.Pinned || r.Endpoint != eps[1] || r.HeaderName != "" {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	if p.calls != 1 || m.HeaderSessions() != 1 {
		t.Fatalf("pick calls %d sessions %d", p.calls, m.HeaderSessions())
	}
	// Another client gets another value.
	second := m.Resolve(cfg, "c", eps, http.Header{}, t0, p.pick)
	if second.HeaderValue == first.HeaderValue || second.HeaderValue == "" {
		t.Fatalf("second value %q", second.HeaderValue)
	}
}

func TestHeaderSessionExpiry(t *testing.T) {
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	for _, tc := range []struct {
		name    string
		cfg     *weftv1.SessionPersistence
		mcfg    Config
		timeout time.Duration
	}{
		{"absoluteTimeout", headerCfg(10 * time.Minute), Config{}, 10 * time.Minute},
		{"default ttl", headerCfg(0), Config{}, DefaultHeaderTTL},
		{"configured ttl", headerCfg(0), Config{HeaderTTL: time.Minute}, time.Minute},
	} {
		m := newManager(t, tc.mcfg)
		p := &picker{}
		h := http.Header{"X-Session-Id": {"client-chosen"}}
		r := m.Resolve(tc.cfg, "c", eps, h, t0, p.pick)
		if r.Pinned || r.HeaderValue != "client-chosen" || r.Endpoint != eps[0] {
			t.Fatalf("%s: first %+v", tc.name, r)
		}
		if r := m.Resolve(tc.cfg, "c", eps, h, t0.Add(tc.timeout-time.Second), p.pick); !r.Pinned {
			t.Fatalf("%s: before expiry %+v", tc.name, r)
		}
		r = m.Resolve(tc.cfg, "c", eps, h, t0.Add(tc.timeout), p.pick)
		if r.Pinned || r.Endpoint != eps[1] || r.HeaderValue != "client-chosen" {
			t.Fatalf("%s: after expiry %+v", tc.name, r)
		}
	}
}

func TestHeaderSessionEndpointChanges(t *testing.T) {
	m := newManager(t, Config{})
	a, b := ep("10.244.1.5", "a"), ep("10.244.2.7", "b")
	cfg := headerCfg(0)
	h := http.Header{"X-Session-Id": {"s1"}}
	m.Resolve(cfg, "c", []*weftv1.Endpoint{a, b}, h, t0, (&picker{}).pick)

	terminating := &weftv1.Endpoint{Ip: a.Ip, Port: a.Port, Pod: a.Pod, Serving: true, Terminating: true}
	if r := m.Resolve(cfg, "c", []*weftv1.Endpoint{terminating, b}, h, t0, (&picker{i: 1}).pick); !r.Pinned || r.Endpoint != terminating {
		t.Fatalf("terminating but serving: %+v", r)
	}
	reused := &weftv1.Endpoint{Ip: a.Ip, Port: a.Port, Pod: "ns/other", Ready: true}
	r := m.Resolve(cfg, "c", []*weftv1.Endpoint{reused, b}, h, t0, (&picker{i: 1}).pick)
	if r.Pinned || r.Endpoint != b || r.HeaderValue != "s1" {
		t.Fatalf("reused IP: %+v", r)
	}
	// The session now follows b.
	if r := m.Resolve(cfg, "c", []*weftv1.Endpoint{a, b}, h, t0, (&picker{}).pick); !r.Pinned || r.Endpoint != b {
		t.Fatalf("after re-pick: %+v", r)
	}
	// Gone: re-picked.
	if r := m.Resolve(cfg, "c", []*weftv1.Endpoint{a}, h, t0, (&picker{}).pick); r.Pinned || r.Endpoint != a {
		t.Fatalf("gone: %+v", r)
	}
}

// Sessions are per cluster: the same value in another backend is another
// session.
func TestHeaderSessionPerCluster(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a"), ep("10.244.2.7", "b")}
	h := http.Header{"X-Session-Id": {"s"}}
	m.Resolve(headerCfg(0), "v1", eps, h, t0, (&picker{}).pick)
	if r := m.Resolve(headerCfg(0), "v2", eps, h, t0, (&picker{i: 1}).pick); r.Pinned || r.Endpoint != eps[1] {
		t.Fatalf("v2: %+v", r)
	}
	if r := m.Resolve(headerCfg(0), "v1", eps, h, t0, (&picker{i: 1}).pick); !r.Pinned || r.Endpoint != eps[0] {
		t.Fatalf("v1: %+v", r)
	}
}

func TestHeaderSessionTableIsBounded(t *testing.T) {
	m := newManager(t, Config{HeaderTableSize: 2})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a")}
	for _, v := range []string{"s1", "s2", "s3"} {
		m.Resolve(headerCfg(0), "c", eps, http.Header{"X-Session-Id": {v}}, t0, (&picker{}).pick)
	}
	if m.HeaderSessions() != 2 {
		t.Fatalf("sessions %d, want 2", m.HeaderSessions())
	}
	// s1 was evicted (least recently used).
	if r := m.Resolve(headerCfg(0), "c", eps, http.Header{"X-Session-Id": {"s1"}}, t0, (&picker{}).pick); r.Pinned {
		t.Fatal("evicted session still pinned")
	}
	if r := m.Resolve(headerCfg(0), "c", eps, http.Header{"X-Session-Id": {"s3"}}, t0, (&picker{}).pick); !r.Pinned {
		t.Fatal("recent session lost")
	}
}

func TestHeaderSessionIgnoresBadValues(t *testing.T) {
	m := newManager(t, Config{})
	eps := []*weftv1.Endpoint{ep("10.244.1.5", "a")}
	for _, v := range []string{strings.Repeat("x", 300), "a\x00b"} {
		r := m.Resolve(headerCfg(0), "c", eps, http.Header{"X-Session-Id": {v}}, t0, (&picker{}).pick)
		if r.Endpoint != eps[0] || r.HeaderName != "" || r.Pinned {
			t.Errorf("%q: %+v", v, r)
		}
	}
	if m.HeaderSessions() != 0 {
		t.Fatalf("bad values stored: %d", m.HeaderSessions())
	}
	// A failing random source: route without a session.
	m2 := newManager(t, Config{Rand: bytes.NewReader(nil)})
	if r := m2.Resolve(headerCfg(0), "c", eps, http.Header{}, t0, (&picker{}).pick); r.Endpoint != eps[0] || r.HeaderName != "" {
		t.Fatalf("failing rand: %+v", r)
	}
}
