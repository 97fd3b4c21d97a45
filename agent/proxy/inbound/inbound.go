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
	srv  *http.Server
	tlsc *tls.Config
	mu   sync.Mutex
	conf map[spiffeid.ID]*tls.Config
	// streams counts CONNECT streams being served (for the drain).
	streams atomic.Int64
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Identities == nil || cfg.Local == nil {
		return nil, errors.New("inbound: identities and local are required")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("inbound: trust domain is required")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
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
	var p http.Protocols
	p.SetHTTP2(true)
	s.srv = &http.Server{
		Handler:           s,
		Protocols:         &p,
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerConnection: 16 << 20,
			MaxReceiveBufferPerStream:     4 << 20,
			MaxConcurrentStreams:          1000,
		},
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

// Serve accepts TLS tunnels on l until Shutdown; it returns
// http.ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	return s.srv.Serve(tls.NewListener(l, s.tlsc))
}

// Shutdown stops accepting, tells peers (GOAWAY) to open no new streams,
// lets open streams finish until ctx ends, then closes every connection.
// Streams are counted by the handler itself: a connection accepted just
// before the shutdown would otherwise keep http.Server waiting.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.srv.Shutdown(ctx); close(done) }()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var err error
	for s.streams.Load() > 0 && err == nil {
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-t.C:
		}
	}
	s.srv.Close()
	<-done
	return err
}

// Close closes the listener and every tunnel at once.
func (s *Server) Close() error { return s.srv.Close() }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.streams.Add(1)
	defer s.streams.Add(-1)
	if r.Method != http.MethodConnect || r.ProtoMajor != 2 || r.TLS == nil {
		http.Error(w, "weft tunnel accepts only HTTP/2 CONNECT", http.StatusMethodNotAllowed)
		return
	}
	peer, err := peerID(r.TLS)
	if err != nil {
		http.Error(w, "no peer identity", http.StatusForbidden)
		return
	}
	local, ok := s.cfg.Local.ByServerName(r.TLS.ServerName)
	if !ok {
		http.Error(w, "unknown server name", http.StatusForbidden)
		return
	}
	target, err := netip.ParseAddrPort(r.Host)
	if err != nil {
		http.Error(w, "bad target", http.StatusBadRequest)
		return
	}
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	podID, ok := s.cfg.Local.PodIdentity(target.Addr())
	if !ok {
		s.cfg.Logger.Debug("tunnel refused: not a local pod", "target", target.String(), "peer", peer.String())
		http.Error(w, "target is not a local pod", http.StatusForbidden)
		return
	}
	if podID != local {
		http.Error(w, "target pod identity differs from the requested server identity", http.StatusForbidden)
		return
	}
	if want := r.Header.Get(tunnel.HeaderDestinationIdentity); want != "" && want != local.String() {
		http.Error(w, "expected identity differs", http.StatusForbidden)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.DialTimeout)
	pod, err := s.cfg.Dial(ctx, "tcp", target.String())
	cancel()
	if err != nil {
		s.cfg.Logger.Debug("dial pod", "target", target.String(), "err", err)
		http.Error(w, "connect to pod failed", http.StatusServiceUnavailable)
		return
	}
	defer pod.Close()
	rc := http.NewResponseController(w)
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	up := make(chan struct{})
	go func() {
		defer close(up)
		bp := bufPool.Get().(*[]byte)
		io.CopyBuffer(pod, r.Body, *bp)
		bufPool.Put(bp)
		if cw, ok := pod.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	}()
	bp := bufPool.Get().(*[]byte)
	copyFlush(w, rc, pod, *bp)
	bufPool.Put(bp)
	pod.Close()
	r.Body.Close()
	<-up
}

// copyFlush copies src to the stream, flushing every chunk so nothing waits
// in a buffer (server-first protocols, interactive traffic).
func copyFlush(w io.Writer, rc *http.ResponseController, src io.Reader, buf []byte) {
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func peerID(cs *tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("no peer certificate")
	}
	return x509svid.IDFromCert(cs.PeerCertificates[0])
}
