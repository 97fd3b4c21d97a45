// Package outbound is the source side of the node proxy: the capture
// listener (:15001) that receives enrolled pods' redirected connections,
// finds the Service port and the caller's route table, and forwards either
// bytes (L4) or HTTP requests (L7) through the mTLS tunnel to the chosen
// endpoint's node.
//
// Endpoints on this same node are reached through the tunnel too (to this
// node's own inbound listener): identity checks and authorization stay
// uniform, at the cost of one loopback TLS hop.
package outbound

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"golang.org/x/time/rate"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/drain"
	"github.com/weft-mesh/weft/agent/proxy/h2c"
	"github.com/weft-mesh/weft/agent/proxy/http1"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/relay"
	"github.com/weft-mesh/weft/agent/proxy/session"
	"github.com/weft-mesh/weft/agent/proxy/sock"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Original is what the redirect recorded for a captured connection.
type Original struct {
	Dst         netip.AddrPort
	NetnsCookie uint64
}

// OrigDstLookup finds the original destination of a captured connection
// (client = the accepted conn's remote address, proxy = its local address).
// The datapath implements it from the BPF record map.
type OrigDstLookup interface {
	Lookup(client, proxy netip.AddrPort) (Original, bool)
}

// Callers maps a netns cookie to the enrolled workload living in that netns
// (the agent fills it from its enrollment state).
type Callers interface {
	ByCookie(cookie uint64) (*weftv1.Workload, bool)
}

// Config configures a Proxy.
type Config struct {
	Lookup  OrigDstLookup
	Callers Callers
	Tunnel  *tunnel.Dialer
	// Sessions resolves session persistence; one with a random key when nil.
	Sessions *session.Manager
	// DialTimeout bounds opening a tunnel stream; 5s when zero.
	DialTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections at L7; 5m when zero.
	IdleTimeout time.Duration
	// Rand returns a value in [0, n); math/rand/v2.IntN when nil.
	Rand func(n int) int
	// Limits bound request headers, buffered bytes and each source pod's
	// connections (limits.Limits; zero fields take the defaults).
	Limits limits.Limits
	// Refusals counts and logs the proxy's own refusals; one that logs to
	// Logger when nil.
	Refusals *limits.Refusals
	// Metrics counts requests, connections and redirects; nil: none.
	Metrics *metrics.Proxy
	Logger  *slog.Logger
	// Loops, when above zero, serves captured HTTP/1.1 clients in that
	// many event loops (see loop.go); zero: a goroutine per connection.
	Loops int
}

// Proxy is the outbound proxy. Store a Snapshot before serving.
type Proxy struct {
	cfg  Config
	snap atomic.Pointer[Snapshot]
	up   *upstreams
	h1   *http1.Client[upstreamKey]
	// h2 is the HTTP/2 client of upstream h2c and gRPC connections
	h2 *h2c.Client[upstreamKey]
	// h1srv serves captured HTTP/1.1 clients (h2c goes to h2srv)
	h1srv *http1.Server
	h2srv *h2c.ServerConfig
	dial  dialFunc
	// budget holds the buffered bytes and connection slots of source pods
	budget *limits.Budget

	// conns holds the listeners, the L4 and HTTP/1.1 client connections
	// and the accepted connections' handlers (for the drain: it includes
	// those not classified yet).
	conns drain.Group
	// requests counts L7 requests being served (for the drain).
	requests atomic.Int64
	// upstreamLog limits the Warn logs of requests answered 502.
	upstreamLog *rate.Limiter
	// loops serve HTTP/1.1 clients when Config.Loops is set
	loops *loops
}

// New checks cfg and returns a Proxy.
func New(cfg Config) (*Proxy, error) {
	if cfg.Lookup == nil || cfg.Callers == nil || cfg.Tunnel == nil {
		return nil, errors.New("outbound: lookup, callers and tunnel are required")
	}
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, 5*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 5*time.Minute)
	if cfg.Rand == nil {
		cfg.Rand = rand.IntN
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Refusals == nil {
		cfg.Refusals = limits.NewRefusals(limits.RefusalsConfig{Logger: cfg.Logger})
	}
	if cfg.Sessions == nil {
		m, err := session.New(session.Config{})
		if err != nil {
			return nil, fmt.Errorf("outbound: sessions: %w", err)
		}
		cfg.Sessions = m
	}
	p := &Proxy{cfg: cfg, budget: limits.NewBudget(cfg.Limits), upstreamLog: rate.NewLimiter(1, 5)}
	p.dial = endpointDialer(cfg.Tunnel)
	p.up = newUpstreams(p.dial, cfg.DialTimeout)
	p.h1 = http1.NewClient(func(ctx context.Context, k upstreamKey) (net.Conn, error) {
		return p.dial(ctx, k.src, k.dst, k.node, k.addr, k.plain)
	}, http1.ClientConfig{MaxIdlePerKey: maxIdlePerKey, IdleTimeout: loopIdleUpstream})
	p.h2 = newH2Client(p)
	p.h2srv = newH2Server(p)
	p.h1srv = http1.NewServer(http1.Config{
		Handler:        p.serveH1,
		H2C:            p.h2c,
		MaxHeaderBytes: cfg.Limits.HeaderBytes,
		IdleTimeout:    cfg.IdleTimeout,
		Idle:           p.setIdle,
		Draining:       p.conns.Draining,
		Budget:         headerBudget,
		Refused:        p.h1Refused,
	})
	p.snap.Store(&Snapshot{})
	if cfg.Loops > 0 {
		var err error
		if p.loops, err = newLoops(p, cfg.Loops); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Store swaps in a new snapshot; connections and requests that start later
// use it.
func (p *Proxy) Store(s *Snapshot) { p.snap.Store(s) }

// Snapshot returns the current snapshot.
func (p *Proxy) Snapshot() *Snapshot { return p.snap.Load() }

// Refusals returns the proxy's refusal counters.
func (p *Proxy) Refusals() *limits.Refusals { return p.cfg.Refusals }

// Budget returns the budget of buffered bytes and connections.
func (p *Proxy) Budget() *limits.Budget { return p.budget }

// Serve accepts captured connections on l until Shutdown or Close. It
// returns nil after Shutdown.
func (p *Proxy) Serve(l net.Listener) error {
	err := p.conns.Serve(l, p.handle)
	if errors.Is(err, drain.ErrClosed) {
		return nil
	}
	return fmt.Errorf("accept captured connections: %w", err)
}

// connInfo is what the outbound knows about one captured connection.
type connInfo struct {
	orig    Original
	caller  *weftv1.Workload
	src     spiffeid.ID
	callerN string
	// lease is the connection's slot among its pod's connections and
	// its share of the buffer budget
	lease *limits.Lease
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// handle classifies one captured connection: refuse, L4 or L7.
func (p *Proxy) handle(c net.Conn) {
	c = sock.Wrap(c) // raw reads and writes (see package sock)
	orig, ok := p.cfg.Lookup.Lookup(addrPort(c.RemoteAddr()), addrPort(c.LocalAddr()))
	if !ok {
		p.cfg.Logger.Debug("refused: no redirect record", logkey.Client, c.RemoteAddr().String())
		p.cfg.Metrics.Redirected(metrics.RedirectNoRecord)
		c.Close()
		return
	}
	orig.Dst = netip.AddrPortFrom(orig.Dst.Addr().Unmap(), orig.Dst.Port())
	w, ok := p.cfg.Callers.ByCookie(orig.NetnsCookie)
	if !ok {
		p.cfg.Logger.Debug("refused: unknown caller netns", logkey.Client, c.RemoteAddr().String(), logkey.Cookie, orig.NetnsCookie)
		p.cfg.Metrics.Redirected(metrics.RedirectUnknownCaller)
		c.Close()
		return
	}
	src, err := spiffeid.FromString(w.GetIdentity())
	if err != nil {
		p.cfg.Logger.Warn("refused: caller has no valid identity", logkey.Pod, w.GetNamespace()+"/"+w.GetName(), logkey.Error, err)
		p.cfg.Metrics.Redirected(metrics.RedirectNoIdentity)
		c.Close()
		return
	}
	info := &connInfo{orig: orig, caller: w, src: src, callerN: w.GetNamespace()}
	lease, ok := p.budget.Open(orig.NetnsCookie)
	if !ok {
		// closed before a byte is read: L4 or L7 alike, the pod learns at
		// once, and the connection costs nothing more
		p.refuse(limits.PodConns, 0, c.RemoteAddr(), info, "")
		p.cfg.Metrics.Redirected(metrics.RedirectPodConnections)
		c.Close()
		return
	}
	info.lease = lease
	c = &leasedConn{Conn: c, lease: lease}
	snap := p.snap.Load()
	svc, ok := snap.Services[orig.Dst]
	if !ok {
		p.cfg.Logger.Debug("refused: no meshed service", logkey.Dst, orig.Dst.String())
		p.cfg.Metrics.Redirected(metrics.RedirectNoService)
		c.Close()
		return
	}
	if svc.L7(svc.Table(info.callerN)) {
		p.cfg.Metrics.Redirected(metrics.RedirectL7)
		if p.loops != nil && p.loops.serve(c.(*leasedConn), info) {
			return
		}
		p.serveClient(c, info)
		return
	}
	p.cfg.Metrics.Redirected(metrics.RedirectL4)
	p.serveL4(c, info, snap, svc)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// serveL4 forwards bytes both ways at once: no sniffing, nothing waits for
// the client to speak first.
func (p *Proxy) serveL4(c net.Conn, info *connInfo, snap *Snapshot, svc *Service) {
	if !p.conns.Track(c) {
		c.Close()
		return
	}
	defer p.conns.Untrack(c)
	defer c.Close()
	var sent, received int64
	peer := metrics.Peer{SourceNamespace: info.callerN, SourceWorkload: info.caller.GetWorkload(), DestNamespace: svc.Namespace, DestService: svc.Service}
	if p.cfg.Metrics != nil {
		defer func() { p.cfg.Metrics.TCPConnection(&peer, sent, received) }()
	}
	clusterName := svc.DefaultCluster
	if t := svc.Table(info.callerN); t != nil && len(t.Rules()) > 0 {
		// a TCPRoute: its first rule's backends, by weight
		rule := &t.Rules()[0]
		peer.Route = rule.Route
		b, err := rule.PickBackend(p.cfg.Rand)
		if err != nil {
			p.cfg.Logger.Debug("l4: no valid backend", logkey.Service, svc.Name, logkey.Error, err)
			return
		}
		clusterName = b.Cluster
	}
	peer.Backend = clusterName
	ep, cl, ok := p.pickEndpoint(snap, clusterName)
	if !ok {
		p.cfg.Logger.Debug("l4: no endpoint", logkey.Service, svc.Name, logkey.Cluster, clusterName)
		return
	}
	node, ok := snap.Tunnels[ep.Node]
	if !ok && !ep.Plaintext {
		p.cfg.Logger.Debug("l4: no tunnel address", logkey.Node, ep.Node)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DialTimeout)
	up, err := p.dial(ctx, info.src, ep.Identity, node, ep.Addr, ep.Plaintext)
	cancel()
	if err != nil {
		p.cfg.Logger.Debug("l4: upstream", logkey.Cluster, cl.Name, logkey.Endpoint, ep.Addr.String(), logkey.Plaintext, ep.Plaintext, logkey.Error, err)
		return
	}
	defer up.Close()
	hc, ok := up.(relay.HalfCloser)
	if !ok {
		p.cfg.Logger.Warn("l4: upstream cannot half-close", logkey.Type, fmt.Sprintf("%T", up))
		return
	}
	sent, received = relay.Splice(c, hc)
}

func (p *Proxy) pickEndpoint(snap *Snapshot, cluster string) (*Endpoint, *Cluster, bool) {
	cl, ok := snap.Clusters[cluster]
	if !ok {
		return nil, nil, false
	}
	ep, ok := cl.Pick(p.cfg.Rand)
	return ep, cl, ok
}

// Shutdown stops accepting, lets in-flight requests and connections finish
// until ctx ends, then closes everything left. Idle keep-alive connections
// are closed at once, HTTP/2 connections are sent GOAWAY; in-flight work
// is counted here.
func (p *Proxy) Shutdown(ctx context.Context) error {
	// done when every accepted connection (L4, HTTP/1.1, HTTP/2, not
	// classified yet) ended and no request (hijacked upgrades included)
	// runs
	err := p.conns.Drain(ctx, func() bool {
		return p.conns.Live() == 0 && p.requests.Load() == 0
	})
	if err != nil { // what the grace period cuts, for the log
		err = fmt.Errorf("outbound: %d client connections, %d requests in flight: %w", p.conns.Live(), p.requests.Load(), err)
	}
	p.Close()
	p.conns.Wait() // closed under them: they end at once
	return err
}

// Close closes listeners and every connection at once.
func (p *Proxy) Close() error {
	p.conns.Close()
	if p.loops != nil {
		p.loops.close()
	}
	p.up.close()
	p.h1.Close()
	p.h2.Close()
	return nil
}

// ListenConfig is the listen configuration for proxy listeners: MPTCP off
// (a Go listener must be plain TCP to go into a SOCKMAP).
func ListenConfig() *net.ListenConfig {
	lc := &net.ListenConfig{}
	lc.SetMultipathTCP(false)
	return lc
}
