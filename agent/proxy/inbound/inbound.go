// Package inbound is the destination side of the node proxy: the :15008
// listener that terminates mutual TLS 1.3 tunnels from other node proxies
// (and from this node's own outbound side), checks identities and delivers
// each CONNECT stream to a local pod.
//
// Checks, in order: the TLS handshake requires TLS 1.3, a client SVID that
// chains to the trust bundle and is a member of the trust domain; the SNI
// names a local workload identity, whose SVID the server presents; the
// CONNECT :authority is the ip:port of a pod on this node whose identity is
// that same identity, and the request's expected-identity header (if sent)
// agrees; the target pod's authorization policies allow the peer (authz.go).
// Anything else is refused before a byte reaches a pod.
//
// Every refusal is counted and logged at Warn (rate-limited, see
// limits.Refusals) with its reason, the peer address and the identity the
// peer claimed when it presented one.
package inbound

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/authz"
	"github.com/weft-mesh/weft/agent/proxy/drain"
	"github.com/weft-mesh/weft/agent/proxy/h2"
	"github.com/weft-mesh/weft/agent/proxy/http1"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/sock"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/logkey"
)

// Local answers which pods and identities live on this node (fed from the
// node policy's workloads).
type Local interface {
	// PodIdentity returns the identity of the local pod with IP addr, false
	// when addr is not a pod on this node.
	PodIdentity(addr netip.Addr) (spiffeid.ID, bool)
	// ByServerName returns the local workload identity whose
	// tunnel.ServerName is name.
	ByServerName(name string) (spiffeid.ID, bool)
}

// Config configures a Server.
type Config struct {
	TrustDomain spiffeid.TrustDomain
	Identities  tunnel.Identities
	Local       Local
	// Dial connects to a local pod; PodDialer(DialTimeout, DialMark) when
	// nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds connecting to the pod; 5s when zero.
	DialTimeout time.Duration
	// DialMark is set (SO_MARK) on every socket the default Dial opens to a
	// pod: the datapath lets only marked sockets connect to strict-mTLS
	// pods (mesh.ProxyDialMark). Zero: no mark.
	DialMark uint32
	// HandshakeTimeout bounds the TLS handshake; 10s when zero.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds a CONNECT request's header block; a larger one
	// is answered 431. limits.DefaultTunnelHeaderBytes when zero.
	MaxHeaderBytes int
	// MaxRequestHeaderBytes bounds the header of an HTTP request served at
	// L7 for Application-level authorization (431 above it). Twice
	// limits.DefaultHeaderBytes when zero: the source proxy accepted the
	// request within its own limit and its filters may have added headers.
	MaxRequestHeaderBytes int
	// Authz returns the authorization policies of the local pod with IP
	// addr (nil: none, everything is allowed); nil: no authorization.
	Authz func(addr netip.Addr) *authz.Workload
	// Refusals counts and logs refused handshakes and streams; one that
	// logs to Logger when nil.
	Refusals *limits.Refusals
	// Metrics counts accepted and refused tunnel connections; nil: none.
	Metrics *metrics.Proxy
	Logger  *slog.Logger
}

// Server serves tunnels; use Serve with a TCP listener and Shutdown to drain.
type Server struct {
	cfg  Config
	tlsc *tls.Config
	mu   sync.Mutex
	conf map[spiffeid.ID]*tls.Config
	// conns holds the listeners, the tunnel connections and their
	// handlers, for the drain
	conns drain.Group
	// streams counts CONNECT streams being served (for the drain).
	streams atomic.Int64
	// peers are the tunnel connections served, each with its streams
	// open: what a drain's grace period cut, by peer, for its log
	peersMu sync.Mutex
	peers   map[*tunnelPeer]struct{}

	// L7 streams (authz.go): HTTP/1.1 served by h1, h2c handed to h2srv
	// through h2feed, allowed requests forwarded by rp.
	h1     *http1.Server
	h2srv  *http.Server
	h2feed *drain.Feed
	rp     *httputil.ReverseProxy

	// live are the spliced streams, for Reauthorize
	liveMu sync.Mutex
	live   map[*liveConn]struct{}
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("inbound server closed")

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Identities == nil || cfg.Local == nil {
		return nil, errors.New("inbound: identities and local are required")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("inbound: trust domain is required")
	}
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, 5*time.Second)
	cfg.HandshakeTimeout = cmp.Or(cfg.HandshakeTimeout, 10*time.Second)
	cfg.MaxHeaderBytes = cmp.Or(cfg.MaxHeaderBytes, limits.DefaultTunnelHeaderBytes)
	cfg.MaxRequestHeaderBytes = cmp.Or(cfg.MaxRequestHeaderBytes, 2*limits.DefaultHeaderBytes)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Refusals == nil {
		cfg.Refusals = limits.NewRefusals(limits.RefusalsConfig{Logger: cfg.Logger})
	}
	if cfg.Dial == nil {
		cfg.Dial = PodDialer(cfg.DialTimeout, cfg.DialMark).DialContext
	}
	s := &Server{cfg: cfg, conf: make(map[spiffeid.ID]*tls.Config), peers: make(map[*tunnelPeer]struct{})}
	s.tlsc = &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"h2"},
	}
	s.initL7()
	return s, nil
}

// Refusals returns the server's refusal counters.
func (s *Server) Refusals() *limits.Refusals { return s.cfg.Refusals }

// handshake is what one handshake learned about its peer, to say why it
// was refused.
type handshake struct {
	reason  limits.Reason
	known   bool   // reason is set
	claimed string // the SPIFFE ID the peer's certificate claims
}

func (h *handshake) refuse(r limits.Reason) {
	if !h.known {
		h.reason, h.known = r, true
	}
}

// tlsConfig is the server config of one handshake: the per-identity config
// the SNI picks, with a certificate check that records why it refused.
func (s *Server) tlsConfig(h *handshake) *tls.Config {
	c := s.tlsc.Clone()
	c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		base, err := s.configForClient(hello)
		if err != nil {
			h.refuse(limits.UnknownServerName)
			return nil, err
		}
		c := base.Clone()
		verify := base.VerifyPeerCertificate
		c.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
			return s.checkPeer(h, verify, raw, chains)
		}
		return c, nil
	}
	return c
}

// checkPeer classifies the peer's certificate before go-spiffe's check
// (verify) decides.
func (s *Server) checkPeer(h *handshake, verify func([][]byte, [][]*x509.Certificate) error, raw [][]byte, chains [][]*x509.Certificate) error {
	if len(raw) == 0 {
		h.refuse(limits.NoClientCert)
		return errors.New("no client certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		h.refuse(limits.UntrustedCert)
		return fmt.Errorf("parse client certificate: %w", err)
	}
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		h.refuse(limits.BadSPIFFEID)
		return fmt.Errorf("client certificate: %w", err)
	}
	h.claimed = id.String()
	if !id.MemberOf(s.cfg.TrustDomain) {
		h.refuse(limits.BadSPIFFEID)
		return fmt.Errorf("client %s is not in trust domain %s", id, s.cfg.TrustDomain)
	}
	if err := verify(raw, chains); err != nil {
		h.refuse(limits.UntrustedCert)
		return fmt.Errorf("client certificate of %s: %w", id, err)
	}
	return nil
}

// handshakeReason names why a handshake failed with err.
func handshakeReason(h *handshake, err error) limits.Reason {
	if h.known {
		return h.reason
	}
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		return limits.NotTLS
	}
	// crypto/tls fails a required certificate that is missing before any
	// check of ours runs (it sends certificate_required, which peers
	// expect); its error has no type to test but this text
	if strings.Contains(err.Error(), "didn't provide a certificate") {
		return limits.NoClientCert
	}
	return limits.HandshakeFailed
}

// refuseConn counts and logs a refused tunnel connection.
func (s *Server) refuseConn(r limits.Reason, peer net.Addr, claimed string, err error) {
	attrs := []slog.Attr{slog.String(logkey.Peer, peer.String())}
	if claimed != "" {
		attrs = append(attrs, slog.String(logkey.Identity, claimed))
	}
	if err != nil {
		attrs = append(attrs, slog.String(logkey.Error, err.Error()))
	}
	s.cfg.Refusals.Refuse(r, "tunnel handshake refused", attrs...)
}

// refuseStream counts and logs a CONNECT stream answered status here.
func (s *Server) refuseStream(r limits.Reason, status int, peer net.Addr, claimed, target string) {
	attrs := []slog.Attr{slog.Int(logkey.Status, status), slog.String(logkey.Peer, peer.String())}
	if claimed != "" {
		attrs = append(attrs, slog.String(logkey.Identity, claimed))
	}
	if target != "" {
		attrs = append(attrs, slog.String(logkey.Target, target))
	}
	s.cfg.Refusals.Refuse(r, "tunnel stream refused", attrs...)
}

// configForClient picks the local identity named by the SNI and returns an
// mTLS server config presenting its SVID and accepting any SVID of the trust
// domain.
func (s *Server) configForClient(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	id, ok := s.cfg.Local.ByServerName(hello.ServerName)
	if !ok {
		return nil, fmt.Errorf("no local workload for server name %q", hello.ServerName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.conf[id]; ok {
		return c, nil
	}
	c := tlsconfig.MTLSServerConfig(tunnel.SVIDSource(s.cfg.Identities, id), tunnel.BundleSource(s.cfg.Identities), tlsconfig.AuthorizeMemberOf(s.cfg.TrustDomain))
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{"h2"}
	s.conf[id] = c
	return c, nil
}

// Serve accepts TLS tunnels on l until Shutdown or Close, then returns
// ErrServerClosed.
func (s *Server) Serve(l net.Listener) error {
	err := s.conns.Serve(l, s.serveConn)
	if errors.Is(err, drain.ErrClosed) {
		return ErrServerClosed
	}
	return fmt.Errorf("accept tunnels: %w", err)
}

// tunnelConn is a tunnel connection as the drain sees it: draining it
// sends GOAWAY.
type tunnelConn struct{ *tunnel.ServerConn }

func (c tunnelConn) Close() error { c.ServerConn.Close(); return nil }
func (c tunnelConn) Drain()       { c.GoAway() }

func (s *Server) serveConn(nc net.Conn) {
	var hs handshake
	tc := tls.Server(sock.Wrap(nc), s.tlsConfig(&hs))
	nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		reason := handshakeReason(&hs, err)
		s.refuseConn(reason, nc.RemoteAddr(), hs.claimed, err)
		s.cfg.Metrics.InboundRefused(reason)
		nc.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != "h2" {
		s.refuseConn(limits.HandshakeFailed, nc.RemoteAddr(), hs.claimed, errors.New("no h2 protocol negotiated"))
		s.cfg.Metrics.InboundRefused(limits.HandshakeFailed)
		nc.Close()
		return
	}
	s.cfg.Metrics.InboundAccepted()
	peer := nc.RemoteAddr()
	tp := s.addPeer(&cs, peer)
	defer s.removePeer(tp)
	sc, err := tunnel.NewServerConn(tc, func(st *tunnel.Stream, authority string, h http.Header) {
		s.streams.Add(1)
		tp.open.Add(1)
		defer func() { tp.open.Add(-1); s.streams.Add(-1) }()
		s.serveStream(&cs, peer, st, authority, h)
	}, tunnel.ServerConfig{
		MaxHeaderBytes: s.cfg.MaxHeaderBytes,
		Refused: func(status int) {
			r := limits.BadRequest
			if status == http.StatusRequestHeaderFieldsTooLarge {
				r = limits.HeaderTooLarge
			}
			s.refuseStream(r, status, peer, hs.claimed, "")
		},
	})
	if err != nil {
		s.cfg.Logger.Debug("tunnel preface", logkey.Peer, peer.String(), logkey.Error, err)
		return
	}
	nc.SetDeadline(time.Time{})
	// one that completed its handshake after a Shutdown began is told
	// GOAWAY at once
	tconn := tunnelConn{sc}
	if !s.conns.Track(tconn) {
		sc.Close()
		return
	}
	defer s.conns.Untrack(tconn)
	sc.Serve()
}

// Shutdown stops accepting, tells peers (GOAWAY) to open no new streams,
// lets open streams finish until ctx ends, then closes every connection.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.conns.Drain(ctx, func() bool { return s.streams.Load() == 0 })
	if err != nil { // what the grace period cuts, for the log (one snapshot: count and peers agree)
		if n, by := s.openByPeer(); n > 0 {
			err = fmt.Errorf("inbound: %d tunnel streams open (%s): %w", n, by, err)
		} else {
			err = fmt.Errorf("inbound: tunnel streams open at the deadline, closed since: %w", err)
		}
	}
	s.Close()
	return err
}

// Close closes the listeners and every tunnel at once.
func (s *Server) Close() error {
	s.conns.Close()
	s.h2feed.Close()
	s.h2srv.Close()
	s.conns.Wait()
	return nil
}

func (s *Server) serveStream(cs *tls.ConnectionState, addr net.Addr, st *tunnel.Stream, authority string, h http.Header) {
	defer st.Close()
	peer, err := peerID(cs)
	if err != nil {
		s.refuseStream(limits.Forbidden, http.StatusForbidden, addr, "", authority)
		st.Respond(http.StatusForbidden)
		return
	}
	refuse := func(r limits.Reason, status int) {
		s.refuseStream(r, status, addr, peer.String(), authority)
		st.Respond(status)
	}
	local, ok := s.cfg.Local.ByServerName(cs.ServerName)
	if !ok {
		refuse(limits.Forbidden, http.StatusForbidden)
		return
	}
	target, err := netip.ParseAddrPort(authority)
	if err != nil {
		refuse(limits.BadRequest, http.StatusBadRequest)
		return
	}
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	podID, ok := s.cfg.Local.PodIdentity(target.Addr())
	if !ok || podID != local {
		// not a local pod, or not the one whose identity the SNI named
		refuse(limits.Forbidden, http.StatusForbidden)
		return
	}
	if want := h.Get(tunnel.HeaderDestinationIdentity); want != "" && want != local.String() {
		refuse(limits.Forbidden, http.StatusForbidden)
		return
	}
	var wl *authz.Workload
	if s.cfg.Authz != nil {
		wl = s.cfg.Authz(target.Addr())
	}
	d := wl.Connection(peer, uint32(target.Port()))
	if !d.Allowed && !d.NeedL7 {
		// before the pod is dialled: it sees no connection, no byte
		s.refuseAuthz(metrics.LevelNetwork, http.StatusForbidden, addr, peer, target, d)
		st.Respond(http.StatusForbidden)
		return
	}
	if d.NeedL7 {
		if err := st.Respond(http.StatusOK); err != nil {
			return
		}
		s.serveL7(st, addr, peer, target)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	pod, err := s.cfg.Dial(ctx, "tcp", target.String())
	cancel()
	if err != nil {
		s.cfg.Logger.Debug("dial pod", logkey.Target, target.String(), logkey.Error, err)
		st.Respond(http.StatusServiceUnavailable)
		return
	}
	pod = sock.Wrap(pod) // raw reads and writes (see package sock)
	defer pod.Close()
	// tracked while spliced: a policy change that refuses it closes it
	lc := &liveConn{peer: peer, addr: addr, target: target, close: func() { st.Close(); pod.Close() }}
	spliced := make(chan struct{})
	defer close(spliced)
	lc.drain = func() { go s.drainSpliced(lc, st, pod, spliced) }
	s.track(lc)
	defer s.untrack(lc)
	if d := s.stillAllowed(lc); d != nil {
		// the policy changed between the decision and the tracking
		if d.NeedL7 {
			s.untrack(lc)
			pod.Close()
			if st.Respond(http.StatusOK) == nil {
				s.serveL7(st, addr, peer, target)
			}
		}
		return
	}
	if err := st.Respond(http.StatusOK); err != nil {
		return
	}
	if s.splice(pod, st, lc) {
		// a drain took the stream before any of its caller's data reached
		// the pod: it is served request by request, from its first byte
		s.untrack(lc)
		pod.Close()
		st.Release()
		s.serveL7(st, addr, peer, target)
	}
}

var spliceBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// splice copies between the pod and the caller's stream both ways, as
// relay.Splice does (half-closes passed on, a failure closes both), until
// both are done. It returns true when a drain detached the stream instead
// (lc.unspliced, see drainSpliced): then neither is closed, and nothing of
// the caller's reached the pod.
func (s *Server) splice(pod net.Conn, st *tunnel.Stream, lc *liveConn) bool {
	done := make(chan struct{})
	go func() { // pod -> caller
		defer close(done)
		bp := spliceBufs.Get().(*[]byte)
		defer spliceBufs.Put(bp)
		for {
			n, err := pod.Read(*bp)
			if lc.unspliced.Load() {
				return
			}
			if n > 0 {
				if _, werr := st.Write((*bp)[:n]); werr != nil {
					st.Close()
					pod.Close()
					return
				}
			}
			if err == io.EOF {
				st.CloseWrite()
				return
			}
			if err != nil {
				st.Close()
				pod.Close()
				return
			}
		}
	}()
	_, err := io.Copy(pod, st) // the stream's WriteTo: straight to the pod's socket
	if lc.unspliced.Load() && errors.Is(err, h2.ErrDetached) {
		pod.SetReadDeadline(time.Unix(1, 0)) // the other direction stops too
		<-done
		return true
	}
	if cw, ok := pod.(interface{ CloseWrite() error }); ok && err == nil {
		cw.CloseWrite()
	} else {
		pod.Close()
		st.Close()
	}
	<-done
	return false
}

func peerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("no peer certificate")
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}

// tunnelPeer is one tunnel connection's peer and the streams it has open.
type tunnelPeer struct {
	id, host string
	open     atomic.Int64
}

func (s *Server) addPeer(cs *tls.ConnectionState, addr net.Addr) *tunnelPeer {
	tp := &tunnelPeer{id: "no SPIFFE ID", host: addr.String()}
	if id, err := peerID(cs); err == nil {
		tp.id = id.String()
	}
	if h, _, err := net.SplitHostPort(tp.host); err == nil {
		tp.host = h
	}
	s.peersMu.Lock()
	s.peers[tp] = struct{}{}
	s.peersMu.Unlock()
	return tp
}

func (s *Server) removePeer(tp *tunnelPeer) {
	s.peersMu.Lock()
	delete(s.peers, tp)
	s.peersMu.Unlock()
}

// openByPeer counts the streams open and names their peers, most first (up
// to three): "spiffe://... from 10.0.0.5: 9, ...".
func (s *Server) openByPeer() (int64, string) {
	type count struct {
		peer string
		n    int64
	}
	by := map[string]int64{}
	var total int64
	s.peersMu.Lock()
	for tp := range s.peers {
		if n := tp.open.Load(); n > 0 {
			by[tp.id+" from "+tp.host] += n
			total += n
		}
	}
	s.peersMu.Unlock()
	if total == 0 {
		return 0, ""
	}
	counts := make([]count, 0, len(by))
	for p, n := range by {
		counts = append(counts, count{p, n})
	}
	slices.SortFunc(counts, func(a, b count) int { return cmp.Or(cmp.Compare(b.n, a.n), strings.Compare(a.peer, b.peer)) })
	parts := make([]string, 0, 4)
	for _, c := range counts[:min(3, len(counts))] {
		parts = append(parts, fmt.Sprintf("%s: %d", c.peer, c.n))
	}
	if len(counts) > 3 {
		parts = append(parts, fmt.Sprintf("%d more peers", len(counts)-3))
	}
	return total, strings.Join(parts, ", ")
}
