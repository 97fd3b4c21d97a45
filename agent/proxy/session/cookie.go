package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// A cookie value is one to maxEntries entries joined by ".", one entry per
// cluster (backend), so that a rule's single inline sessionPersistence
// pins an endpoint in each of its weighted backends: when the weights send
// the client to another backend, that backend's entry is added and the
// others are kept. Entry layout, before unpadded base64url:
//
//	version(1)=1 | cluster tag (4: FNV-1a of the cluster name) |
//	issued unix seconds (8, big endian) | address length (1: 4 or 16) |
//	address | port (2, big endian) | MAC (16)
//
// MAC = HMAC-SHA256(key, macLabel | cluster | 0 | pod | 0 | every byte before the MAC),
// truncated to 128 bits. 36 bytes (48 characters) for IPv4. The tag only
// routes entries to their cluster; authentication is the MAC, which covers
// the cluster name itself.
const (
	cookieVersion   = 1
	macLen          = 16
	tagLen          = 4
	maxEntries      = 4
	maxEntryLen     = 80 // longest valid entry is 48 bytes -> 64 characters
	maxDecoded      = 64
	clockSkew       = 5 * time.Minute
	macLabel        = "weft-session-v1\x00"
	cookieHeaderKey = "Cookie"
	entrySep        = "."
)

// Cookie decoding errors.
var (
	ErrMalformedCookie = errors.New("malformed session cookie")
	ErrForgedCookie    = errors.New("session cookie fails authentication")
	ErrExpiredCookie   = errors.New("session cookie expired")
)

// cookieValue is a decoded, not yet authenticated, cookie value.
type cookieValue struct {
	tag    uint32
	issued int64
	addr   netip.AddrPort
	signed []byte // bytes covered by the MAC
	mac    []byte
}

// decodeCookie parses a cookie value without authenticating it.
func decodeCookie(v string) (cookieValue, error) {
	var c cookieValue
	if len(v) == 0 || len(v) > maxEntryLen {
		return c, ErrMalformedCookie
	}
	for i := 0; i < len(v); i++ {
		// The decoder skips CR and LF; only the alphabet is accepted.
		if ch := v[i]; !(ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_') {
			return c, ErrMalformedCookie
		}
	}
	// Strict: non-zero padding bits would give one value several
	// spellings.
	if cookieEncoding.DecodedLen(len(v)) > maxDecoded {
		return c, ErrMalformedCookie
	}
	var buf [maxDecoded]byte
	nb, err := cookieEncoding.Decode(buf[:], []byte(v))
	if err != nil {
		return c, ErrMalformedCookie
	}
	b := buf[:nb]
	const head = 1 + tagLen + 8 + 1
	if len(b) < head || b[0] != cookieVersion {
		return c, ErrMalformedCookie
	}
	c.tag = binary.BigEndian.Uint32(b[1 : 1+tagLen])
	c.issued = int64(binary.BigEndian.Uint64(b[1+tagLen : head-1]))
	n := int(b[head-1])
	if n != 4 && n != 16 {
		return c, ErrMalformedCookie
	}
	if len(b) != head+n+2+macLen {
		return c, ErrMalformedCookie
	}
	addr, ok := netip.AddrFromSlice(b[head : head+n])
	if !ok {
		return c, ErrMalformedCookie
	}
	port := binary.BigEndian.Uint16(b[head+n : head+n+2])
	c.addr = netip.AddrPortFrom(addr, port)
	c.signed = b[:head+n+2]
	c.mac = b[head+n+2:]
	return c, nil
}

// macKey is one HMAC key with a pool of keyed hashes (hmac.New costs two
// SHA-256 blocks and several allocations; Reset restores the keyed state).
type macKey struct {
	pool sync.Pool
}

func newMACKey(key []byte) *macKey {
	k := append([]byte(nil), key...)
	return &macKey{pool: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}
}

// mac writes the truncated MAC of (cluster, pod, signed) into out.
func (k *macKey) mac(out *[macLen]byte, cluster, pod string, signed []byte) {
	h := k.pool.Get().(hash.Hash)
	h.Reset()
	var buf [128]byte
	b := append(buf[:0], macLabel...)
	b = append(b, cluster...)
	b = append(b, 0)
	b = append(b, pod...)
	b = append(b, 0)
	b = append(b, signed...)
	h.Write(b)
	var sum [sha256.Size]byte
	copy(out[:], h.Sum(sum[:0]))
	k.pool.Put(h)
}

// encodeCookie returns the authenticated value naming addr of pod in
// cluster, issued at issued.
func (m *Manager) encodeCookie(cluster, pod string, addr netip.AddrPort, issued time.Time) string {
	a := addr.Addr()
	if a.Is4In6() {
		a = a.Unmap()
	}
	raw := a.AsSlice()
	b := make([]byte, 0, 1+tagLen+8+1+len(raw)+2+macLen)
	b = append(b, cookieVersion)
	b = binary.BigEndian.AppendUint32(b, clusterTag(cluster))
	b = binary.BigEndian.AppendUint64(b, uint64(issued.Unix()))
	b = append(b, byte(len(raw)))
	b = append(b, raw...)
	b = binary.BigEndian.AppendUint16(b, addr.Port())
	var mac [macLen]byte
	m.keys[0].mac(&mac, cluster, pod, b)
	b = append(b, mac[:]...)
	return cookieEncoding.EncodeToString(b)
}

var cookieEncoding = base64.RawURLEncoding.Strict()

// clusterTag is the FNV-1a hash of the cluster name.
func clusterTag(cluster string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(cluster); i++ {
		h ^= uint32(cluster[i])
		h *= 16777619
	}
	return h
}

// verifyCookie decodes v and returns the endpoint of endpoints it names if
// the value authenticates for cluster (under any key) and has not expired
// (timeout zero: no expiry).
func (m *Manager) verifyCookie(v, cluster string, endpoints []*weftv1.Endpoint, now time.Time, timeout time.Duration) (*weftv1.Endpoint, error) {
	c, err := decodeCookie(v)
	if err != nil {
		return nil, err
	}
	return m.verifyEntry(&c, cluster, endpoints, now, timeout)
}

func (m *Manager) verifyEntry(c *cookieValue, cluster string, endpoints []*weftv1.Endpoint, now time.Time, timeout time.Duration) (*weftv1.Endpoint, error) {
	ep := findEndpoint(endpoints, c.addr)
	if ep == nil {
		// Gone from the cluster, or a forged address: both mean no pin.
		return nil, ErrForgedCookie
	}
	ok := false
	var mac [macLen]byte
	for _, k := range m.keys {
		k.mac(&mac, cluster, ep.GetPod(), c.signed)
		if hmac.Equal(c.mac, mac[:]) {
			ok = true
			break
		}
	}
	if !ok {
		return nil, ErrForgedCookie
	}
	issued := time.Unix(c.issued, 0)
	if issued.After(now.Add(clockSkew)) {
		return nil, ErrForgedCookie
	}
	if timeout > 0 && !now.Before(issued.Add(timeout)) {
		return nil, ErrExpiredCookie
	}
	return ep, nil
}

func findEndpoint(endpoints []*weftv1.Endpoint, ap netip.AddrPort) *weftv1.Endpoint {
	ip := ap.Addr().String()
	port := uint32(ap.Port())
	for _, ep := range endpoints {
		if ep.GetPort() == port && ep.GetIp() == ip {
			return ep
		}
	}
	// Non-canonical spellings ("::FFFF:10.0.0.1", "fd00::0001").
	for _, ep := range endpoints {
		if ep.GetPort() != port {
			continue
		}
		if a, err := netip.ParseAddr(ep.GetIp()); err == nil && a.Unmap() == ap.Addr().Unmap() {
			return ep
		}
	}
	return nil
}

func endpointAddr(ep *weftv1.Endpoint) (netip.AddrPort, bool) {
	a, err := netip.ParseAddr(ep.GetIp())
	if err != nil || ep.GetPort() > 65535 {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(ep.GetPort())), true
}

// cookieValues returns every value of cookie name in the request headers,
// in order (a request may carry several, e.g. for different paths).
func cookieValues(h http.Header, name string) []string {
	var out []string
	for _, line := range h[cookieHeaderKey] {
		for part := range strings.SplitSeq(line, ";") {
			part = strings.TrimSpace(part)
			n, v, ok := strings.Cut(part, "=")
			if !ok || n != name {
				continue
			}
			if len(v) > 1 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			out = append(out, v)
		}
	}
	return out
}

func absoluteTimeout(cfg *weftv1.SessionPersistence) time.Duration {
	if d := cfg.GetAbsoluteTimeout(); d != nil && d.CheckValid() == nil && d.AsDuration() > 0 {
		return d.AsDuration()
	}
	return 0
}

func (m *Manager) resolveCookie(cfg *weftv1.SessionPersistence, cluster string, endpoints []*weftv1.Endpoint, h http.Header, now time.Time, pick func([]*weftv1.Endpoint) *weftv1.Endpoint) Result {
	name := cfg.GetName()
	if name == "" {
		name = DefaultCookieName
	}
	timeout := absoluteTimeout(cfg)
	tag := clusterTag(cluster)
	// Entries of other clusters are carried over into a re-issued cookie;
	// this cluster's entries that failed are dropped.
	var keep []string
	var keepTags [maxEntries]uint32
	for _, v := range cookieValues(h, name) {
		n := 0
		for e := range strings.SplitSeq(v, entrySep) {
			if n++; n > maxEntries {
				break
			}
			c, err := decodeCookie(e)
			if err != nil {
				continue
			}
			if c.tag != tag {
				if len(keep) < maxEntries-1 && !slices.Contains(keepTags[:len(keep)], c.tag) {
					keepTags[len(keep)] = c.tag
					keep = append(keep, e)
				}
				continue
			}
			if ep, err := m.verifyEntry(&c, cluster, endpoints, now, timeout); err == nil && usable(ep) {
				return Result{Endpoint: ep, Pinned: true}
			}
		}
	}
	ep := pick(endpoints)
	if ep == nil {
		return Result{}
	}
	r := Result{Endpoint: ep}
	addr, ok := endpointAddr(ep)
	if !ok {
		return r
	}
	path := cfg.GetCookiePath()
	if path == "" {
		path = "/"
	}
	c := &http.Cookie{
		Name:     name,
		Value:    strings.Join(append([]string{m.encodeCookie(cluster, ep.GetPod(), addr, now)}, keep...), entrySep),
		Path:     path,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
	if cfg.GetLifetime() == weftv1.SessionPersistence_LIFETIME_PERMANENT && timeout > 0 {
		// Max-Age counts whole seconds: round up so a sub-second
		// timeout still gives a permanent cookie (Max-Age 0 means none).
		c.MaxAge = int((timeout + time.Second - 1) / time.Second)
		c.Expires = now.Add(timeout).UTC()
	}
	r.SetCookie = c
	return r
}
