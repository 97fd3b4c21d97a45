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
// connections are never refused while agents change.
package agent

import (
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

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/agent/datapath"
	"github.com/weft-mesh/weft/agent/handoff"
	"github.com/weft-mesh/weft/agent/policy"
	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/proxy/identity"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
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
	// Datapath configuration (Node and ProxyAddr are filled in).
	Datapath datapath.Config
	// TrustDomain of workload identities.
	TrustDomain spiffeid.TrustDomain
	// HealthAddr serves /healthz and /readyz.
	HealthAddr string
	// GracePeriod for draining the proxy on shutdown.
	GracePeriod time.Duration
	// HandoffWait is how long a stopping agent keeps serving while it
	// waits for the next agent on its node to take its listeners over
	// (package handoff); not when weft is being uninstalled. 0: 25s;
	// negative: no wait. Keep HandoffWait + GracePeriod (+ a few seconds)
	// within the pod's terminationGracePeriodSeconds.
	HandoffWait time.Duration
	// Resync retries pods whose redirect is not in place yet.
	Resync time.Duration
	// ProxyLimits bound what one client can make the node proxy hold
	// (README.md, "Limits"); zero fields take the defaults.
	ProxyLimits limits.Limits
	// Uninstalling is asked once, when the agent is told to stop (never
	// after it handed its listeners over): true means weft is being removed
	// from the node (its DaemonSet is gone), so the agent waits for no
	// successor and the redirect is detached and unpinned instead of kept
	// for the next agent. Nil: never.
	Uninstalling func(context.Context) bool
	Log          *slog.Logger
}

// Agent is a running node agent.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	dp       *datapath.Datapath
	px       *proxy.Proxy
	ids      *identity.Manager
	pol      *policy.Client
	callers  atomic.Pointer[map[uint64]*weftv1.Workload]
	marker   *marker
	ready    atomic.Bool // serving
	stopping atomic.Bool // stopping or handed over: not ready

	uninstallOnce sync.Once
	uninstall     bool

	mu      sync.Mutex // serialises apply and resync
	current *weftv1.NodePolicy
}

// ByCookie implements outbound.Callers.
func (a *Agent) ByCookie(cookie uint64) (*weftv1.Workload, bool) {
	m := a.callers.Load()
	if m == nil {
		return nil, false
	}
	w, ok := (*m)[cookie]
	return w, ok
}

// datapathLookup adapts the datapath's record lookup to the proxy's.
type datapathLookup struct{ dp *datapath.Datapath }

func (l datapathLookup) Lookup(client, proxyAddr netip.AddrPort) (outbound.Original, bool) {
	o, ok := l.dp.Lookup(client, proxyAddr)
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
	if cfg.Node == "" || !cfg.NodeIP.Is4() {
		return errors.New("agent: node name and IPv4 node IP are required")
	}
	if cfg.Resync == 0 {
		cfg.Resync = 2 * time.Second
	}
	if cfg.GracePeriod == 0 {
		cfg.GracePeriod = 20 * time.Second
	}
	if cfg.HandoffWait == 0 {
		cfg.HandoffWait = 25 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	a := &Agent{cfg: cfg, log: log}

	rep := datapath.Preflight()
	if !rep.OK() {
		return fmt.Errorf("preflight failed:\n%s", rep.Format())
	}
	dcfg := cfg.Datapath
	dcfg.Node = cfg.Node
	dcfg.ProxyAddr = netip.AddrPortFrom(cfg.NodeIP, proxy.OutboundPort)
	dcfg.Logger = log
	dp, err := datapath.Open(dcfg)
	if err != nil {
		return fmt.Errorf("open datapath: %w", err)
	}
	a.dp = dp
	defer dp.Close()

	// The connection verifies the controller with the identity manager's
	// trust bundle, and the manager signs through the connection: build
	// the manager on a lazily dialled connection.
	var ids *identity.Manager
	creds := insecure.NewCredentials()
	if !cfg.InsecureController {
		host, _, err := net.SplitHostPort(cfg.ControllerAddr)
		if err != nil {
			return fmt.Errorf("controller address %q: %w", cfg.ControllerAddr, err)
		}
		creds = credentials.NewTLS(&tls.Config{
			MinVersion:         tls.VersionTLS13,
			InsecureSkipVerify: true, // verified in VerifyConnection, with roots that follow rotation
			VerifyConnection: func(cs tls.ConnectionState) error {
				return ids.ControllerTLSConfig(host, cfg.ControllerCAFile).VerifyConnection(cs)
			},
		})
	}
	conn, err := grpc.NewClient(cfg.ControllerAddr, grpc.WithTransportCredentials(creds),
		// A node's policy carries every meshed Service and cluster: about
		// 1 MiB at 1k Services, so leave room above gRPC's 4 MiB default.
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return fmt.Errorf("controller %s: %w", cfg.ControllerAddr, err)
	}
	defer conn.Close()
	ids, err = identity.New(identity.Config{
		Client: weftv1.NewIdentityClient(conn),
		Token:  cfg.Token,
		Node:   cfg.Node,
		Logger: log,
	})
	if err != nil {
		return err
	}
	a.ids = ids

	key, err := sessionKey(filepath.Join(cfg.StateDir, cfg.Node, "session.key"))
	if err != nil {
		return err
	}
	a.px, err = proxy.New(proxy.Config{
		Node:         cfg.Node,
		OutboundAddr: netip.AddrPortFrom(cfg.NodeIP, proxy.OutboundPort).String(),
		InboundAddr:  netip.AddrPortFrom(cfg.NodeIP, proxy.InboundPort).String(),
		TrustDomain:  cfg.TrustDomain,
		Lookup:       datapathLookup{dp},
		Callers:      a,
		Identities:   ids,
		SessionKeys:  [][]byte{key},
		GracePeriod:  cfg.GracePeriod,
		Limits:       cfg.ProxyLimits,
		Logger:       log.With("component", "proxy"),
	})
	if err != nil {
		return fmt.Errorf("build proxy: %w", err)
	}
	if cfg.Kube != nil {
		a.marker = &marker{kube: cfg.Kube, log: log, done: map[string]bool{}}
	}
	a.pol, err = policy.New(policy.Config{
		Node:  cfg.Node,
		Conn:  conn,
		Token: cfg.Token,
		Store: &policy.Store{Path: filepath.Join(cfg.StateDir, cfg.Node, "policy.pb")},
		Apply: a.apply,
		Log:   log.With("component", "policy"),
	})
	if err != nil {
		return err
	}
	if err := a.pol.Restore(); err != nil {
		// A stale or foreign copy must not block start: the controller
		// sends a full snapshot on connect.
		log.Warn("last good policy not restored", "err", err)
	}

	// The loops that keep the node in sync run until this agent stops or
	// hands over (a successor owns the node then).
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	var loops sync.WaitGroup
	errc := make(chan error, 8)
	run := func(name string, f func(context.Context) error) {
		loops.Add(1)
		go func() {
			defer loops.Done()
			if err := f(loopCtx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	run("policy", a.pol.Run)
	run("identity", ids.Run)
	run("resync", a.resyncLoop)

	ls, succ, err := a.acquire(ctx)
	if err != nil {
		stopLoops()
		loops.Wait()
		if ctx.Err() == nil {
			return fmt.Errorf("listen: %w", err)
		}
		// Stopped before serving: the agent being replaced (if any) still
		// serves. The redirect stays unless weft is being uninstalled.
		log.Info("agent stopped before it served", "node", cfg.Node)
		return a.finish(dcfg)
	}
	serveDone := make(chan error, 1)
	go func() { serveDone <- a.px.Serve(ls[lnOutbound], ls[lnInbound]) }()
	var health *http.Server
	healthDone := make(chan error, 1)
	if hl := ls[lnHealth]; hl != nil {
		health = a.healthServer()
		go func() { healthDone <- health.Serve(hl) }()
	}
	if succ != nil {
		// Both agents accept on the same sockets now; the old one stops
		// once it reads this.
		if err := succ.Serving(); err != nil {
			log.Warn("handoff: the previous agent did not hear that this one serves; both accept until it stops", "err", err)
		}
		succ.Close()
	}
	holder, err := handoff.Hold(a.handoffPath(), handoff.Offer{Listeners: ls, State: a.ids.Export}, log.With("component", "handoff"))
	if err != nil {
		log.Warn("no handoff socket: the next agent will bind once this one has exited", "err", err)
	}
	var released <-chan struct{}
	if holder != nil {
		released = holder.Released()
	}
	a.ready.Store(true)
	log.Info("agent serving", "node", cfg.Node, "proxy", dcfg.ProxyAddr.String(), "took_over", succ != nil)

	var runErr error
	handedOver := false
	select {
	case <-ctx.Done():
	case <-released:
		handedOver = true
	case runErr = <-errc:
	case runErr = <-serveDone:
		runErr = fmt.Errorf("proxy: %w", errOr(runErr, errors.New("stopped serving")))
		serveDone <- nil
	case runErr = <-healthDone:
		runErr = fmt.Errorf("health: %w", runErr)
	}
	a.stopping.Store(true) // not ready from now on
	if !handedOver && runErr == nil && holder != nil && !a.uninstalling() && cfg.HandoffWait > 0 {
		// Restart or upgrade: the next agent is starting on this node; keep
		// serving until it has taken the listeners over.
		log.Info("stopping: serving until the next agent takes the listeners over", "wait", cfg.HandoffWait.String())
		t := time.NewTimer(cfg.HandoffWait)
		select {
		case <-released:
			handedOver = true
		case <-t.C:
			log.Warn("no agent took the listeners over; closing them", "waited", cfg.HandoffWait.String())
		case runErr = <-errc:
		}
		t.Stop()
	}
	if !handedOver && holder != nil {
		holder.Close() // the sockets close with this agent: offer them no more
	}
	// From here the node belongs to the successor (or to nobody): stop
	// writing the redirect maps, stop accepting and drain.
	stopLoops()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.GracePeriod)
	defer scancel()
	if health != nil {
		health.Shutdown(sctx)
	}
	serr := a.px.Shutdown(sctx)
	if err := <-serveDone; err != nil && runErr == nil {
		runErr = err
	}
	if errors.Is(serr, context.DeadlineExceeded) {
		log.Warn("drain grace period ended with work in flight", "grace", cfg.GracePeriod.String())
	}
	loops.Wait()
	if holder != nil {
		holder.Close()
	}
	if handedOver {
		log.Info("listeners handed over and drained", "node", cfg.Node)
		if ctx.Err() == nil && runErr == nil {
			// Exiting would have the kubelet restart this container, which
			// would take the listeners back: wait to be stopped.
			log.Info("retired: waiting to be stopped")
			<-ctx.Done()
		}
		return runErr
	}
	if err := a.finish(dcfg); err != nil {
		return err
	}
	return runErr
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

// finish removes the redirect when weft is being uninstalled; otherwise it
// stays pinned for the next agent.
func (a *Agent) finish(dcfg datapath.Config) error {
	if !a.uninstalling() {
		return nil
	}
	a.dp.Close()
	if err := datapath.Cleanup(dcfg); err != nil {
		return fmt.Errorf("uninstall: remove the redirect: %w", err)
	}
	a.log.Info("weft is being uninstalled: redirect detached and unpinned", "node", a.cfg.Node)
	return nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
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
			a.log.Error("restore previous proxy policy", "err", rerr)
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
// proxy already accepted.
func (a *Agent) syncDatapath(pol *weftv1.NodePolicy) {
	want, byUID := desired(pol)
	res, err := a.dp.Sync(want)
	if err != nil {
		a.log.Error("sync redirect maps", "err", err)
	}
	callers := make(map[uint64]*weftv1.Workload, len(res.Pods))
	for _, p := range res.Pods {
		w := byUID[p.UID]
		if !p.Enrolled {
			a.log.Warn("pod not enrolled yet", "pod", w.GetNamespace()+"/"+w.GetName(), "err", p.Err)
			continue
		}
		callers[p.NetnsCookie] = w
		if a.marker != nil {
			a.marker.enrolled(w)
		}
	}
	a.callers.Store(&callers)
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
		d.Pods = append(d.Pods, datapath.Pod{UID: w.GetUid()})
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
