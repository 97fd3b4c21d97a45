package inbound

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/authz"
	"github.com/weft-mesh/weft/agent/proxy/drain"
	"github.com/weft-mesh/weft/agent/proxy/http1"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/logkey"
)

// Authorization on the destination node.
//
// A stream that passed the identity checks is decided by the policies of
// its target pod (Config.Authz) from the peer's verified SPIFFE ID and the
// target port: refused, it is answered 403 before the pod is dialled, so
// the pod sees neither a connection nor a byte; allowed, it is spliced.
// When Application-level policy may refuse some of its requests
// (authz.Decision.NeedL7), the stream is served as HTTP here (HTTP/1.1, or
// h2c and gRPC by the prior-knowledge preface): each request is decided on
// its own, a refused one is answered 403 (gRPC: status 7,
// PERMISSION_DENIED) and the connection goes on; allowed ones are
// forwarded to the pod over connections of that stream's own.
//
// Requests are decided with the policy current when they arrive, so a
// policy change applies to the next request of an L7 stream. Spliced
// streams are decided again on every policy change (Reauthorize): one the
// new policy refuses is closed at once, as ztunnel closes connections a
// new policy denies. One the new policy still allows but would now serve
// at L7 is drained instead: nothing the caller sends from then on reaches
// the pod, the answer under way finishes, and the stream then ends
// cleanly, so the caller sends its next request on a new stream, decided
// request by request (see drainSpliced).

// liveConn is a spliced stream.
type liveConn struct {
	peer   spiffeid.ID
	addr   net.Addr
	target netip.AddrPort
	close  func()
	once   sync.Once
	// drain starts draining the stream (nil: it can only be closed)
	drain    func()
	draining atomic.Bool
	// unspliced: the drain took the stream back from the splice, to be
	// served request by request
	unspliced atomic.Bool
}

func (s *Server) track(c *liveConn) {
	s.liveMu.Lock()
	if s.live == nil {
		s.live = map[*liveConn]struct{}{}
	}
	s.live[c] = struct{}{}
	s.liveMu.Unlock()
}

func (s *Server) untrack(c *liveConn) {
	s.liveMu.Lock()
	delete(s.live, c)
	s.liveMu.Unlock()
}

// stillAllowed decides a spliced stream with the current policy; the
// decision that refuses it, or nil.
func (s *Server) stillAllowed(c *liveConn) *authz.Decision {
	if s.cfg.Authz == nil {
		return nil
	}
	d := s.cfg.Authz(c.target.Addr()).Connection(c.peer, uint32(c.target.Port()))
	if d.Allowed {
		return nil
	}
	return &d
}

// Reauthorize decides every spliced stream again with the current policy
// and closes those it no longer allows; it returns how many it closed. The
// proxy calls it after each policy update.
func (s *Server) Reauthorize() int {
	s.liveMu.Lock()
	conns := make([]*liveConn, 0, len(s.live))
	for c := range s.live {
		conns = append(conns, c)
	}
	s.liveMu.Unlock()
	closed := 0
	for _, c := range conns {
		d := s.stillAllowed(c)
		if d == nil {
			continue
		}
		if d.NeedL7 && c.drain != nil {
			if c.draining.CompareAndSwap(false, true) {
				s.cfg.Logger.Debug("spliced stream drained: now decided per request", logkey.Peer, c.addr.String(),
					logkey.Identity, c.peer.String(), logkey.Target, c.target.String())
				c.drain()
			}
			continue
		}
		if d.NeedL7 {
			d.Reason = "now decided per request: " + d.Reason
		}
		s.refuseAuthz(metrics.LevelNetwork, 0, c.addr, c.peer, c.target, *d)
		c.once.Do(c.close)
		closed++
	}
	return closed
}

// Draining a spliced stream. Its answer is done once the pod paused
// drainAnswerGap while the caller sent more (HTTP/1.1 sends a request only
// once the last answer ended), or once nothing moved for drainIdle.
const (
	drainTick      = 20 * time.Millisecond
	drainAnswerGap = drainTick
	drainIdle      = 5 * time.Second
	drainEnd       = time.Second
)

// drainSpliced holds what the caller sends on st from now on and ends st
// and the pod's connection once the pod's answer is done (see the
// constants above), or returns when the splice ended first (done). A
// stream on which nothing moved yet is taken back from the splice instead
// (lc.unspliced) and served request by request. The
// caller sees its side end cleanly (END_STREAM) with its held request
// unanswered: a source proxy sends it again on a new stream, a client
// connection closes as a kept-alive one does.
func (s *Server) drainSpliced(lc *liveConn, st *tunnel.Stream, pod net.Conn, done <-chan struct{}) {
	if st.Hold() {
		if _, out := st.LastMoved(); out.IsZero() {
			// nothing moved yet either way (a caller whose first request
			// is on its way): the stream is served request by request
			// from its first byte, as a new one would be
			lc.unspliced.Store(true)
			st.Detach()
			return
		}
	}
	// a stream at rest, the pod the last to speak (its answer sent, no
	// request since), is closed at once: there is nothing to finish, and
	// its caller learns now, not with its next request
	if in, out := st.LastMoved(); st.Held() == 0 && !out.IsZero() && out.After(in) && time.Since(out) >= drainTick {
		st.Close()
		pod.Close()
		return
	}
	start := time.Now()
	t := time.NewTicker(drainTick)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		// how long the pod has not sent anything, since the drain began
		_, out := st.LastMoved()
		quiet := time.Since(start)
		if out.After(start) {
			quiet = time.Since(out)
		}
		if st.Held() > 0 && quiet >= drainAnswerGap || quiet >= drainIdle {
			// our side ends; the caller ends its own, which ends the
			// splice (the pod's connection closes cleanly behind it). A
			// caller that does not within drainEnd is reset.
			st.CloseWrite()
			select {
			case <-done:
			case <-time.After(drainEnd):
				st.Close()
				pod.Close()
			}
			return
		}
	}
}

// l7Info is what the handler of an L7 stream's requests needs.
type l7Info struct {
	peer   spiffeid.ID
	addr   net.Addr // the tunnel peer's address, for logs
	target netip.AddrPort
	up     *podTransports
}

type l7Key struct{}

// podTransports are the connections of one L7 stream to its pod: one
// HTTP/1.1 pool and one h2c connection, dialled when first needed.
type podTransports struct{ h1, h2 *http.Transport }

func (s *Server) newPodTransports(target netip.AddrPort) *podTransports {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
		defer cancel()
		return s.cfg.Dial(ctx, "tcp", target.String())
	}
	mk := func(h2 bool) *http.Transport {
		var p http.Protocols
		if h2 {
			p.SetUnencryptedHTTP2(true)
		} else {
			p.SetHTTP1(true)
		}
		return &http.Transport{DialContext: dial, Protocols: &p, DisableCompression: true,
			MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}
	}
	return &podTransports{h1: mk(false), h2: mk(true)}
}

func (t *podTransports) close() {
	t.h1.CloseIdleConnections()
	t.h2.CloseIdleConnections()
}

// podRoundTripper sends a request over its stream's transports, in the
// protocol it arrived in.
type podRoundTripper struct{}

func (podRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	info, ok := r.Context().Value(l7Key{}).(*l7Info)
	if !ok {
		return nil, errors.New("inbound: request without its stream")
	}
	if r.ProtoMajor == 2 {
		return info.up.h2.RoundTrip(r)
	}
	return info.up.h1.RoundTrip(r)
}

// streamConn is a tunnel stream of an L7 stream as a net.Conn for the HTTP
// servers; r, when set, reads bytes already read from the stream first.
type streamConn struct {
	st     *tunnel.Stream
	r      io.Reader
	remote net.Addr
	l7     *l7Info
	// closed, when set, is called once when the HTTP/2 server is done
	closed func()
	once   sync.Once
}

func (c *streamConn) Read(p []byte) (int, error) {
	if c.r != nil {
		return c.r.Read(p)
	}
	return c.st.Read(p)
}
func (c *streamConn) Write(p []byte) (int, error) { return c.st.Write(p) }
func (c *streamConn) CloseWrite() error           { return c.st.CloseWrite() }
func (c *streamConn) Close() error {
	err := c.st.Close()
	if c.closed != nil {
		c.once.Do(c.closed)
	}
	return err
}
func (c *streamConn) LocalAddr() net.Addr              { return tunnelAddr{} }
func (c *streamConn) RemoteAddr() net.Addr             { return c.remote }
func (c *streamConn) SetDeadline(time.Time) error      { return tunnel.ErrNoDeadline }
func (c *streamConn) SetReadDeadline(time.Time) error  { return tunnel.ErrNoDeadline }
func (c *streamConn) SetWriteDeadline(time.Time) error { return tunnel.ErrNoDeadline }

type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "tunnel" }
func (tunnelAddr) String() string  { return "tunnel" }

// forwardingHeaders are the request headers ReverseProxy drops in Rewrite
// mode; the inbound passes them on unchanged.
var forwardingHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// initL7 builds the HTTP servers of L7 streams (New calls it).
func (s *Server) initL7() {
	s.rp = &httputil.ReverseProxy{
		// the pod gets the request as a spliced connection would have
		// carried it: ReverseProxy's own forwarding headers and query
		// cleaning are undone (hop-by-hop headers stay stripped)
		Rewrite: func(pr *httputil.ProxyRequest) {
			info := pr.In.Context().Value(l7Key{}).(*l7Info)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = info.target.String()
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			for _, h := range forwardingHeaders {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
		},
		Transport: podRoundTripper{},
		ErrorLog:  slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.cfg.Logger.Debug("forward to pod", logkey.Error, err)
			if r.Context().Err() == nil {
				w.WriteHeader(http.StatusBadGateway)
			}
		},
	}
	s.h1 = http1.NewServer(http1.Config{
		Handler: func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
			s.serveRequest(w, r.WithContext(ctx))
		},
		H2C:            s.h2c,
		MaxHeaderBytes: s.cfg.MaxRequestHeaderBytes,
		Refused: func(c net.Conn, status int, reason string) {
			s.refuseStream(limits.BadRequest, status, c.RemoteAddr(), "", reason)
		},
	})
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	s.h2srv = &http.Server{
		Handler:           http.HandlerFunc(s.serveRequest),
		Protocols:         &protos,
		MaxHeaderBytes:    s.cfg.MaxRequestHeaderBytes,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelDebug),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if sc, ok := c.(*streamConn); ok {
				return context.WithValue(ctx, l7Key{}, sc.l7)
			}
			return ctx
		},
	}
	s.h2feed = drain.NewFeed()
	go s.h2srv.Serve(s.h2feed)
}

// serveL7 serves an accepted stream's requests until it ends.
func (s *Server) serveL7(st *tunnel.Stream, addr net.Addr, peer spiffeid.ID, target netip.AddrPort) {
	info := &l7Info{peer: peer, addr: addr, target: target, up: s.newPodTransports(target)}
	defer info.up.close()
	s.h1.ServeConn(context.WithValue(context.Background(), l7Key{}, info), &streamConn{st: st, remote: addr, l7: info})
}

// h2c hands an h2c (or gRPC) stream to the HTTP/2 server and waits until
// that server is done with it.
func (s *Server) h2c(_ context.Context, c net.Conn, r io.Reader) {
	sc := c.(*streamConn)
	done := make(chan struct{})
	h2 := &streamConn{st: sc.st, r: r, remote: sc.remote, l7: sc.l7, closed: func() { close(done) }}
	if !s.h2feed.Push(h2) {
		h2.Close()
		return
	}
	<-done
}

// serveRequest decides one request of an L7 stream and forwards it to the
// pod or answers it.
func (s *Server) serveRequest(w http.ResponseWriter, r *http.Request) {
	info, ok := r.Context().Value(l7Key{}).(*l7Info)
	if !ok {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	grpc := r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
	// the target as sent (HTTP/2: :path), so that what is checked for
	// canonical form is what the pod will parse
	target := r.RequestURI
	if target == "" || target[0] != '/' {
		target = r.URL.RequestURI()
	}
	if !authz.CanonicalPath(target) {
		s.refuseStream(limits.BadRequest, http.StatusBadRequest, info.addr, info.peer.String(), info.target.String())
		deny(w, grpc, http.StatusBadRequest, "request path is not in canonical form")
		return
	}
	var wl *authz.Workload
	if s.cfg.Authz != nil {
		wl = s.cfg.Authz(info.target.Addr())
	}
	d := wl.Request(r.Context(), info.peer, uint32(info.target.Port()), &authz.Request{Method: r.Method, Path: target, Header: r.Header})
	if !d.Allowed {
		s.refuseAuthz(metrics.LevelApplication, http.StatusForbidden, info.addr, info.peer, info.target, d)
		deny(w, grpc, http.StatusForbidden, "forbidden by authorization policy")
		return
	}
	s.rp.ServeHTTP(w, r)
}

// deny answers a refused request: an HTTP status, or for gRPC a
// trailers-only answer with status PERMISSION_DENIED (7) or, for a
// malformed request, INVALID_ARGUMENT (3).
func deny(w http.ResponseWriter, grpc bool, status int, msg string) {
	h := w.Header()
	if grpc {
		code := "7"
		if status == http.StatusBadRequest {
			code = "3"
		}
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{code}
		h["Grpc-Message"] = []string{strings.ReplaceAll(msg, " ", "%20")}
		w.WriteHeader(http.StatusOK)
		return
	}
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(status)
	io.WriteString(w, msg+"\n")
}

// refuseAuthz counts and logs a connection (level network) or request
// (level application) authorization refused, with the deciding policy.
func (s *Server) refuseAuthz(level string, status int, peer net.Addr, id spiffeid.ID, target netip.AddrPort, d authz.Decision) {
	attrs := []slog.Attr{slog.Int(logkey.Status, status), slog.String(logkey.Peer, peer.String()),
		slog.String(logkey.Identity, id.String()), slog.String(logkey.Target, target.String()),
		slog.String(logkey.Detail, d.Reason)}
	if d.Policy != "" {
		attrs = append(attrs, slog.String(logkey.Policy, d.Policy))
	}
	s.cfg.Refusals.Refuse(limits.Unauthorized, "authorization refused", attrs...)
	s.cfg.Metrics.AuthzRefused(d.Policy, level)
}
