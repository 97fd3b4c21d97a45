// Package identity keeps the X.509 SVIDs of the workload identities that run
// on this node. It asks the controller's CA (weft.v1.Identity/Sign) for an
// SVID when the first pod of an identity appears, rotates it at half its
// lifetime (with jitter), and drops it when the last pod leaves. Keys are
// generated here (ECDSA P-256) and never leave the node.
//
// When the controller is unreachable, SVIDs already held keep being served
// until they expire and new identities wait: there is no plaintext fallback.
// An agent that replaces another on the node takes its SVIDs over (Export,
// Import; handoff.go), so a restart does not depend on the controller.
// Manager implements the proxy's tunnel.Identities.
package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/metadata"
	"k8s.io/utils/clock"

	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Defaults for Config.
const (
	DefaultRetryMin    = time.Second
	DefaultRetryMax    = 30 * time.Second
	DefaultSignTimeout = 10 * time.Second
	// maxParallel bounds concurrent Sign calls.
	maxParallel = 4
)

// ErrExpired: the identity's SVID expired and no fresh one could be fetched.
var ErrExpired = errors.New("svid expired")

// Config configures a Manager.
type Config struct {
	// Client calls the controller's Identity service.
	Client weftv1.IdentityClient
	// Token returns the agent's current projected ServiceAccount token; it is
	// called before every Sign (the kubelet rotates the file). See TokenFile.
	Token func() (string, error)
	// Node the agent runs on (sent in SignRequest.node).
	Node string
	// Clock (default the real clock); tests pass a fake one.
	Clock clock.Clock
	// RetryMin and RetryMax bound the exponential backoff after a failed
	// Sign (defaults 1s and 30s).
	RetryMin, RetryMax time.Duration
	// SignTimeout bounds one Sign call (default 10s).
	SignTimeout time.Duration
	Logger      *slog.Logger
}

// The proxy consumes a Manager through tunnel.Identities.
var _ tunnel.Identities = (*Manager)(nil)

// Manager holds the node's SVIDs. Safe for concurrent use.
type Manager struct {
	cfg    Config
	log    *slog.Logger
	kick   chan struct{}
	bundle atomic.Pointer[x509bundle.Set]

	mu      sync.Mutex
	wanted  map[spiffeid.ID]bool
	entries map[spiffeid.ID]*entry
}

type entry struct {
	svid     *x509svid.SVID
	rotateAt time.Time // when to fetch a successor
	retryAt  time.Time // earliest next attempt after a failure
	failures int
	lastErr  string
	inFlight bool
}

// Status describes one wanted identity, for logs and debugging endpoints.
type Status struct {
	ID spiffeid.ID
	// Serial (hex) and NotAfter of the current SVID; empty when none.
	Serial   string
	NotAfter time.Time
	// RotateAt: when a successor is fetched.
	RotateAt time.Time
	// Failures in a row and the last error, while fetching fails.
	Failures  int
	LastError string
}

// Status lists the wanted identities, sorted by ID.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.wanted))
	for id := range m.wanted {
		st := Status{ID: id}
		if e := m.entries[id]; e != nil {
			st.Failures, st.LastError = e.failures, e.lastErr
			if e.svid != nil {
				st.Serial = e.svid.Certificates[0].SerialNumber.Text(16)
				st.NotAfter = e.svid.Certificates[0].NotAfter
				st.RotateAt = e.rotateAt
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.ID.String(), b.ID.String()) })
	return out
}

// New returns a Manager; call Run to start fetching.
func New(cfg Config) (*Manager, error) {
	if cfg.Client == nil || cfg.Token == nil {
		return nil, errors.New("identity: config needs Client and Token")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = DefaultRetryMin
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryMin)
	}
	if cfg.SignTimeout <= 0 {
		cfg.SignTimeout = DefaultSignTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Manager{
		cfg:     cfg,
		log:     cfg.Logger.With(logkey.Component, "identity"),
		kick:    make(chan struct{}, 1),
		wanted:  map[spiffeid.ID]bool{},
		entries: map[spiffeid.ID]*entry{},
	}
	m.bundle.Store(x509bundle.NewSet())
	return m, nil
}

// TokenFile returns a Config.Token that reads path on every call.
func TokenFile(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("read service account token: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("service account token file %s is empty", path)
		}
		return tok, nil
	}
}

// SVID returns the current SVID of id. The error wraps tunnel.ErrNoSVID
// when id is not a local identity or has no valid SVID (not issued yet, or
// expired while the controller was unreachable).
func (m *Manager) SVID(id spiffeid.ID) (*x509svid.SVID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[id]
	if !ok || e.svid == nil {
		if m.wanted[id] {
			return nil, fmt.Errorf("%w: %s not issued yet", tunnel.ErrNoSVID, id)
		}
		return nil, fmt.Errorf("%w: %s is not a workload identity on this node", tunnel.ErrNoSVID, id)
	}
	if leaf := e.svid.Certificates[0]; !m.cfg.Clock.Now().Before(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: %w: %s expired at %s", tunnel.ErrNoSVID, ErrExpired, id, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return e.svid, nil
}

// Bundle returns the trust bundles set by SetTrustAnchors (never nil).
func (m *Manager) Bundle() *x509bundle.Set { return m.bundle.Load() }

// SetWanted sets the identities of the pods on this node: new ones are
// fetched, ones no longer listed are dropped.
func (m *Manager) SetWanted(ids []spiffeid.ID) {
	m.mu.Lock()
	next := make(map[spiffeid.ID]bool, len(ids))
	for _, id := range ids {
		if !id.IsZero() {
			next[id] = true
		}
	}
	for id := range m.entries {
		if !next[id] {
			delete(m.entries, id)
			m.log.Info("svid dropped: no pod of the identity left on the node", logkey.ID, id.String())
		}
	}
	m.wanted = next
	m.mu.Unlock()
	m.wake()
}

// SetTrustAnchors replaces the trust bundle of td with the DER certificates
// (NodePolicy.trust_anchors). A bad certificate or an empty list is an error
// and changes nothing.
func (m *Manager) SetTrustAnchors(td spiffeid.TrustDomain, ders [][]byte) error {
	b, err := parseAnchors(td, ders)
	if err != nil {
		return err
	}
	m.bundle.Store(x509bundle.NewSet(b))
	return nil
}

func parseAnchors(td spiffeid.TrustDomain, ders [][]byte) (*x509bundle.Bundle, error) {
	if td.IsZero() {
		return nil, errors.New("trust anchors: no trust domain")
	}
	if len(ders) == 0 {
		return nil, errors.New("trust anchors: empty")
	}
	certs := make([]*x509.Certificate, 0, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("trust anchor %d: %w", i, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("trust anchor %d (%s) is not a CA certificate", i, c.Subject)
		}
		certs = append(certs, c)
	}
	return x509bundle.FromX509Authorities(td, certs), nil
}

// SetPolicy applies a NodePolicy: its trust anchors and the identities of
// its workloads. It validates everything first; on error nothing changes.
// A policy with no trust anchors (the controller's CA not loaded yet) keeps
// the current bundle.
func (m *Manager) SetPolicy(p *weftv1.NodePolicy) error {
	td, err := spiffeid.TrustDomainFromString(p.GetTrustDomain())
	if err != nil {
		return fmt.Errorf("policy trust domain %q: %w", p.GetTrustDomain(), err)
	}
	var b *x509bundle.Bundle
	if len(p.GetTrustAnchors()) > 0 {
		if b, err = parseAnchors(td, p.GetTrustAnchors()); err != nil {
			return fmt.Errorf("policy: %w", err)
		}
	}
	ids, err := WantedFromPolicy(p)
	if err != nil {
		return err
	}
	if b != nil {
		m.bundle.Store(x509bundle.NewSet(b))
	}
	m.SetWanted(ids)
	return nil
}

// WantedFromPolicy returns the distinct workload identities of p, all of
// which must be SPIFFE IDs in p's trust domain.
func WantedFromPolicy(p *weftv1.NodePolicy) ([]spiffeid.ID, error) {
	td, err := spiffeid.TrustDomainFromString(p.GetTrustDomain())
	if err != nil {
		return nil, fmt.Errorf("policy trust domain %q: %w", p.GetTrustDomain(), err)
	}
	seen := map[spiffeid.ID]bool{}
	var ids []spiffeid.ID
	for _, w := range p.GetWorkloads() {
		id, err := spiffeid.FromString(w.GetIdentity())
		if err != nil {
			return nil, fmt.Errorf("workload %s/%s identity %q: %w", w.GetNamespace(), w.GetName(), w.GetIdentity(), err)
		}
		if !id.MemberOf(td) {
			return nil, fmt.Errorf("workload %s/%s identity %s is not in trust domain %s", w.GetNamespace(), w.GetName(), id, td)
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids, nil
}

func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run fetches and rotates SVIDs until ctx ends; it returns ctx's error.
func (m *Manager) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxParallel)
	done := make(chan struct{}, 1)
	for {
		due, next := m.plan()
		for _, id := range due {
			select {
			case sem <- struct{}{}:
			default:
				continue // at capacity: picked up after one finishes
			}
			m.setInFlight(id, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				m.fetch(ctx, id)
				<-sem
				select {
				case done <- struct{}{}:
				default:
				}
			}()
		}
		var timer clock.Timer
		var timerC <-chan time.Time
		if !next.IsZero() {
			timer = m.cfg.Clock.NewTimer(max(next.Sub(m.cfg.Clock.Now()), 0))
			timerC = timer.C()
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return ctx.Err()
		case <-m.kick:
		case <-done:
		case <-timerC:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// plan lists the identities to fetch now and when the next one is due.
func (m *Manager) plan() (due []spiffeid.ID, next time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Clock.Now()
	for id := range m.wanted {
		e := m.entries[id]
		if e == nil {
			e = &entry{}
			m.entries[id] = e
		}
		if e.inFlight {
			continue
		}
		at := e.retryAt
		if e.svid != nil && e.rotateAt.After(at) {
			at = e.rotateAt
		}
		if !now.Before(at) {
			due = append(due, id)
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return due, next
}

func (m *Manager) setInFlight(id spiffeid.ID, v bool) {
	m.mu.Lock()
	if e := m.entries[id]; e != nil {
		e.inFlight = v
	}
	m.mu.Unlock()
}

// fetch obtains a new SVID for id and stores it if id is still wanted.
func (m *Manager) fetch(ctx context.Context, id spiffeid.ID) {
	svid, err := m.sign(ctx, id)
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.entries[id]
	if e == nil || !m.wanted[id] {
		return // dropped meanwhile
	}
	e.inFlight = false
	now := m.cfg.Clock.Now()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		e.failures++
		e.lastErr = err.Error()
		backoff := min(m.cfg.RetryMin<<min(e.failures-1, 16), m.cfg.RetryMax)
		backoff = backoff/2 + mathrand.N(backoff/2+1)
		e.retryAt = now.Add(backoff)
		attrs := []any{logkey.ID, id.String(), logkey.Error, err, logkey.RetryIn, backoff, logkey.Failures, e.failures}
		if e.svid != nil {
			attrs = append(attrs, logkey.CurrentExpires, e.svid.Certificates[0].NotAfter)
		}
		m.log.Warn("svid fetch failed", attrs...)
		return
	}
	e.svid = svid
	e.failures, e.lastErr = 0, ""
	e.retryAt = time.Time{}
	e.rotateAt = rotationTime(svid.Certificates[0], now, mathrand.Float64())
	m.log.Info("svid issued", logkey.ID, id.String(), logkey.Serial, svid.Certificates[0].SerialNumber.Text(16),
		logkey.Expires, svid.Certificates[0].NotAfter, logkey.RotateAt, e.rotateAt)
}

// rotationTime is the time to fetch a successor of leaf, received at now:
// after 40% to 50% of its lifetime (jitter r in [0,1) spreads a node's
// renewals). It counts from the local receipt time rather than NotBefore so
// that clock skew between node and controller can never make it lie in the
// past (which would renew in a loop).
func rotationTime(leaf *x509.Certificate, now time.Time, r float64) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return now.Add(life/2 - time.Duration(r*float64(life/10)))
}

// sign generates a key, sends a CSR and checks the answer.
func (m *Manager) sign(ctx context.Context, id spiffeid.ID) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("create csr: %w", err)
	}
	tok, err := m.cfg.Token()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.SignTimeout)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	resp, err := m.cfg.Client.Sign(ctx, &weftv1.SignRequest{Csr: csr, Node: m.cfg.Node})
	if err != nil {
		return nil, fmt.Errorf("sign %s: %w", id, err)
	}
	return checkResponse(id, key, resp, m.cfg.Clock.Now())
}

// checkResponse verifies a SignResponse: a well-formed SVID for id, for our
// key, chaining to the anchors the CA sent. Pure.
func checkResponse(id spiffeid.ID, key *ecdsa.PrivateKey, resp *weftv1.SignResponse, now time.Time) (*x509svid.SVID, error) {
	if len(resp.GetCertChain()) == 0 {
		return nil, errors.New("sign response has no certificate")
	}
	var chain []byte
	for _, c := range resp.GetCertChain() {
		chain = append(chain, c...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal key: %w", err)
	}
	svid, err := x509svid.ParseRaw(chain, keyDER)
	if err != nil {
		return nil, fmt.Errorf("sign response: %w", err)
	}
	if svid.ID != id {
		return nil, fmt.Errorf("sign response is for %s, asked for %s", svid.ID, id)
	}
	anchors, err := parseAnchors(id.TrustDomain(), resp.GetTrustAnchors())
	if err != nil {
		return nil, fmt.Errorf("sign response: %w", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, anchors, x509svid.WithTime(now)); err != nil {
		return nil, fmt.Errorf("sign response does not verify: %w", err)
	}
	return svid, nil
}
