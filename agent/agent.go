// Package agent runs one node's share of the mesh: it keeps the node's
// policy in sync with the controller (agent/policy), holds the SVIDs of the
// node's workloads (agent/proxy/identity), feeds the eBPF redirect
// (agent/datapath) and runs the node proxy (agent/proxy).
//
// A policy is applied in one order: the proxy compiles it first (a policy
// that does not compile is NACKed and nothing changes), then the identities
// and the redirect maps follow. A pod is marked enrolled (pod condition
// weft.dev/Enrolled) only once its redirect is in place.
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
	"github.com/weft-mesh/weft/agent/policy"
	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/proxy/identity"
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
	// HealthAddr serves /healthz, /readyz and /drain.
	HealthAddr string
	// GracePeriod for draining the proxy on shutdown.
	GracePeriod time.Duration
	// Resync retries pods whose redirect is not in place yet.
	Resync time.Duration
	// Uninstalling is asked once the agent stops: true means weft is being
	// removed from the node (its DaemonSet is gone), so the redirect is
	// detached and unpinned instead of kept for the next agent. Nil: never.
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
	ready    atomic.Bool
	draining atomic.Bool

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

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	run("proxy", a.px.Run)
	run("policy", a.pol.Run)
	run("identity", ids.Run)
	run("resync", a.resyncLoop)
	if cfg.HealthAddr != "" {
		run("health", a.serveHealth)
	}
	a.ready.Store(true)
	log.Info("agent started", "node", cfg.Node, "proxy", dcfg.ProxyAddr.String())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	a.ready.Store(false)
	cancel()
	wg.Wait()
	if cfg.Uninstalling != nil {
		uctx, ucancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ucancel()
		if cfg.Uninstalling(uctx) {
			dp.Close()
			if err := datapath.Cleanup(dcfg); err != nil {
				return fmt.Errorf("uninstall: remove the redirect: %w", err)
			}
			log.Info("weft is being uninstalled: redirect detached and unpinned", "node", cfg.Node)
		}
	}
	return runErr
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

func (a *Agent) serveHealth(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() || a.draining.Load() {
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
	// preStop: report not ready so nothing new is sent here, then let
	// the kubelet's SIGTERM start the proxy's drain.
	mux.HandleFunc("/drain", func(w http.ResponseWriter, _ *http.Request) {
		a.draining.Store(true)
		w.Write([]byte("draining\n"))
	})
	srv := &http.Server{Addr: a.cfg.HealthAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	lis, err := net.Listen("tcp", a.cfg.HealthAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", a.cfg.HealthAddr, err)
	}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
