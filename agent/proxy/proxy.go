// Package proxy assembles the node proxy: the outbound capture listener
// (mesh.CapturePort), the inbound mTLS tunnel listener (mesh.TunnelPort) and the tunnel dialer
// between them, all fed by one NodePolicy snapshot.
//
// Update compiles a policy completely before anything changes: a policy
// that does not compile is refused with an error (the agent NACKs it) and
// the previous snapshot stays in force.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/authz"
	"github.com/weft-mesh/weft/agent/proxy/inbound"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/session"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Default ports on the node IP (the mesh contract's well-known ports).
const (
	OutboundPort = mesh.CapturePort
	InboundPort  = mesh.TunnelPort
)

// Config configures a Proxy.
type Config struct {
	// Node is this node's name (policy.node must match).
	Node string
	// OutboundAddr and InboundAddr are the listen addresses
	// (<node ip>:OutboundPort, <node ip>:InboundPort) used by Run.
	OutboundAddr string
	InboundAddr  string
	TrustDomain  spiffeid.TrustDomain
	Lookup       outbound.OrigDstLookup
	Callers      outbound.Callers
	Identities   tunnel.Identities
	// SessionKeys authenticate session cookies (see session.Config.Keys);
	// a random key when empty.
	SessionKeys [][]byte
	// GracePeriod is how long Run lets in-flight work finish after its
	// context ends; 10s when zero.
	GracePeriod time.Duration
	// DialPod connects the inbound side to local pods; when nil,
	// inbound.PodDialer with PodDialMark.
	DialPod func(ctx context.Context, network, addr string) (net.Conn, error)
	// PodDialMark is the SO_MARK on the inbound's sockets to local pods
	// (mesh.ProxyDialMark in the agent: strict-mTLS pods accept only
	// those); zero: none.
	PodDialMark uint32
	// Limits bound what one client can make the proxy hold (README.md,
	// "Limits"); zero fields take the defaults.
	Limits limits.Limits
	// Metrics, when set, gets the proxy's metrics (package agent/metrics);
	// nil: metrics off.
	Metrics prometheus.Registerer
	Logger  *slog.Logger
	// OutboundLoops, when above zero, serves captured HTTP/1.1 clients in
	// that many event loops (outbound.Config.Loops); the agent runs
	// DefaultOutboundLoops.
	OutboundLoops int
}

// DefaultOutboundLoops is how many outbound event loops the agent runs
// unless told otherwise: half the CPUs the process may use, at least one.
// On the two-core benchmark one loop cost 0.97x nginx's CPU per request
// at 1,000 req/s where two cost 1.18x: each loop wakes its own thread, and
// the node proxy shares the node with its pods.
func DefaultOutboundLoops() int { return max(1, runtime.GOMAXPROCS(0)/2) }

// Proxy is the node proxy.
type Proxy struct {
	cfg    Config
	dialer *tunnel.Dialer
	out    *outbound.Proxy
	in     *inbound.Server
	// refusals counts (and logs) the refusals of both sides
	refusals *limits.Refusals
	local    atomic.Pointer[localState]
	mu       sync.Mutex // serialises Update
}

// ErrWrongNode: the policy is for another node.
var ErrWrongNode = errors.New("policy is for another node")

// New builds a Proxy with an empty policy (every captured connection is
// refused until the first Update).
func New(cfg Config) (*Proxy, error) {
	if cfg.Lookup == nil || cfg.Callers == nil || cfg.Identities == nil {
		return nil, errors.New("proxy: lookup, callers and identities are required")
	}
	if cfg.TrustDomain.IsZero() {
		return nil, errors.New("proxy: trust domain is required")
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	sessions, err := session.New(session.Config{Keys: cfg.SessionKeys})
	if err != nil {
		return nil, fmt.Errorf("proxy: sessions: %w", err)
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	p := &Proxy{cfg: cfg, refusals: limits.NewRefusals(limits.RefusalsConfig{Logger: cfg.Logger})}
	var m *metrics.Proxy
	if cfg.Metrics != nil {
		m = metrics.NewProxy(cfg.Metrics, p.refusals)
	}
	p.local.Store(&localState{})
	p.dialer = tunnel.NewDialer(tunnel.DialerConfig{Identities: cfg.Identities})
	p.out, err = outbound.New(outbound.Config{
		Lookup: cfg.Lookup, Callers: cfg.Callers, Tunnel: p.dialer, Sessions: sessions,
		Limits: cfg.Limits, Refusals: p.refusals, Metrics: m, Logger: cfg.Logger.With("side", "outbound"),
		Loops: cfg.OutboundLoops,
	})
	if err != nil {
		return nil, err
	}
	p.in, err = inbound.New(inbound.Config{
		TrustDomain: cfg.TrustDomain, Identities: cfg.Identities, Local: p, Authz: p.Authz,
		Dial: cfg.DialPod, DialMark: cfg.PodDialMark, MaxHeaderBytes: cfg.Limits.TunnelHeaderBytes, MaxRequestHeaderBytes: 2 * cfg.Limits.HeaderBytes,
		Refusals: p.refusals, Metrics: m,
		Logger: cfg.Logger.With("side", "inbound"),
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Refusals returns the counters of the proxy's refusals (both sides), by
// reason.
func (p *Proxy) Refusals() *limits.Refusals { return p.refusals }

// Budget returns the outbound's budget of buffered bytes and connections.
func (p *Proxy) Budget() *limits.Budget { return p.out.Budget() }

// Update compiles pol and swaps it in. On error nothing changes.
func (p *Proxy) Update(pol *weftv1.NodePolicy) error {
	if pol == nil {
		return errors.New("nil policy")
	}
	if p.cfg.Node != "" && pol.GetNode() != p.cfg.Node {
		return fmt.Errorf("%w: %q, this is %q", ErrWrongNode, pol.GetNode(), p.cfg.Node)
	}
	if td := pol.GetTrustDomain(); td != "" && td != p.cfg.TrustDomain.Name() {
		return fmt.Errorf("policy trust domain %q differs from the proxy's %q", td, p.cfg.TrustDomain.Name())
	}
	snap, err := outbound.Compile(pol)
	if err != nil {
		return err
	}
	local, err := compileLocal(pol)
	if err != nil {
		return err
	}
	if local.authz, err = authz.Compile(pol, p.cfg.TrustDomain); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out.Store(snap)
	p.local.Store(local)
	// connections the new policy refuses are closed
	p.in.Reauthorize()
	return nil
}

// localState is the inbound's view: which pods live here, as whom, and
// the authorization policies that select them.
type localState struct {
	pods   map[netip.Addr]spiffeid.ID
	byName map[string]spiffeid.ID
	// workload is "namespace/name" of the pod with an IP
	workload map[netip.Addr]string
	authz    *authz.Table
}

func compileLocal(pol *weftv1.NodePolicy) (*localState, error) {
	l := &localState{pods: make(map[netip.Addr]spiffeid.ID), byName: make(map[string]spiffeid.ID), workload: make(map[netip.Addr]string)}
	for _, w := range pol.GetWorkloads() {
		id, err := spiffeid.FromString(w.GetIdentity())
		if err != nil {
			return nil, fmt.Errorf("workload %s/%s identity: %w", w.GetNamespace(), w.GetName(), err)
		}
		for _, s := range w.GetIps() {
			ip, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("workload %s/%s ip %q: %w", w.GetNamespace(), w.GetName(), s, err)
			}
			l.pods[ip.Unmap()] = id
			l.workload[ip.Unmap()] = w.GetNamespace() + "/" + w.GetName()
		}
		l.byName[tunnel.ServerName(id)] = id
	}
	return l, nil
}

// PodIdentity implements inbound.Local.
func (p *Proxy) PodIdentity(a netip.Addr) (spiffeid.ID, bool) {
	id, ok := p.local.Load().pods[a]
	return id, ok
}

// Authz returns the authorization policies of the local pod with IP a (nil:
// none selects it, or it is not a local pod).
func (p *Proxy) Authz(a netip.Addr) *authz.Workload {
	l := p.local.Load()
	name, ok := l.workload[a]
	if !ok {
		return nil
	}
	return l.authz.For(name)
}

// ByServerName implements inbound.Local.
func (p *Proxy) ByServerName(n string) (spiffeid.ID, bool) {
	id, ok := p.local.Load().byName[n]
	return id, ok
}

// Listen opens a proxy listener with MPTCP off.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	l, err := outbound.ListenConfig().Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return l, nil
}

// Serve serves captured connections on out and tunnels on in until
// Shutdown; it returns the first serving error (nil after Shutdown).
func (p *Proxy) Serve(out, in net.Listener) error {
	errc := make(chan error, 2)
	go func() { errc <- p.out.Serve(out) }()
	go func() {
		err := p.in.Serve(in)
		if errors.Is(err, inbound.ErrServerClosed) {
			err = nil
		}
		errc <- err
	}()
	err := <-errc
	if err != nil {
		p.Close()
	}
	if err2 := <-errc; err == nil {
		err = err2
	}
	return err
}

// Run listens on the configured addresses and serves until ctx ends, then
// drains for the grace period (SIGTERM handling lives in the caller, which
// cancels ctx).
func (p *Proxy) Run(ctx context.Context) error {
	out, err := Listen(ctx, p.cfg.OutboundAddr)
	if err != nil {
		return err
	}
	in, err := Listen(ctx, p.cfg.InboundAddr)
	if err != nil {
		out.Close()
		return err
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(out, in) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.GracePeriod)
	defer cancel()
	serr := p.Shutdown(sctx)
	if err := <-done; err != nil {
		return err
	}
	if errors.Is(serr, context.DeadlineExceeded) {
		p.cfg.Logger.Warn("drain grace period ended with work in flight", logkey.Grace, p.cfg.GracePeriod.String(), logkey.Left, serr.Error())
		return nil
	}
	return serr
}

// Shutdown drains: stops accepting on both sides, lets in-flight requests,
// connections and tunnel streams finish until ctx ends, then closes them.
func (p *Proxy) Shutdown(ctx context.Context) error {
	// outbound first: its requests may still need this node's inbound
	oerr := p.out.Shutdown(ctx)
	p.dialer.Close()
	ierr := p.in.Shutdown(ctx)
	if oerr != nil && ierr != nil {
		return fmt.Errorf("%w; %w", oerr, ierr) // one line for the log
	}
	return cmp.Or(oerr, ierr)
}

// Close stops everything at once.
func (p *Proxy) Close() error {
	p.out.Close()
	p.in.Close()
	p.dialer.Close()
	return nil
}
