package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/proxy/forward"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
)

// upstreams holds the net/http transports of protocol upgrades (WebSocket
// and the like) towards endpoints; plain HTTP/1.1 goes through p.h1 and
// HTTP/2 through p.h2. Each upstream connection is one CONNECT stream of
// the tunnel, so the destination node only splices bytes. Transports are
// per (source identity, destination identity); each pools by endpoint
// address.
type upstreams struct {
	dial        dialFunc
	dialTimeout time.Duration
	mu          sync.Mutex
	m           map[pairKey]*http.Transport
}

type pairKey struct{ src, dst spiffeid.ID }

// dialKey carries the tunnel target of a request to the transport's dialer.
type dialKey struct{}

type dialInfo struct {
	node  string
	addr  netip.AddrPort
	plain bool
}

// dialFunc opens an upstream connection to addr: a tunnel stream through
// node's inbound proxy, or (plain) a direct TCP connection to a pod that is
// not in the mesh.
type dialFunc func(ctx context.Context, src, dst spiffeid.ID, node string, addr netip.AddrPort, plain bool) (net.Conn, error)

// endpointDialer is the dialFunc over a tunnel dialer.
func endpointDialer(d *tunnel.Dialer) dialFunc {
	var direct net.Dialer
	return func(ctx context.Context, src, dst spiffeid.ID, node string, addr netip.AddrPort, plain bool) (c net.Conn, err error) {
		if plain {
			c, err = direct.DialContext(ctx, "tcp", addr.String())
		} else {
			c, err = d.Dial(ctx, tunnel.Target{Node: node, Addr: addr, Source: src, Dest: dst})
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", forward.ErrConnect, err)
		}
		return c, nil
	}
}

var errNoDialInfo = errors.New("upstream dial without a tunnel target")

func newUpstreams(dial dialFunc, dialTimeout time.Duration) *upstreams {
	return &upstreams{dial: dial, dialTimeout: dialTimeout, m: make(map[pairKey]*http.Transport)}
}

func (u *upstreams) get(src, dst spiffeid.ID) *http.Transport {
	k := pairKey{src, dst}
	u.mu.Lock()
	t, ok := u.m[k]
	if !ok {
		t = u.newTransport(src, dst)
		u.m[k] = t
	}
	u.mu.Unlock()
	return t
}

func (u *upstreams) newTransport(src, dst spiffeid.ID) *http.Transport {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		di, ok := ctx.Value(dialKey{}).(*dialInfo)
		if !ok {
			return nil, errNoDialInfo
		}
		ctx, cancel := context.WithTimeout(ctx, u.dialTimeout)
		defer cancel()
		return u.dial(ctx, src, dst, di.node, di.addr, di.plain)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	return &http.Transport{
		DialContext:         dial,
		Protocols:           &p,
		DisableCompression:  true,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
	}
}

func (u *upstreams) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, t := range u.m {
		t.CloseIdleConnections()
	}
}
