package session

import (
	"encoding/base64"
	"io"
	"net/http"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

type headerKey struct {
	cluster string
	value   string
}

type headerEntry struct {
	ip      string
	port    uint32
	pod     string
	expires time.Time
}

// canonical returns the canonical header key of name, cached: configured
// names are few and http.CanonicalHeaderKey allocates for lower-case ones.
func (m *Manager) canonical(name string) string {
	if v, ok := m.names.Load(name); ok {
		return v.(string)
	}
	c := http.CanonicalHeaderKey(name)
	m.names.Store(name, c)
	return c
}

// HeaderSessions is the number of header sessions currently held.
func (m *Manager) HeaderSessions() int { return m.headers.Len() }

func (m *Manager) newSessionValue() (string, bool) {
	var b [16]byte
	m.randMu.Lock()
	_, err := io.ReadFull(m.rand, b[:])
	m.randMu.Unlock()
	if err != nil {
		return "", false
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), true
}

func (m *Manager) resolveHeader(cfg *weftv1.SessionPersistence, cluster string, endpoints []*weftv1.Endpoint, h http.Header, now time.Time, pick func([]*weftv1.Endpoint) *weftv1.Endpoint) Result {
	name := m.canonical(cfg.GetName())
	value := ""
	if vs := h[name]; len(vs) > 0 {
		value = vs[0]
	}
	if len(value) > maxHeaderValueLen || !validHeaderValue(value) {
		// Not a value we keep a session for; route normally.
		return Result{Endpoint: pick(endpoints)}
	}
	if value != "" {
		if e, ok := m.headers.Get(headerKey{cluster, value}); ok && now.Before(e.expires) {
			for _, ep := range endpoints {
				if ep.GetIp() == e.ip && ep.GetPort() == e.port && ep.GetPod() == e.pod && usable(ep) {
					return Result{Endpoint: ep, Pinned: true}
				}
			}
		}
	}
	ep := pick(endpoints)
	if ep == nil {
		return Result{}
	}
	if value == "" {
		v, ok := m.newSessionValue()
		if !ok {
			return Result{Endpoint: ep}
		}
		value = v
	}
	ttl := absoluteTimeout(cfg)
	if ttl <= 0 {
		ttl = m.headerTTL
	}
	m.headers.Add(headerKey{cluster, value}, headerEntry{ip: ep.GetIp(), port: ep.GetPort(), pod: ep.GetPod(), expires: now.Add(ttl)})
	return Result{Endpoint: ep, HeaderName: name, HeaderValue: value}
}

func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
