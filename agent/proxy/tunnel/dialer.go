package tunnel

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/weft-mesh/weft/agent/proxy/h2"
	"github.com/weft-mesh/weft/agent/proxy/sock"
)

// Target is one tunnelled connection: the pod address to reach, the node
// proxy that delivers to it and the identities on both ends.
type Target struct {
	// Node is the destination node's inbound proxy address ("ip:15008").
	Node string
	// Addr is the destination pod's ip:port (the CONNECT :authority).
	Addr netip.AddrPort
	// Source is the local workload whose SVID the tunnel presents.
	Source spiffeid.ID
	// Dest is the identity the destination must present (from the endpoint).
	Dest spiffeid.ID
}

// DialerConfig configures a Dialer.
type DialerConfig struct {
	Identities Identities
	// DialTimeout bounds TCP connect + TLS handshake to a node proxy; 5s when zero.
	DialTimeout time.Duration
	// IdleTimeout closes pooled TLS connections with no streams; 90s when zero.
	IdleTimeout time.Duration
}

// ErrRefused: the destination proxy answered the CONNECT with a non-200
// status (it is h2.ErrRefused).
var ErrRefused = h2.ErrRefused

// Dialer opens CONNECT streams to node proxies. TLS connections are pooled
// and multiplexed per (source identity, destination node, destination
// identity).
type Dialer struct {
	cfg     DialerConfig
	mu      sync.Mutex
	pools   map[poolKey][]*h2.Conn
	dialing map[poolKey]*dialCall
	tls     map[pairKey]*tls.Config
	done    bool
}

type pairKey struct{ src, dst spiffeid.ID }

type poolKey struct {
	pairKey
	node string
}

type dialCall struct {
	done chan struct{}
	c    *h2.Conn
	err  error
}

// NewDialer returns a Dialer; Close releases its pooled connections.
func NewDialer(cfg DialerConfig) *Dialer {
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, 5*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 90*time.Second)
	return &Dialer{cfg: cfg, pools: make(map[poolKey][]*h2.Conn), dialing: make(map[poolKey]*dialCall), tls: make(map[pairKey]*tls.Config)}
}

var errClosed = errors.New("tunnel dialer closed")

func (d *Dialer) tlsConfigLocked(k pairKey) *tls.Config {
	if c, ok := d.tls[k]; ok {
		return c
	}
	c := tlsconfig.MTLSClientConfig(SVIDSource(d.cfg.Identities, k.src), BundleSource(d.cfg.Identities), tlsconfig.AuthorizeID(k.dst))
	c.MinVersion = tls.VersionTLS13
	c.ServerName = ServerName(k.dst)
	c.NextProtos = []string{"h2"}
	c.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	d.tls[k] = c
	return c
}

// ClientTLS is the TLS configuration of tunnel connections that present
// src's SVID to a node proxy that must present dst's (for connections
// dialed elsewhere: an event loop's).
func (d *Dialer) ClientTLS(src, dst spiffeid.ID) *tls.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.tlsConfigLocked(pairKey{src, dst})
}

// DialTimeout bounds a tunnel connection's TCP connect and TLS handshake.
func (d *Dialer) DialTimeout() time.Duration { return d.cfg.DialTimeout }

// Dial opens one CONNECT stream to t.Addr through t.Node. ctx bounds the
// dial only; the stream lives until the returned conn is closed.
func (d *Dialer) Dial(ctx context.Context, t Target) (*Conn, error) {
	k := poolKey{pairKey{t.Source, t.Dest}, t.Node}
	hdr := http.Header{HeaderDestinationIdentity: {t.Dest.String()}}
	for try := 0; ; try++ {
		c, err := d.conn(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("tunnel to %s via %s: %w", t.Addr, t.Node, err)
		}
		s, err := c.Open(ctx, t.Addr.String(), hdr)
		if err == nil {
			return &Conn{s: s, target: t}, nil
		}
		// a pooled connection that went away under us, or a stream reset
		// before it was answered (the destination cut it as a policy
		// change made it decide per request; nothing reached the pod):
		// once more, fresh
		if try == 0 && (errors.Is(err, h2.ErrGoingAway) || errors.Is(err, h2.ErrConnClosed) || errors.Is(err, h2.ErrStreamReset)) && ctx.Err() == nil {
			continue
		}
		return nil, fmt.Errorf("tunnel to %s via %s: %w", t.Addr, t.Node, err)
	}
}

// conn returns a pooled connection with room for a stream, dialing one
// (once per key at a time) when there is none.
func (d *Dialer) conn(ctx context.Context, k poolKey) (*h2.Conn, error) {
	d.mu.Lock()
	if d.done {
		d.mu.Unlock()
		return nil, errClosed
	}
	live := d.pools[k][:0]
	var pick *h2.Conn
	for _, c := range d.pools[k] {
		if c.Usable() {
			live = append(live, c)
			if pick == nil {
				pick = c
			}
		}
	}
	d.pools[k] = live
	if pick != nil {
		d.mu.Unlock()
		return pick, nil
	}
	call, ok := d.dialing[k]
	if !ok {
		call = &dialCall{done: make(chan struct{})}
		d.dialing[k] = call
		tc := d.tlsConfigLocked(k.pairKey)
		go func() {
			dctx, cancel := context.WithTimeout(context.Background(), d.cfg.DialTimeout)
			defer cancel()
			call.c, call.err = d.dial(dctx, k.node, tc)
			d.mu.Lock()
			delete(d.dialing, k)
			if call.err == nil {
				if d.done {
					call.c.Close()
					call.err = errClosed
				} else {
					d.pools[k] = append(d.pools[k], call.c)
				}
			}
			d.mu.Unlock()
			close(call.done)
		}()
	}
	d.mu.Unlock()
	select {
	case <-call.done:
		return call.c, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *Dialer) dial(ctx context.Context, node string, tc *tls.Config) (*h2.Conn, error) {
	nd := &net.Dialer{KeepAlive: 30 * time.Second}
	raw, err := nd.DialContext(ctx, "tcp", node)
	if err != nil {
		return nil, err
	}
	tconn := tls.Client(sock.Wrap(raw), tc)
	if err := tconn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	if p := tconn.ConnectionState().NegotiatedProtocol; p != "h2" {
		raw.Close()
		return nil, fmt.Errorf("node proxy %s negotiated %q, want h2", node, p)
	}
	c, err := h2.NewClient(tconn, h2.Config{IdleTimeout: d.cfg.IdleTimeout})
	if err != nil {
		return nil, err
	}
	go c.Serve()
	return c, nil
}

// Close closes every pooled connection; later Dials fail.
func (d *Dialer) Close() {
	d.mu.Lock()
	d.done = true
	var all []*h2.Conn
	for _, cs := range d.pools {
		all = append(all, cs...)
	}
	d.pools = map[poolKey][]*h2.Conn{}
	d.mu.Unlock()
	for _, c := range all {
		c.Close()
	}
}

// CloseIdle closes pooled connections that carry no stream.
func (d *Dialer) CloseIdle() {
	d.mu.Lock()
	var idle []*h2.Conn
	for k, cs := range d.pools {
		live := cs[:0]
		for _, c := range cs {
			if c.Streams() == 0 {
				idle = append(idle, c)
			} else {
				live = append(live, c)
			}
		}
		d.pools[k] = live
	}
	d.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}
