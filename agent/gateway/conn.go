package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/drain"
	"github.com/weft-mesh/weft/agent/proxy/relay"
	"github.com/weft-mesh/weft/agent/proxy/sock"
	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func (g *Gateway) newPortServer(number uint32, ln net.Listener) *portServer {
	ps := &portServer{g: g, number: number, ln: ln, conns: drain.NewFeed()}
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetHTTP2(true)
	protos.SetUnencryptedHTTP2(true)
	ps.http = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.serveHTTP(number, w, r) }),
		Protocols:         &protos,
		MaxHeaderBytes:    g.cfg.Limits.HeaderBytes,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       g.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(g.cfg.Logger.Handler(), slog.LevelDebug),
	}
	return ps
}

// handle classifies one accepted connection by the port's family in the
// snapshot in force: HTTP goes to the port's HTTP server; TLS is peeked for
// its SNI, then passed through or terminated; TCP is forwarded.
func (ps *portServer) handle(c net.Conn) {
	c = sock.Wrap(c) // raw reads and writes (see package sock)
	g := ps.g
	port := g.snap.Load().Ports[ps.number]
	if port == nil {
		c.Close()
		return
	}
	switch port.Family {
	case FamilyHTTP:
		ps.push(c)
	case FamilyTCP:
		g.forwardL4(c, port.Listeners[0], "", false)
	case FamilyTLS:
		ps.handleTLS(c, port)
	}
}

func (ps *portServer) push(c net.Conn) {
	if !ps.conns.Push(c) {
		c.Close()
	}
}

// handleTLS peeks the ClientHello, picks the listener by SNI, then passes
// the bytes through or terminates TLS.
func (ps *portServer) handleTLS(c net.Conn, port *Port) {
	g := ps.g
	c.SetReadDeadline(time.Now().Add(g.cfg.HandshakeTimeout))
	sni, peeked, err := PeekClientHello(c)
	if err != nil {
		g.cfg.Logger.Debug("refused: no ClientHello", logkey.Port, ps.number, logkey.Peer, c.RemoteAddr().String(), logkey.Error, err)
		c.Close()
		return
	}
	sni = NormalizeHost(sni)
	l := port.PickListener(sni)
	if l == nil {
		g.cfg.Logger.Debug("refused: no listener for SNI", logkey.Port, ps.number, logkey.Host, sni)
		c.Close()
		return
	}
	c = &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(peeked), c)}
	if l.Mode == weftv1.TLSMode_TLS_MODE_PASSTHROUGH {
		c.SetReadDeadline(time.Time{})
		g.forwardL4(c, l, sni, false)
		return
	}
	tc := tls.Server(c, l.TLS)
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.HandshakeTimeout)
	err = tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		g.cfg.Logger.Debug("TLS handshake failed", logkey.Port, ps.number, logkey.Host, sni, logkey.Error, err)
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	if l.Protocol == weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTPS {
		ps.push(tc)
		return
	}
	g.forwardL4(tc, l, sni, true)
}

// prefixConn replays bytes read ahead, then reads the connection.
type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// forwardL4 sends a connection's bytes to the backend of the listener's
// first virtual host matching host (TCP listeners: its only one), first
// table, first rule, by weight. terminated: TLS was terminated here, so
// TLS toward the backend follows its BackendTLSPolicy.
func (g *Gateway) forwardL4(c net.Conn, l *Listener, host string, terminated bool) {
	if !g.group.Track(c) {
		c.Close()
		return
	}
	defer g.group.Untrack(c)
	defer c.Close()
	snap := g.snap.Load()
	var sent, received int64
	var peer metrics.Peer
	peer.SourceNamespace, peer.SourceWorkload, _ = strings.Cut(snap.Gateway, "/")
	if g.cfg.Metrics != nil {
		defer func() { g.cfg.Metrics.TCPConnection(&peer, sent, received) }()
	}
	vh := l.PickVHost(host)
	if vh == nil || len(vh.Tables) == 0 || len(vh.Tables[0].Rules()) == 0 {
		g.cfg.Logger.Debug("l4: no route", logkey.Listener, l.Name, logkey.Host, host)
		return
	}
	rule := &vh.Tables[0].Rules()[0]
	peer.Route = rule.Route
	b, err := rule.PickBackend(g.cfg.Rand)
	if err == nil {
		peer.Backend = b.Cluster
	}
	if err != nil {
		g.cfg.Logger.Debug("l4: no valid backend", logkey.Listener, l.Name, logkey.Error, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), g.cfg.DialTimeout)
	up, err := g.dialCluster(ctx, snap, b.Cluster, terminated, nil, nil)
	cancel()
	if err != nil {
		g.cfg.Logger.Debug("l4: upstream", logkey.Cluster, b.Cluster, logkey.Error, err)
		return
	}
	defer up.Close()
	hc, ok := up.(relay.HalfCloser)
	if !ok {
		g.cfg.Logger.Warn("l4: upstream cannot half-close", logkey.Cluster, b.Cluster)
		return
	}
	sent, received = relay.Splice(c, hc)
}
