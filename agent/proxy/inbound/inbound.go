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
// agrees. Anything else is refused before a byte reaches a pod.
package inbound

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/agent/proxy/drain"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
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
	// Dial connects to a local pod; a net.Dialer with DialTimeout when nil.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds connecting to the pod; 5s when zero.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake; 10s when zero.
	HandshakeTimeout time.Duration
	Logger           *slog.Logger
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Dial == nil {
		d := &net.Dialer{Timeout: cfg.DialTimeout}
		cfg.Dial = d.DialContext
	}
	s := &Server{cfg: cfg, conf: make(map[spiffeid.ID]*tls.Config)}
	s.tlsc = &tls.Config{
		MinVersion:         tls.VersionTLS13,
		NextProtos:         []string{"h2"},
		GetConfigForClient: s.configForClient,
	}
	return s, nil
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
	tc := tls.Server(nc, s.tlsc)
	nc.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		s.cfg.Logger.Debug("tunnel handshake", "peer", nc.RemoteAddr().String(), "err", err)
		nc.Close()
		return
	}
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != "h2" {
		nc.Close()
		return
	}
	sc, err := tunnel.NewServerConn(tc, func(st *tunnel.Stream, authority string, h http.Header) {
		s.streams.Add(1)
		defer s.streams.Add(-1)
		s.serveStream(&cs, st, authority, h)
	})
	if err != nil {
		s.cfg.Logger.Debug("tunnel preface", "peer", nc.RemoteAddr().String(), "err", err)
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
	s.Close()
	return err
}

// Close closes the listeners and every tunnel at once.
func (s *Server) Close() error {
	s.conns.Close()
	s.conns.Wait()
	return nil
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (s *Server) serveStream(cs *tls.ConnectionState, st *tunnel.Stream, authority string, h http.Header) {
	defer st.Close()
	peer, err := peerID(cs)
	if err != nil {
		st.Respond(http.StatusForbidden)
		return
	}
	local, ok := s.cfg.Local.ByServerName(cs.ServerName)
	if !ok {
		st.Respond(http.StatusForbidden)
		return
	}
	target, err := netip.ParseAddrPort(authority)
	if err != nil {
		st.Respond(http.StatusBadRequest)
		return
	}
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	podID, ok := s.cfg.Local.PodIdentity(target.Addr())
	if !ok {
		s.cfg.Logger.Debug("tunnel refused: not a local pod", "target", target.String(), "peer", peer.String())
		st.Respond(http.StatusForbidden)
		return
	}
	if podID != local {
		st.Respond(http.StatusForbidden)
		return
	}
	if want := h.Get(tunnel.HeaderDestinationIdentity); want != "" && want != local.String() {
		st.Respond(http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DialTimeout)
	pod, err := s.cfg.Dial(ctx, "tcp", target.String())
	cancel()
	if err != nil {
		s.cfg.Logger.Debug("dial pod", "target", target.String(), "err", err)
		st.Respond(http.StatusServiceUnavailable)
		return
	}
	defer pod.Close()
	if err := st.Respond(http.StatusOK); err != nil {
		return
	}
	up := make(chan struct{})
	go func() {
		defer close(up)
		bp := bufPool.Get().(*[]byte)
		_, err := io.CopyBuffer(pod, st, *bp)
		bufPool.Put(bp)
		if err != nil {
			pod.Close()
			return
		}
		if cw, ok := pod.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	bp := bufPool.Get().(*[]byte)
	_, err = io.CopyBuffer(st, pod, *bp)
	bufPool.Put(bp)
	if err == nil {
		st.CloseWrite()
	} else {
		st.Close()
	}
	<-up
}

func peerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("no peer certificate")
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}
