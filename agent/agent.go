// Package agent runs one node's share of the mesh: it keeps the node's
// policy in sync with the controller (agent/policy), holds the SVIDs of the
// node's workloads (agent/proxy/identity), feeds the eBPF redirect
// (agent/datapath) and runs the node proxy (agent/proxy).
//
// A policy is applied in one order: the proxy compiles it first (a policy
// that does not compile is NACKed and nothing changes), then the identities
// and the redirect maps follow. A pod is marked enrolled (pod condition
// weft.dev/Enrolled) only once its redirect is in place.
//
// Restarts and upgrades hand the node's listening sockets from the old
// agent to the new one (listeners.go, package handoff), so redirected
// connections are never refused while agents change. A crashed agent
// hands nothing over: the node's socket holder (package sockholder, the
// pod's holder container) keeps the same sockets open meanwhile, and the
// next agent takes them from it. The redirect is pinned on the host's
// bpffs and adopted by the next agent, which adds to the maps but removes
// nothing until it has the controller's policy (so enrollment never lapses).
package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/agent/cni"
	"github.com/weft-mesh/weft/agent/datapath"
	"github.com/weft-mesh/weft/agent/handoff"
	"github.com/weft-mesh/weft/agent/lifecycle"
	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/policy"
	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/proxy/identity"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/sockholder"
	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/api/promserve"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Config configures an agent.
type Config struct {
	Node   string
	NodeIP netip.Addr
	// ControllerAddr is weft-controller's gRPC address (host:port); its
	// certificate must be valid for host and chain to the mesh root.
	ControllerAddr string
	// ControllerCAFile is the mesh root bundle (PEM) published by the
	// controller (ConfigMap weft-ca-bundle), used until policy brings the
	// trust bundle.
	ControllerCAFile string
	// InsecureController talks to the controller without TLS (tests only).
	InsecureController bool
	// Token returns the agent's projected ServiceAccount token (audience weft).
	Token func() (string, error)
	// Kube marks pods enrolled; nil: pods are not marked (tests).
	Kube kubernetes.Interface
	// StateDir keeps the last good policy (per node, so several agents can
	// share a host directory in the lab).
	StateDir string
	// Datapath configuration (Node, ProxyAddr and Logger are filled in).
	Datapath datapath.Config
	// TrustDomain of workload identities.
	TrustDomain spiffeid.TrustDomain
	// HealthAddr serves /healthz and /readyz.
	HealthAddr string
	// MetricsAddr serves the Prometheus metrics on /metrics (README.md,
	// "Metrics"); empty: metrics off.
	MetricsAddr string
	// GracePeriod for draining the proxy on shutdown.
	GracePeriod time.Duration
	// HandoffWait is how long a stopping agent keeps serving while it
	// waits for the next agent on its node to take its listeners over
	// (package handoff); not when weft is being uninstalled. 0: 25s;
	// negative: no wait. Keep HandoffWait + GracePeriod (+ a few seconds)
	// within the pod's terminationGracePeriodSeconds.
	HandoffWait time.Duration
	// HolderPath is the node's socket holder (weft-agent hold, package
	// sockholder): when no agent serves the node, the listeners come from
	// it, so connections made while no agent ran wait in their accept
	// queues instead of being refused. Empty: no holder.
	HolderPath string
	// Resync retries pods whose redirect is not in place yet.
	Resync time.Duration
	// ProxyLimits bound what one client can make the node proxy hold
	// (README.md, "Limits"); zero fields take the defaults.
	ProxyLimits limits.Limits
	// OutboundLoops is how many event loops serve captured HTTP/1.1
	// clients (proxy.Config.OutboundLoops); 0: a goroutine per connection.
	OutboundLoops int
	// Uninstalling is asked once, when the agent is told to stop (never
	// after it handed its listeners over): true means weft is being removed
	// from the node (its DaemonSet is gone), so the agent waits for no
	// successor and the redirect is detached and unpinned instead of kept
	// for the next agent. Nil: never.
	Uninstalling func(context.Context) bool
	// CNI is the agent's side of weft-cni (cni.go).
	CNI CNIConfig
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Agent is a running node agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	conn    *grpc.ClientConn
	dp      *datapath.Datapath
	px      *proxy.Proxy
	ids     *identity.Manager
	pol     *policy.Client
	marker  *marker
	callers atomic.Pointer[map[uint64]*weftv1.Workload]
	// callersCh is closed (and replaced) whenever callers or the CNI holds
	// change (callerGate).
	callersMu sync.Mutex
	callersCh chan struct{}
	// gate holds connections of pods weft-cni enrolled (ByCookie).
	gate callerGate

	enroller       *cni.Enroller // nil without a CNI socket
	cniServer      *cni.Server
	cniInstallStop context.CancelFunc
	cniInstallDone chan struct{}

	loops       sync.WaitGroup
	cancelLoops context.CancelFunc
	errc        chan error // a loop failed

	ls         map[string]net.Listener // by handoff name; nil until serving
	tookOver   bool                    // ls came from the previous agent
	source     sockholder.Source       // where ls came from
	serveDone  chan error
	health     *http.Server
	healthDone chan error
	reg        *prometheus.Registry // nil: metrics off
	metrics    *metrics.Agent
	metricsSrv *http.Server
	holder     *handoff.Holder
	handedOver bool // a successor took ls over

	ready    atomic.Bool // serving
	stopping atomic.Bool // stopping or handed over: not ready

	uninstallOnce sync.Once
	uninstall     bool

	mu      sync.Mutex // serialises apply and resync
	current *weftv1.NodePolicy
}

// ByCookie implements outbound.Callers: a pod that weft-cni enrolled is
// waited for until its policy and its SVID are in (callerGate).
func (a *Agent) ByCookie(cookie uint64) (*weftv1.Workload, bool) {
	return a.gate.caller(cookie)
}

// heldByCNI reports whether weft-cni enrolled the pod of cookie.
func (a *Agent) heldByCNI(cookie uint64) bool {
	return a.enroller != nil && a.enroller.HoldsCookie(cookie)
}

// callersChange is closed at the next change of the callers or holds.
func (a *Agent) callersChange() <-chan struct{} {
	a.callersMu.Lock()
	defer a.callersMu.Unlock()
	return a.callersCh
}

func (a *Agent) lookupCaller(cookie uint64) (*weftv1.Workload, bool) {
	m := a.callers.Load()
	if m == nil {
		return nil, false
	}
	w, ok := (*m)[cookie]
	return w, ok
}

// datapathLookup adapts the datapath's record lookup to the proxy's. The
// proxy serves only once the datapath is open.
type datapathLookup struct{ a *Agent }

func (l datapathLookup) Lookup(client, proxyAddr netip.AddrPort) (outbound.Original, bool) {
	o, ok := l.a.dp.Lookup(client, proxyAddr)
	return outbound.Original{Dst: o.Dst, NetnsCookie: o.NetnsCookie}, ok
}

// Run starts everything and blocks until ctx ends, then drains the proxy
// and closes the datapath (leaving the redirect pinned for the next agent).
//
// The node's listeners (capture, tunnel, health) are never closed while
// another agent takes over: a starting agent that finds one serving on the
// node gets ready first, then takes the very same sockets over (package
// handoff). An agent whose ctx ends keeps serving until the next agent has
// taken them, for at most Config.HandoffWait, unless weft is being
// uninstalled; one that has handed them over drains and, if ctx has not
// ended, waits for it without serving.
func Run(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if rep := datapath.Preflight(cfg.Datapath.CgroupPath); !rep.OK() {
		return fmt.Errorf("preflight failed:\n%s", rep.Format())
	}
	a, err := build(cfg)
	if err != nil {
		return err
	}
	// Stops run in reverse: the handoff offer goes first, then the sync
	// loops (the node may belong to a successor now: stop writing its
	// maps), then the proxy drains; the datapath closes last.
	var lc lifecycle.Lifecycle
	lc.Append(lifecycle.Hook{Name: "controller connection", Stop: a.closeConn})
	lc.Append(lifecycle.Hook{Name: "datapath", Start: a.openDatapath, Stop: a.closeDatapath})
	lc.Append(lifecycle.Hook{Name: "cni", Start: a.startCNI, Stop: a.stopCNI})
	lc.Append(lifecycle.Hook{Name: "proxy", Stop: a.drain})
	lc.Append(lifecycle.Hook{Name: "sync loops", Start: a.startLoops, Stop: a.stopLoops})
	lc.Append(lifecycle.Hook{Name: "listeners", Start: a.serve})
	lc.Append(lifecycle.Hook{Name: "handoff", Start: a.offer, Stop: a.withdraw})
	if err := lc.Start(ctx); err != nil {
		return err
	}
	if !a.serving() {
		// Stopped before serving: the agent being replaced (if any) still
		// serves. The redirect stays unless weft is being uninstalled.
		a.log.Info("agent stopped before it served", logkey.Node, cfg.Node)
		return lc.Stop(context.WithoutCancel(ctx))
	}
	a.ready.Store(true)
	a.log.Info("agent serving", logkey.Node, cfg.Node, logkey.Proxy, cfg.Datapath.ProxyAddr.String(), logkey.TookOver, a.tookOver, logkey.ListenersFrom, string(a.source))
	runErr := a.wait(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.GracePeriod)
	defer cancel()
	if err := errors.Join(runErr, lc.Stop(sctx)); err != nil || !a.handedOver {
		return err
	}
	a.log.Info("listeners handed over and drained", logkey.Node, cfg.Node)
	if ctx.Err() == nil {
		// Exiting would have the kubelet restart this container, which
		// would take the listeners back: wait to be stopped.
		a.log.Info("retired: waiting to be stopped")
		<-ctx.Done()
	}
	return nil
}

func (c Config) withDefaults() (Config, error) {
	if c.Node == "" || !c.NodeIP.Is4() {
		return c, errors.New("agent: node name and IPv4 node IP are required")
	}
	if c.Resync == 0 {
		c.Resync = 2 * time.Second
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = 20 * time.Second
	}
	if c.HandoffWait == 0 {
		c.HandoffWait = 25 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Datapath.Node = c.Node
	c.Datapath.ProxyAddr = netip.AddrPortFrom(c.NodeIP, proxy.OutboundPort)
	c.Datapath.Logger = c.Logger
	return c, nil
}

// build makes the agent's components; none of them serves or touches the
// node yet.
func build(cfg Config) (*Agent, error) {
	a := &Agent{cfg: cfg, log: cfg.Logger, errc: make(chan error, 4), callersCh: make(chan struct{})}
	a.gate = callerGate{lookup: a.lookupCaller, held: a.heldByCNI, issued: a.hasSVID, changed: a.callersChange, wait: cfg.CNI.HoldWait}
	if a.gate.wait <= 0 {
		a.gate.wait = 10 * time.Second
	}
	conn, err := a.dial()
	if err != nil {
		return nil, err
	}
	a.conn = conn
	if err := a.buildComponents(); err != nil {
		conn.Close()
		return nil, err
	}
	return a, nil
}

// dial makes the (lazily connecting) controller connection. It verifies the
// controller with the identity manager's trust bundle, and the manager
// signs through the connection: the manager is built on it afterwards.
func (a *Agent) dial() (*grpc.ClientConn, error) {
	cfg := a.cfg
	creds := insecure.NewCredentials()
	if !cfg.InsecureController {
		host, _, err := net.SplitHostPort(cfg.ControllerAddr)
		if err != nil {
			return nil, fmt.Errorf("controller address %q: %w", cfg.ControllerAddr, err)
		}
		creds = credentials.NewTLS(&tls.Config{
			MinVersion:         tls.VersionTLS13,
			InsecureSkipVerify: true, // verified in VerifyConnection, with roots that follow rotation
			VerifyConnection: func(cs tls.ConnectionState) error {
				return a.ids.ControllerTLSConfig(host, cfg.ControllerCAFile).VerifyConnection(cs)
			},
		})
	}
	conn, err := grpc.NewClient(cfg.ControllerAddr, append(weftv1.DialOptions(), grpc.WithTransportCredentials(creds))...)
	if err != nil {
		return nil, fmt.Errorf("controller %s: %w", cfg.ControllerAddr, err)
	}
	return conn, nil
}

// buildComponents makes the identity manager, the proxy, the pod marker
// and the policy client.
func (a *Agent) buildComponents() error {
	cfg, log := a.cfg, a.log
	ids, err := identity.New(identity.Config{
		Client: weftv1.NewIdentityClient(a.conn),
		Token:  cfg.Token,
		Node:   cfg.Node,
		Logger: log,
	})
	if err != nil {
		return fmt.Errorf("build identity manager: %w", err)
	}
	a.ids = ids
	var reg prometheus.Registerer // a nil interface: proxy metrics off
	if cfg.MetricsAddr != "" {
		a.reg = promserve.Registry()
		a.metrics = metrics.NewAgent(a.reg)
		reg = a.reg
	}
	key, err := sessionKey(filepath.Join(cfg.StateDir, cfg.Node, "session.key"))
	if err != nil {
		return err
	}
	a.px, err = proxy.New(proxy.Config{
		Node:          cfg.Node,
		OutboundAddr:  netip.AddrPortFrom(cfg.NodeIP, proxy.OutboundPort).String(),
		InboundAddr:   netip.AddrPortFrom(cfg.NodeIP, proxy.InboundPort).String(),
		TrustDomain:   cfg.TrustDomain,
		Lookup:        datapathLookup{a},
		Callers:       a,
		Identities:    ids,
		SessionKeys:   [][]byte{key},
		GracePeriod:   cfg.GracePeriod,
		PodDialMark:   mesh.ProxyDialMark,
		Limits:        cfg.ProxyLimits,
		OutboundLoops: cfg.OutboundLoops,
		Metrics:       reg,
		Logger:        log.With(logkey.Component, "proxy"),
	})
	if err != nil {
		return fmt.Errorf("build proxy: %w", err)
	}
	if cfg.Kube != nil {
		a.marker = &marker{kube: cfg.Kube, log: log, done: map[string]bool{}}
	}
	a.pol, err = policy.New(policy.Config{
		Node:    cfg.Node,
		Conn:    a.conn,
		Token:   cfg.Token,
		Store:   &policy.Store{Path: filepath.Join(cfg.StateDir, cfg.Node, "policy.pb")},
		Apply:   a.apply,
		Metrics: a.metrics,
		Log:     log.With(logkey.Component, "policy"),
	})
	if err != nil {
		return fmt.Errorf("build policy client: %w", err)
	}
	return nil
}

func (a *Agent) closeConn(context.Context) error { return a.conn.Close() }

func (a *Agent) openDatapath(context.Context) error {
	dp, err := datapath.Open(a.cfg.Datapath)
	if err != nil {
		return fmt.Errorf("open datapath: %w", err)
	}
	a.dp = dp
	if err := a.metrics.Strict(func() (metrics.StrictCounts, error) {
		c, err := dp.StrictCounters()
		return metrics.StrictCounts{Connect: c.Connect, SYN: c.SYN, Egress: c.Egress}, err
	}); err != nil {
		a.log.Warn("strict mTLS metrics not exported", logkey.Error, err)
	}
	return nil
}

// closeDatapath closes the datapath. The redirect stays pinned for the next
// agent, unless weft is being uninstalled and no successor took the node:
// then it is detached and unpinned.
func (a *Agent) closeDatapath(context.Context) error {
	a.dp.Close()
	if a.handedOver || !a.uninstalling() {
		return nil
	}
	if err := datapath.Cleanup(a.cfg.Datapath); err != nil {
		return fmt.Errorf("uninstall: remove the redirect: %w", err)
	}
	a.log.Info("weft is being uninstalled: redirect detached and unpinned", logkey.Node, a.cfg.Node)
	return nil
}

// startLoops restores the last good policy and starts the loops that keep
// the node in sync. They run until this agent stops or hands over (a
// successor owns the node then), not until ctx ends.
func (a *Agent) startLoops(ctx context.Context) error {
	if err := a.pol.Restore(); err != nil {
		// A stale or foreign copy must not block start: the controller
		// sends a full snapshot on connect.
		a.log.Warn("last good policy not restored", logkey.Error, err)
	}
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancelLoops = cancel
	for _, l := range []struct {
		name string
		run  func(context.Context) error
	}{{"policy", a.pol.Run}, {"identity", a.ids.Run}, {"resync", a.resyncLoop}} {
		a.loops.Go(func() {
			if err := l.run(loopCtx); err != nil && !errors.Is(err, context.Canceled) {
				a.errc <- fmt.Errorf("%s: %w", l.name, err)
			}
		})
	}
	return nil
}

func (a *Agent) stopLoops(context.Context) error {
	a.cancelLoops()
	a.loops.Wait()
	return nil
}

// serve acquires the node's listeners (binding them, or taking them over
// from the agent serving the node) and serves them. When ctx ends first it
// returns without serving.
func (a *Agent) serve(ctx context.Context) error {
	ls, succ, err := a.acquire(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("listen: %w", err)
	}
	a.ls = ls
	a.serveDone = make(chan error, 1)
	go func() { a.serveDone <- a.px.Serve(ls[lnOutbound], ls[lnInbound]) }()
	if hl := ls[lnHealth]; hl != nil {
		a.health = a.healthServer()
		a.healthDone = make(chan error, 1)
		go func() { a.healthDone <- a.health.Serve(hl) }()
	}
	if ml := ls[lnMetrics]; ml != nil {
		mux, stopHistory := metricsMux(a.reg)
		a.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		a.metricsSrv.RegisterOnShutdown(stopHistory)
		go func() {
			if err := a.metricsSrv.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				// metrics are not worth stopping the node's traffic for
				a.log.Error("metrics endpoint stopped", logkey.Error, err)
			}
		}()
	}
	if succ != nil {
		a.tookOver = true
		// Both agents accept on the same sockets now; the old one stops
		// once it reads this.
		if err := succ.Serving(); err != nil {
			a.log.Warn("handoff: the previous agent did not hear that this one serves; both accept until it stops", logkey.Error, err)
		}
		succ.Close()
	}
	return nil
}

func (a *Agent) serving() bool { return a.ls != nil }

// drain stops accepting and finishes the work in flight within ctx.
func (a *Agent) drain(ctx context.Context) error {
	if !a.serving() {
		return nil
	}
	if a.health != nil {
		a.health.Shutdown(ctx)
	}
	if a.metricsSrv != nil {
		a.metricsSrv.Shutdown(ctx)
	}
	serr := a.px.Shutdown(ctx)
	if errors.Is(serr, context.DeadlineExceeded) {
		a.log.Warn("drain grace period ended with work in flight", logkey.Grace, a.cfg.GracePeriod.String(), logkey.Left, serr.Error())
	}
	if err := <-a.serveDone; err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	return nil
}

// offer offers the listeners (and this agent's SVIDs) to the next agent on
// the node, over the handoff socket.
func (a *Agent) offer(context.Context) error {
	if !a.serving() {
		return nil
	}
	holder, err := handoff.Hold(a.handoffPath(), handoff.Offer{Listeners: a.ls, State: a.ids.Export}, a.log.With(logkey.Component, "handoff"))
	if err != nil {
		a.log.Warn("no handoff socket: the next agent will bind once this one has exited", logkey.Error, err)
		return nil
	}
	a.holder = holder
	return nil
}

// withdraw closes the handoff socket: unless handed over, the sockets close
// with this agent.
func (a *Agent) withdraw(context.Context) error {
	if a.holder != nil {
		a.holder.Close()
	}
	return nil
}

// wait serves until ctx ends, the listeners are handed over or something
// fails. When ctx ends it keeps serving until the next agent takes the
// listeners over (restart or upgrade), for at most Config.HandoffWait.
func (a *Agent) wait(ctx context.Context) error {
	var released <-chan struct{}
	if a.holder != nil {
		released = a.holder.Released()
	}
	var err error
	select {
	case <-ctx.Done():
	case <-released:
		a.handedOver = true
	case err = <-a.errc:
	case err = <-a.serveDone:
		err = fmt.Errorf("proxy: %w", cmp.Or(err, errors.New("stopped serving")))
		a.serveDone <- nil // for drain
	case err = <-a.healthDone:
		err = fmt.Errorf("health: %w", err)
	}
	a.stopping.Store(true) // not ready from now on
	if a.handedOver || err != nil || a.holder == nil || a.cfg.HandoffWait <= 0 || a.uninstalling() {
		return err
	}
	a.log.Info("stopping: serving until the next agent takes the listeners over", logkey.Wait, a.cfg.HandoffWait.String())
	t := time.NewTimer(a.cfg.HandoffWait)
	defer t.Stop()
	select {
	case <-released:
		a.handedOver = true
	case <-t.C:
		a.log.Warn("no agent took the listeners over; closing them", logkey.Waited, a.cfg.HandoffWait.String())
	case err = <-a.errc:
	}
	return err
}

// uninstalling asks Config.Uninstalling once and remembers the answer.
func (a *Agent) uninstalling() bool {
	a.uninstallOnce.Do(func() {
		if a.cfg.Uninstalling == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.uninstall = a.cfg.Uninstalling(ctx)
	})
	return a.uninstall
}

// apply is the policy client's Applier.
func (a *Agent) apply(pol *weftv1.NodePolicy) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.px.Update(pol); err != nil {
		return fmt.Errorf("proxy refused policy: %w", err)
	}
	if err := a.ids.SetPolicy(pol); err != nil {
		// Put the proxy back on the policy in force: a refused policy
		// changes nothing.
		prev := a.current
		if prev == nil {
			prev = &weftv1.NodePolicy{Node: a.cfg.Node, TrustDomain: a.cfg.TrustDomain.Name()}
		}
		if rerr := a.px.Update(prev); rerr != nil {
			a.log.Error("restore previous proxy policy", logkey.Error, rerr)
		}
		return fmt.Errorf("identities: %w", err)
	}
	a.current = pol
	a.syncDatapath(pol)
	return nil
}

func (a *Agent) resyncLoop(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		a.mu.Lock()
		if a.current != nil {
			a.syncDatapath(a.current)
		}
		a.mu.Unlock()
	}
}

// syncDatapath writes the redirect maps for pol and marks pods enrolled.
// Errors are per pod and reported; they never refuse the policy, which the
// proxy already accepted. Until the controller's policy is applied it only
// adds: the maps a previous agent left (the pins outlive it) are adopted,
// and nothing is unenrolled on the word of a policy restored from disk
// (the first resync after the controller's policy removes what it does
// not list). Call with a.mu held.
func (a *Agent) syncDatapath(pol *weftv1.NodePolicy) {
	want, byUID := desired(pol)
	want.KeepUnlisted = !a.pol.Status().FromController
	if a.enroller != nil {
		named := make(map[string]bool, len(byUID))
		for uid := range byUID {
			named[uid] = true
		}
		a.enroller.Observe(named) // before Sync: a pod that left the mesh goes now
	}
	res, err := a.dp.Sync(want)
	if err != nil {
		a.log.Error("sync redirect maps", logkey.Error, err)
	}
	callers := make(map[uint64]*weftv1.Workload, len(res.Pods))
	for _, p := range res.Pods {
		w := byUID[p.UID]
		if !p.Enrolled {
			a.log.Warn("pod not enrolled yet", logkey.Pod, w.GetNamespace()+"/"+w.GetName(), logkey.Error, p.Err)
			continue
		}
		callers[p.NetnsCookie] = w
		if a.marker != nil {
			a.marker.enrolled(w)
		}
	}
	a.callers.Store(&callers)
	a.callersChanged()
	a.metrics.Enrolled(len(callers))
	if a.marker != nil {
		a.marker.retain(byUID)
	}
}

// desired turns a policy into the datapath's desired state: its workloads'
// pods and every VIP:port of its meshed Services.
func desired(pol *weftv1.NodePolicy) (datapath.Desired, map[string]*weftv1.Workload) {
	var d datapath.Desired
	byUID := make(map[string]*weftv1.Workload)
	for _, w := range pol.GetWorkloads() {
		p := datapath.Pod{UID: w.GetUid(), Strict: w.GetMtlsStrict()}
		for _, s := range w.GetIps() {
			if ip, err := netip.ParseAddr(s); err == nil {
				p.IPs = append(p.IPs, ip)
			}
		}
		d.Pods = append(d.Pods, p)
		byUID[w.GetUid()] = w
	}
	for _, s := range pol.GetServices() {
		for _, v := range s.GetVips() {
			ip, err := netip.ParseAddr(v)
			if err != nil || s.GetPort() == 0 || s.GetPort() > 65535 {
				continue // the controller never sends these; nothing to redirect
			}
			d.Meshed = append(d.Meshed, netip.AddrPortFrom(ip, uint16(s.GetPort())))
		}
	}
	return d, byUID
}

// healthServer serves /healthz and /readyz. Ready means serving: this
// agent accepts on the node's listeners, has a policy and is not stopping.
// (A hostNetwork agent pod's probes reach whichever agent holds the health
// listener: during a handoff that is the old one until the new one serves.)
func (a *Agent) healthServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() || a.stopping.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if a.pol.Current() == nil {
			http.Error(w, "no policy yet", http.StatusServiceUnavailable)
			return
		}
		st := a.pol.Status()
		fmt.Fprintf(w, "ok version=%d\n", st.Version)
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
}

// metricsMux serves reg on /metrics and the last two minutes of the
// request metrics on metrics.HistoryPath (weftctl stat); stop ends the
// sampling.
func metricsMux(reg *prometheus.Registry) (mux *http.ServeMux, stop func()) {
	mux = http.NewServeMux()
	mux.Handle(mesh.MetricsPath, promserve.Handler(reg))
	h := metrics.NewHistory(reg, 5*time.Second, 2*time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	go h.Run(ctx)
	mux.Handle(metrics.HistoryPath, h)
	return mux, cancel
}
