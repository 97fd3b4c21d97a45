// Package session implements Gateway API session persistence (GEP-1619 as
// of v1.7.0) for the node proxy.
//
// Persistence applies after backend selection: route weights choose the
// backend (a weftv1.Cluster) for every request, and Resolve then pins the
// endpoint inside that cluster.
//
//   - Cookie type: the cookie value names the endpoint (IP and port) and the
//     time it was issued, authenticated with HMAC-SHA256 over the cluster
//     name, issue time, address and the endpoint's pod name under the
//     node's key. A client cannot forge a value to choose a pod, nor move a
//     value to another cluster, nor keep a session past absoluteTimeout; an
//     IP address reused by another pod does not inherit the session.
//     Lifetime Session: no Expires/Max-Age on the cookie, absoluteTimeout
//     (when set) enforced from the issue time inside the value. Lifetime
//     Permanent: Max-Age and Expires = absoluteTimeout. One cookie holds an
//     entry per backend (up to 4), so a rule's inline sessionPersistence
//     keeps a pin in each of its weighted backends: switching backend adds
//     an entry instead of destroying the other backend's session. Cookie
//     attributes: HttpOnly, SameSite=Lax, no Secure (mesh clients speak
//     plaintext HTTP to the proxy; a Secure cookie would never come back).
//   - Header type: the request header (gRPC metadata on GRPCRoute) carries
//     a session value; a bounded LRU table maps (cluster, value) to the
//     endpoint until absoluteTimeout (DefaultHeaderTTL when unset). A
//     request without the header gets a fresh random value, returned in the
//     same response header so the client can send it back (the GEP's
//     conformance: "first request MUST receive a session identity header").
//     A value the client chose itself is honoured the same way.
//
// Endpoints: a pinned endpoint is kept while it is in the cluster's list and
// ready or serving (a terminating endpoint that still serves keeps its
// sessions: the GEP's "MAY continue routing existing persistent sessions to
// backends that are draining but still serving"). One that is gone from the
// list or neither ready nor serving is re-picked and the session re-issued.
// The proxy only knows endpoints through the cluster list the controller
// sends, so a pod that stopped matching the Service selector is kept only
// for as long as the controller still lists it (as terminating/serving);
// once it leaves the list its sessions move.
//
// Time comes from the caller (now), randomness from Config.Rand: tests use
// a fake clock and a fixed reader. The Manager is safe for concurrent use.
package session

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Defaults.
const (
	// DefaultCookieName is used when the configuration names no cookie (the
	// controller normally generates one).
	DefaultCookieName = "weft-session"
	// DefaultHeaderTTL bounds a header session when absoluteTimeout is unset.
	DefaultHeaderTTL = time.Hour
	// DefaultHeaderTableSize is the number of header sessions kept per node.
	DefaultHeaderTableSize = 1 << 16
	// MinKeyLen is the minimum HMAC key length.
	MinKeyLen = 32
	// maxHeaderValueLen: longer header values are ignored (no session).
	maxHeaderValueLen = 256
)

// Sentinel errors.
var (
	ErrShortKey = errors.New("session key shorter than 32 bytes")
)

// Config configures a Manager.
type Config struct {
	// Keys authenticate cookies: Keys[0] signs, every key verifies (so a key
	// can be rotated without dropping sessions). Each at least MinKeyLen
	// bytes. Empty: one random key, so cookies do not survive a restart;
	// the agent should persist a key in its state directory and pass it.
	Keys [][]byte
	// HeaderTableSize bounds the header-session table
	// (DefaultHeaderTableSize when zero).
	HeaderTableSize int
	// HeaderTTL is the header-session lifetime when absoluteTimeout is unset
	// (DefaultHeaderTTL when zero).
	HeaderTTL time.Duration
	// Rand supplies session values and the random key (crypto/rand when
	// nil).
	Rand io.Reader
}

// Manager resolves session persistence for one node proxy.
type Manager struct {
	keys      []*macKey
	headerTTL time.Duration
	rand      io.Reader
	randMu    sync.Mutex

	headers *lru.Cache[headerKey, headerEntry]
	names   sync.Map // configured header name -> canonical key
}

// New returns a Manager.
func New(cfg Config) (*Manager, error) {
	m := &Manager{headerTTL: cfg.HeaderTTL, rand: cfg.Rand}
	if m.rand == nil {
		m.rand = rand.Reader
	}
	if m.headerTTL <= 0 {
		m.headerTTL = DefaultHeaderTTL
	}
	for i, k := range cfg.Keys {
		if len(k) < MinKeyLen {
			return nil, fmt.Errorf("key %d: %w", i, ErrShortKey)
		}
		m.keys = append(m.keys, newMACKey(k))
	}
	if len(m.keys) == 0 {
		k := make([]byte, MinKeyLen)
		if _, err := io.ReadFull(m.rand, k); err != nil {
			return nil, fmt.Errorf("generate session key: %w", err)
		}
		m.keys = []*macKey{newMACKey(k)}
	}
	size := cfg.HeaderTableSize
	if size <= 0 {
		size = DefaultHeaderTableSize
	}
	c, err := lru.New[headerKey, headerEntry](size)
	if err != nil {
		return nil, fmt.Errorf("header session table: %w", err)
	}
	m.headers = c
	return m, nil
}

// Result is what Resolve decided.
type Result struct {
	// Endpoint to send the request to; nil only when pick returned nil.
	Endpoint *weftv1.Endpoint
	// Pinned: the session chose Endpoint (false: pick did).
	Pinned bool
	// SetCookie, when non-nil, is added to the response as Set-Cookie.
	SetCookie *http.Cookie
	// HeaderName and HeaderValue, when HeaderName is non-empty, are set on
	// the response (header type: the client's session value, newly
	// established). The proxy should also set them on the forwarded request
	// when the request lacked the header, so the backend sees the session
	// (GEP-1619: implementations SHOULD forward the persistence header).
	HeaderName  string
	HeaderValue string
}

// Resolve picks the endpoint of cluster for a request with headers h.
// cfg nil (or a type the package does not know) means no persistence: pick
// decides. endpoints is the cluster's endpoint list as the controller sent
// it; pick is the proxy's load balancer over that list (it should skip
// endpoints that are not ready) and may return nil when none is usable.
func (m *Manager) Resolve(cfg *weftv1.SessionPersistence, cluster string, endpoints []*weftv1.Endpoint, h http.Header, now time.Time, pick func([]*weftv1.Endpoint) *weftv1.Endpoint) Result {
	if cfg == nil {
		return Result{Endpoint: pick(endpoints)}
	}
	switch cfg.GetType() {
	case weftv1.SessionPersistence_TYPE_HEADER:
		return m.resolveHeader(cfg, cluster, endpoints, h, now, pick)
	case weftv1.SessionPersistence_TYPE_COOKIE, weftv1.SessionPersistence_TYPE_UNSPECIFIED:
		return m.resolveCookie(cfg, cluster, endpoints, h, now, pick)
	}
	return Result{Endpoint: pick(endpoints)}
}

// usable reports whether a pinned endpoint may keep its sessions.
func usable(ep *weftv1.Endpoint) bool {
	return ep.GetReady() || ep.GetServing()
}
