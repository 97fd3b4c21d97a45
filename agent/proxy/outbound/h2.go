package outbound

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/h2c"
	"github.com/weft-mesh/weft/agent/proxy/limits"
)

// h2cReceiveWindow is what the HTTP/2 server may buffer of one cleartext
// connection's request bodies (its flow-control window, for the
// connection and for each stream): the connection holds that much of its
// pod's buffer budget for as long as it is open.
const h2cReceiveWindow = 64 << 10

// UpstreamH2 configures the client end of upstream h2c and gRPC
// connections, the outbound's and a Gateway's: a stream's receive window
// (response bodies) of 1 MiB, its connection's 4 MiB, and a pod's response
// header block (large cookies, gRPC metadata) of up to 1 MiB, where
// net/http's Transport allowed 10 MiB and Envoy 60 KiB.
var UpstreamH2 = h2c.ClientConfig{
	StreamWindow: 1 << 20, ConnWindow: 4 << 20, IdleTimeout: 90 * time.Second,
	MaxHeaderListSize: 1 << 20,
}

func newH2Server(p *Proxy) *h2c.ServerConfig {
	return &h2c.ServerConfig{
		Handler: p,
		// announced as SETTINGS_MAX_HEADER_LIST_SIZE; a larger header
		// block is answered 431
		MaxHeaderListSize: uint32(p.cfg.Limits.HeaderBytes),
		StreamWindow:      h2cReceiveWindow,
		ConnWindow:        h2cReceiveWindow,
		IdleTimeout:       p.cfg.IdleTimeout,
	}
}

// newH2Client is the client of upstream h2c and gRPC connections: each is
// one tunnel stream (or a plaintext TCP connection), multiplexed.
func newH2Client(p *Proxy) *h2c.Client[upstreamKey] {
	return h2c.NewClient(func(ctx context.Context, k upstreamKey) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
		defer cancel()
		return p.dial(ctx, k.src, k.dst, k.node, k.addr, k.plain)
	}, UpstreamH2)
}

// h2Conn is a served HTTP/2 client connection as the drain sees it: a
// drain sends GOAWAY and lets its streams finish.
type h2Conn struct{ sc *h2c.ServerConn }

func (c h2Conn) Close() error { return c.sc.Close() }
func (c h2Conn) Drain()       { c.sc.GoAway() }

// h2c serves a cleartext HTTP/2 connection once its receive window fits
// in the pod's share of the buffer budget; else the connection is refused
// (closed) and the refusal counted.
func (p *Proxy) h2c(ctx context.Context, c net.Conn, r io.Reader) {
	info := ctx.Value(infoKey{}).(*connInfo)
	if !info.lease.Reserve(h2cReceiveWindow) {
		p.refuse(limits.BufferBudget, 0, c.RemoteAddr(), info, "no budget for an HTTP/2 connection's receive window")
		c.Close()
		return
	}
	// closing the connection closes its lease, which returns the window
	cfg := *p.h2srv
	cfg.Refused = func(status int) { p.refuse(reasonOf(status), status, c.RemoteAddr(), info, "") }
	sc, err := h2c.NewServerConn(c, r, &cfg)
	if err != nil {
		return
	}
	hc := h2Conn{sc}
	if !p.conns.Track(hc) {
		sc.Close()
		return
	}
	defer p.conns.Untrack(hc)
	sc.Serve(ctx)
}
