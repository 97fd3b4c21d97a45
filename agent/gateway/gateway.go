package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/drain"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/session"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Config configures a Gateway.
type Config struct {
	// Listen opens the listener of a policy port; nil: TCP on ":<port>"
	// with MPTCP off. Tests map ports to 127.0.0.1:0.
	Listen func(port uint32) (net.Listener, error)
	// Tunnel dials enrolled endpoints through their nodes' inbound proxies
	// with the gateway's SVID; nil: enrolled endpoints are unreachable
	// (plaintext endpoints still are).
	Tunnel *tunnel.Dialer
	// Sessions resolves session persistence; one with a random key when nil.
	Sessions *session.Manager
	// DialTimeout bounds connecting to a backend; 5s when zero.
	DialTimeout time.Duration
	// HandshakeTimeout bounds reading a ClientHello and a TLS handshake; 10s when zero.
	HandshakeTimeout time.Duration
	// IdleTimeout closes idle client keep-alive connections; 5m when zero.
	IdleTimeout time.Duration
	// Limits bound request headers and buffered retry bodies.
	Limits limits.Limits
	// Rand returns a value in [0, n); math/rand/v2.IntN when nil.
	Rand func(n int) int
	// Metrics counts requests and L4 connections under the node proxy's
	// metric names, the Gateway (namespace, name) as their source; nil:
	// none.
	Metrics *metrics.Proxy
	Logger  *slog.Logger
}

// Gateway serves one Gateway's listeners. Apply a policy, then Shutdown.
type Gateway struct {
	cfg   Config
	snap  atomic.Pointer[Snapshot]
	group drain.Group // listeners and L4 connections
	up    *upstreams

	mu       sync.Mutex // serialises Apply and Shutdown
	ports    map[uint32]*portServer
	applied  atomic.Bool
	shutdown bool
	// requests counts HTTP requests in flight (for the drain).
	requests atomic.Int64
}

// New returns a Gateway with no listener.
func New(cfg Config) (*Gateway, error) {
	cfg.DialTimeout = cmp.Or(cfg.DialTimeout, 5*time.Second)
	cfg.HandshakeTimeout = cmp.Or(cfg.HandshakeTimeout, 10*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 5*time.Minute)
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Rand == nil {
		cfg.Rand = rand.IntN
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Listen == nil {
		cfg.Listen = listenTCP
	}
	if cfg.Sessions == nil {
		m, err := session.New(session.Config{})
		if err != nil {
			return nil, fmt.Errorf("gateway: sessions: %w", err)
		}
		cfg.Sessions = m
	}
	g := &Gateway{cfg: cfg, ports: make(map[uint32]*portServer)}
	g.up = newUpstreams(g)
	return g, nil
}

func listenTCP(port uint32) (net.Listener, error) {
	lc := &net.ListenConfig{}
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", fmt.Sprintf(":%d", port))
}

// Snapshot returns the snapshot in force (nil before the first Apply).
func (g *Gateway) Snapshot() *Snapshot { return g.snap.Load() }

// Ready reports whether a policy was applied (and so every listener of it
// is open: Apply opens them all or refuses the policy).
func (g *Gateway) Ready() bool { return g.applied.Load() }

// Addr returns the address a policy port listens on, nil when not open.
func (g *Gateway) Addr(port uint32) net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	if ps, ok := g.ports[port]; ok {
		return ps.ln.Addr()
	}
	return nil
}

// ErrShutdown: Apply after Shutdown.
var ErrShutdown = errors.New("gateway shut down")

// Apply compiles p and puts it in force: it opens the listeners of new
// ports first (a port that cannot be opened refuses the whole policy and
// closes what it opened), then swaps the snapshot (new connections and
// requests use it; established ones keep going), then closes the ports p
// no longer has, letting their connections finish. A non-nil error leaves
// the previous policy in force: the policy client NACKs it.
func (g *Gateway) Apply(p *weftv1.GatewayPolicy) error {
	s, err := Compile(p)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.shutdown {
		return ErrShutdown
	}
	opened, err := g.openLocked(s)
	if err != nil {
		return err
	}
	g.snap.Store(s)
	g.applied.Store(true)
	for port, ps := range g.ports {
		if _, keep := s.Ports[port]; !keep {
			delete(g.ports, port)
			go ps.close(g.cfg.IdleTimeout)
		}
	}
	for _, ps := range opened {
		g.ports[ps.number] = ps
		go g.serve(ps)
	}
	g.up.closeIdle() // backend TLS settings may have changed
	return nil
}

// openLocked listens on every port of s not open yet; all or nothing.
func (g *Gateway) openLocked(s *Snapshot) ([]*portServer, error) {
	nums := make([]uint32, 0, len(s.Ports))
	for n := range s.Ports {
		if _, open := g.ports[n]; !open {
			nums = append(nums, n)
		}
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	var opened []*portServer
	for _, n := range nums {
		ln, err := g.cfg.Listen(n)
		if err != nil {
			for _, ps := range opened {
				ps.ln.Close()
			}
			return nil, fmt.Errorf("listen on port %d: %w", n, err)
		}
		opened = append(opened, g.newPortServer(n, ln))
	}
	return opened, nil
}

func (g *Gateway) serve(ps *portServer) {
	go ps.http.Serve(ps.conns)
	err := g.group.Serve(ps.ln, ps.handle)
	if err != nil && !errors.Is(err, drain.ErrClosed) && !ps.closed.Load() {
		g.cfg.Logger.Error("accept failed; port closed", logkey.Port, ps.number, logkey.Error, err)
	}
}

// Shutdown stops accepting on every port, lets requests and connections
// finish until ctx ends, then closes what is left.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.shutdown = true
	ports := make([]*portServer, 0, len(g.ports))
	for _, ps := range g.ports {
		ports = append(ports, ps)
	}
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, ps := range ports {
		wg.Go(func() { ps.http.Shutdown(ctx) })
	}
	httpDone := make(chan struct{})
	go func() { wg.Wait(); close(httpDone) }()
	err := g.group.Drain(ctx, func() bool {
		select {
		case <-httpDone:
			return g.group.Live() == 0 && g.requests.Load() == 0
		default:
			return false
		}
	})
	g.group.Close()
	for _, ps := range ports {
		ps.http.Close()
	}
	g.group.Wait()
	<-httpDone
	g.up.close()
	return err
}

// portServer is one open port: its listener, and the HTTP server that
// serves its HTTP and HTTPS connections.
type portServer struct {
	g      *Gateway
	number uint32
	ln     net.Listener
	conns  *drain.Feed
	http   *http.Server
	closed atomic.Bool
}

// close stops accepting on a port the policy dropped; its connections get
// grace to finish.
func (ps *portServer) close(grace time.Duration) {
	ps.closed.Store(true)
	ps.ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	ps.http.Shutdown(ctx)
	ps.conns.Close()
}
