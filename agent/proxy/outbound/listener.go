package outbound

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// maxIdlePerKey bounds the idle upstream HTTP/1.1 connections kept per
// endpoint.
const maxIdlePerKey = 64

// upstreamKey names an upstream connection (HTTP/1.1, or h2c and gRPC):
// who dials, through which node, to which endpoint.
type upstreamKey struct {
	src, dst spiffeid.ID
	node     string
	addr     netip.AddrPort
	plain    bool
}

// clientConn is a captured HTTP/1.1 client connection; closing it also
// ends its requests' upstream work.
type clientConn struct {
	net.Conn
	cancel context.CancelFunc
	info   *connInfo
}

func (c *clientConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}

// CloseWrite half-closes the client connection.
func (c *clientConn) CloseWrite() error {
	return closeWrite(c.Conn)
}

// serveClient serves a captured L7 connection until it closes.
func (p *Proxy) serveClient(c net.Conn, info *connInfo) {
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), infoKey{}, info))
	defer cancel()
	// tracked: a drain closes it while idle, Close at once; a connection
	// accepted before a Shutdown began is served
	cc := &clientConn{Conn: c, cancel: cancel, info: info}
	if !p.conns.Track(cc) {
		c.Close()
		return
	}
	defer p.conns.Untrack(cc)
	p.h1srv.ServeConn(ctx, cc)
}

// setIdle is the HTTP/1.1 server's Idle hook.
func (p *Proxy) setIdle(c net.Conn, idle bool) bool { return p.conns.SetIdle(c.(*clientConn), idle) }

// serveH1 serves one request of the HTTP/1.1 server.
func (p *Proxy) serveH1(ctx context.Context, w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				p.cfg.Logger.Error("panic serving a request", "panic", fmt.Sprint(v))
			}
			panic(http.ErrAbortHandler)
		}
	}()
	info := ctx.Value(infoKey{}).(*connInfo)
	w, ex := p.observe(w, info)
	defer p.done(ex, r)
	p.serve(w, r, ctx, info, ex)
}
