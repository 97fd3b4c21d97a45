// Package controller wires Weft's controller together: informers (source)
// -> resolve.Resolve -> per-node policy push to agents (every replica) and
// route status writes (the elected leader only), plus the CA's Identity
// service on the same gRPC server.
//
// Run (run.go) runs one replica as weft-controller does: the Controller
// (controller.go), the agent authenticator and the mesh CA with its
// background loops, all waited on.
package controller

import (
	"cmp"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/api/promserve"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/gatewayclass"
	"github.com/weft-mesh/weft/controller/metrics"
	"github.com/weft-mesh/weft/controller/owner"
	"github.com/weft-mesh/weft/controller/provision"
	"github.com/weft-mesh/weft/controller/push"
	"github.com/weft-mesh/weft/controller/resolve"
	"github.com/weft-mesh/weft/controller/source"
	"github.com/weft-mesh/weft/controller/status"
	"github.com/weft-mesh/weft/controller/xmesh"
)

// Defaults for Config.
const (
	DefaultNamespace     = "weft-system"
	DefaultGRPCAddr      = ":15012"
	DefaultHealthAddr    = ":15021"
	DefaultMetricsAddr   = ":15020"
	DefaultDebounce      = 100 * time.Millisecond
	DefaultLeaseName     = "weft-controller"
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// Config configures a Controller.
type Config struct {
	// Kube is the apiserver connection. Required.
	Kube *rest.Config
	// Namespace the controller runs in (its Lease lives there);
	// DefaultNamespace when empty.
	Namespace string
	// GRPCAddr serves the Policy (and Identity) services; DefaultGRPCAddr
	// when empty.
	GRPCAddr string
	// HealthAddr serves /healthz, /readyz and /debug/nodes;
	// DefaultHealthAddr when empty, "-" for none.
	HealthAddr string
	// MetricsAddr serves the Prometheus metrics on /metrics (README.md,
	// "Metrics"); none when empty (weft-controller's flag defaults to
	// DefaultMetricsAddr).
	MetricsAddr string
	// Debounce is the least time from the end of one resolution to the
	// start of the next: a change after a quiet spell is resolved at once,
	// changes within Debounce of the last round wait for its end and are
	// resolved together; DefaultDebounce when zero.
	Debounce time.Duration
	// TrustDomain of SPIFFE IDs; "cluster.local" when empty.
	TrustDomain string
	// LeaderElect: write statuses only while holding the Lease. When false
	// this replica always writes.
	LeaderElect bool
	// ID of this replica in the Lease (the pod name); required with
	// LeaderElect.
	ID string
	// LeaseName, LeaseDuration, RenewDeadline, RetryPeriod tune the
	// election; defaults above when zero.
	LeaseName     string
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration
	// OwnerClusterRole is the ClusterRole that owns the objects the controller
	// creates (the default XMesh and GatewayClass, the CA's Secret and bundle ConfigMap, the Lease), so
	// that an uninstall removes them; none when empty.
	OwnerClusterRole string
	// Authenticator checks agents' bearer tokens. Required.
	Authenticator push.Authenticator
	// Gateways checks the tokens of Gateway data planes' policy streams;
	// nil refuses them.
	Gateways push.GatewayAuthorizer
	// Register adds more services (the CA's Identity) to the gRPC server.
	Register func(*grpc.Server)
	// ServerOptions are added to the gRPC server's (e.g. its TLS credentials).
	ServerOptions []grpc.ServerOption
	// TrustAnchors returns the DER CA certificates put in every node's
	// policy; none when nil.
	TrustAnchors func() [][]byte
	// OnLeader runs each time this replica becomes the leader (the CA
	// ensures its root there); errors are logged.
	OnLeader func(ctx context.Context) error
	// GatewayImage is the weft-agent image each Gateway's data plane runs.
	// When empty, the image of AgentDaemonSet (in Namespace) is used; with
	// neither, Gateways are resolved and get statuses, but nothing is
	// provisioned for them.
	GatewayImage string
	// AgentDaemonSet names the weft-agent DaemonSet whose image Gateways'
	// data planes run when GatewayImage is empty.
	AgentDaemonSet string
	// LogLevel is passed on to the Gateways' data planes; theirs when empty.
	LogLevel string
	// Resolve is resolve.Resolve when nil (tests and benchmarks replace it).
	Resolve func(resolve.Input) resolve.Output
	// SendBuffer per agent stream; push.DefaultSendBuffer when zero.
	SendBuffer int
	// QPS and Burst of the apiserver client (status writes);
	// 50 and 100 when zero.
	QPS   float32
	Burst int
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Controller is one running replica.
type Controller struct {
	cfg  Config
	log  *slog.Logger
	kube kubernetes.Interface
	// agentImage follows the agent DaemonSet's image (nil: GatewayImage)
	agentImage *agentImage
	src        *source.Source
	push       *push.Server
	status     *status.Writer
	mesh       *xmesh.Reconciler
	class      *gatewayclass.Ensurer
	prov       *provision.Applier
	owner      owner.Func // of created objects; nil: none
	grpc       *grpc.Server
	grpcLis    net.Listener
	health     *http.Server
	hlLis      net.Listener
	metrics    *metrics.Controller // nil: metrics off
	mSrv       *http.Server
	mLis       net.Listener

	gateways   []gwv1.Gateway                       // of the last round (round's goroutine only)
	reuse      *resolve.Reuse                       // of the last round's output (round's goroutine only)
	authz      map[types.UID]*resolve.AuthzInForce  // of the last round (round's goroutine only)
	badMTLS    map[string]bool                      // invalid weft.dev/mtls annotations reported (round's goroutine only)
	dataPlanes atomic.Pointer[map[dataPlane]string] // accepted Gateways by data plane, see GatewayOf
	kick       chan struct{}                        // resolve again (bundle changed)
	leader     atomic.Bool
	synced     atomic.Bool
	statusMu   sync.Mutex
	latest     *statusWork
	statusCh   chan struct{}

	resolves atomic.Uint64
	writes   atomic.Uint64
	checks   atomic.Uint64
}

// statusWork is what the newest resolution decided about statuses.
type statusWork struct {
	want status.Want
	// provision is the data plane of every accepted Gateway (nil: none, or
	// provisioning disabled).
	provision []provision.Objects
}

// New checks cfg, builds the clients and opens the listeners (so the
// addresses are known before Run).
func New(cfg Config) (*Controller, error) {
	cfg, err := withDefaults(cfg)
	if err != nil {
		return nil, err
	}
	rc := rest.CopyConfig(cfg.Kube)
	rc.QPS, rc.Burst = cmp.Or(cfg.QPS, 50), cmp.Or(cfg.Burst, 100)
	rc.UserAgent = "weft-controller"
	c := &Controller{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), statusCh: make(chan struct{}, 1)}
	reg, err := c.newParts(rc)
	if err != nil {
		return nil, err
	}
	if err := c.listen(reg); err != nil {
		return nil, err
	}
	return c, nil
}

// withDefaults checks cfg and fills in what it leaves unset.
func withDefaults(cfg Config) (Config, error) {
	if cfg.Kube == nil {
		return cfg, errors.New("controller: no apiserver config")
	}
	if cfg.Authenticator == nil {
		return cfg, errors.New("controller: no agent authenticator")
	}
	if cfg.LeaderElect && cfg.ID == "" {
		return cfg, errors.New("controller: leader election needs an id")
	}
	cfg.Namespace = cmp.Or(cfg.Namespace, DefaultNamespace)
	cfg.GRPCAddr = cmp.Or(cfg.GRPCAddr, DefaultGRPCAddr)
	cfg.HealthAddr = cmp.Or(cfg.HealthAddr, DefaultHealthAddr)
	cfg.LeaseName = cmp.Or(cfg.LeaseName, DefaultLeaseName)
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.LeaseDuration <= 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline <= 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod <= 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	if cfg.Resolve == nil {
		cfg.Resolve = resolve.Resolve
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// newParts builds the clients and the parts that use them: informers,
// push server, status writer, XMesh and GatewayClass reconcilers,
// provisioner, and (when metrics are on) the registry, which it returns.
func (c *Controller) newParts(rc *rest.Config) (*prometheus.Registry, error) {
	cfg := c.cfg
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	c.kube = kube
	gw, err := gwclient.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("gateway api client: %w", err)
	}
	if cfg.GatewayImage == "" && cfg.AgentDaemonSet != "" {
		if c.agentImage, err = c.newAgentImage(cfg.AgentDaemonSet); err != nil {
			return nil, err
		}
	}
	md, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("metadata client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("dynamic client: %w", err)
	}
	if c.src, err = source.New(source.Config{Kube: kube, Gateway: gw, Metadata: md, Dynamic: dyn, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	var reg *prometheus.Registry
	if cfg.MetricsAddr != "" {
		reg = promserve.Registry()
		c.metrics = metrics.New(reg, c.nodeStates)
	}
	if c.push, err = push.New(push.Config{Authenticator: cfg.Authenticator, Gateways: cfg.Gateways, SendBuffer: cfg.SendBuffer,
		GatewayRefusalChanged: c.Kick, Metrics: c.metrics, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	if c.status, err = status.New(status.Config{Client: gw, Dynamic: dyn, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	c.owner = owner.ClusterRole(kube, cfg.OwnerClusterRole)
	if c.mesh, err = xmesh.New(xmesh.Config{Client: gw, IsLeader: c.leader.Load, Owner: c.owner, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	c.prov = provision.NewApplier(kube, cfg.Logger)
	if c.class, err = gatewayclass.New(gatewayclass.Config{Client: gw, IsLeader: c.leader.Load, Owner: c.owner, Logger: cfg.Logger}); err != nil {
		return nil, err
	}
	return reg, nil
}

// listen makes the gRPC server and opens its listener, the health
// listener (unless "-") and, with reg, the metrics listener; on an error
// the listeners opened so far are closed.
func (c *Controller) listen(reg *prometheus.Registry) (err error) {
	cfg := c.cfg
	c.grpc = grpc.NewServer(append(append(weftv1.ServerOptions(),
		push.ServerCodec(),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	), cfg.ServerOptions...)...)
	weftv1.RegisterPolicyServer(c.grpc, c.push)
	if cfg.Register != nil {
		cfg.Register(c.grpc)
	}
	if c.grpcLis, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
		return fmt.Errorf("listen grpc on %s: %w", cfg.GRPCAddr, err)
	}
	defer func() {
		if err != nil {
			c.grpcLis.Close()
			if c.hlLis != nil {
				c.hlLis.Close()
			}
		}
	}()
	if cfg.HealthAddr != "-" {
		if c.hlLis, err = net.Listen("tcp", cfg.HealthAddr); err != nil {
			return fmt.Errorf("listen health on %s: %w", cfg.HealthAddr, err)
		}
		c.health = &http.Server{Handler: c.healthMux(), ReadHeaderTimeout: 5 * time.Second}
	}
	if reg != nil {
		if c.mLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return fmt.Errorf("listen metrics on %s: %w", cfg.MetricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET "+mesh.MetricsPath, promserve.Handler(reg))
		c.mSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	}
	return nil
}

// MetricsAddr is the metrics server's address; nil when disabled.
func (c *Controller) MetricsAddr() net.Addr {
	if c.mLis == nil {
		return nil
	}
	return c.mLis.Addr()
}

// Signed records an SVID request's outcome in the metrics (the CA's
// OnSign).
func (c *Controller) Signed(err error) { c.metrics.Signed(err) }

// nodeStates is the push state the metrics read at each scrape.
func (c *Controller) nodeStates() []metrics.NodeState {
	if c.push == nil {
		return nil
	}
	nodes := c.push.Nodes()
	out := make([]metrics.NodeState, len(nodes))
	for i, n := range nodes {
		out[i] = metrics.NodeState{Node: n.Node, Version: n.Version, AckedVersion: n.AckedVersion, Streams: n.Streams}
	}
	return out
}

// GRPCAddr is the address agents connect to.
func (c *Controller) GRPCAddr() net.Addr { return c.grpcLis.Addr() }

// HealthAddr is the health server's address; nil when disabled.
func (c *Controller) HealthAddr() net.Addr {
	if c.hlLis == nil {
		return nil
	}
	return c.hlLis.Addr()
}

// Nodes is the push state of every node (versions, ACKs, NACKs).
func (c *Controller) Nodes() []push.NodeState { return c.push.Nodes() }

// IsLeader reports whether this replica writes statuses.
func (c *Controller) IsLeader() bool { return c.leader.Load() }

// Stats counts resolutions, status writes and watch events since start.
type Stats struct {
	Resolves     uint64
	StatusWrites uint64
	// StatusChecks counts comparisons of the newest statuses with the
	// cluster's after a status-only change, without resolving.
	StatusChecks uint64
	// Watch events: those that asked for a resolution (adds, deletes,
	// updates of what resolution reads), updates of a route's or policy's
	// status only, and updates of nothing Weft reads (Node heartbeats, ...).
	ResolveEvents  uint64
	StatusUpdates  uint64
	IgnoredUpdates uint64
}

// Stats returns the counters.
func (c *Controller) Stats() Stats {
	src := c.src.Stats()
	return Stats{Resolves: c.resolves.Load(), StatusWrites: c.writes.Load(), StatusChecks: c.checks.Load(),
		ResolveEvents: src.Resolve, StatusUpdates: src.Status, IgnoredUpdates: src.Ignored}
}

// Kick asks for a new resolution (for example after the CA's trust bundle
// changed). It never blocks.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run serves until ctx ends, then stops everything it started and returns
// nil (or the first fatal error).
func (c *Controller) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := c.serve(&wg)
	defer func() {
		cancel()
		c.grpc.Stop()
		if c.health != nil {
			_ = c.health.Close()
		}
		if c.mSrv != nil {
			_ = c.mSrv.Close()
		}
		wg.Wait()
	}()
	c.log.Info("weft-controller starting", logkey.GRPC, c.GRPCAddr().String(), logkey.Namespace, c.cfg.Namespace, logkey.ID, c.cfg.ID)

	if err := c.src.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("start informers: %w", err)
	}
	c.synced.Store(true)
	c.startLoops(ctx, &wg)
	return c.resolveLoop(ctx, errc)
}

// serve starts the gRPC, health and metrics servers in wg; a server that
// fails sends its error on the returned channel.
func (c *Controller) serve(wg *sync.WaitGroup) <-chan error {
	errc := make(chan error, 3)
	wg.Go(func() {
		if err := c.grpc.Serve(c.grpcLis); err != nil {
			errc <- fmt.Errorf("serve grpc: %w", err)
		}
	})
	for _, h := range []struct {
		name string
		srv  *http.Server
		lis  net.Listener
	}{{"health", c.health, c.hlLis}, {"metrics", c.mSrv, c.mLis}} {
		if h.srv == nil {
			continue
		}
		wg.Go(func() {
			if err := h.srv.Serve(h.lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", h.name, err)
			}
		})
	}
	return errc
}

// startLoops starts, in wg, leader election (or leads at once), the status
// writer, the XMesh and GatewayClass reconcilers and the agent image
// follower.
func (c *Controller) startLoops(ctx context.Context, wg *sync.WaitGroup) {
	if c.cfg.LeaderElect {
		wg.Go(func() { c.elect(ctx) })
	} else {
		c.becomeLeader(ctx)
	}
	wg.Go(func() { c.statusLoop(ctx) })
	wg.Go(func() { c.mesh.Run(ctx) })
	wg.Go(func() { c.class.Run(ctx) })
	if c.agentImage != nil {
		wg.Go(func() { c.agentImage.run(ctx) })
	}
}

// resolveLoop runs a round after every change until ctx ends or a server
// fails. Leading-edge debounce: a change after a quiet spell (no round for
// the last Debounce) is resolved at once, since waiting would only add
// latency; a change that comes sooner waits until Debounce after the end of
// the last round, and every change of that wait is one round. Under churn
// this keeps at most one round per round time plus Debounce, as the
// trailing debounce did, without making a lone change wait.
func (c *Controller) resolveLoop(ctx context.Context, errc <-chan error) error {
	var last time.Time // end of the last round; zero: none yet
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case <-c.src.Dirty():
		case <-c.kick:
		}
		if wait := debounceWait(c.cfg.Debounce, last, time.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		// Changes signalled during the wait are in the snapshot below.
		select {
		case <-c.kick:
		default:
		}
		select {
		case <-c.src.Dirty():
		default:
		}
		c.round()
		last = time.Now()
	}
}

// debounceWait is how long a change seen at now waits before its round,
// the last round having ended at last (zero: none yet): nothing after a
// quiet spell of debounce, else the rest of debounce since last.
func debounceWait(debounce time.Duration, last, now time.Time) time.Duration {
	if last.IsZero() {
		return 0
	}
	return max(0, debounce-now.Sub(last))
}

// round resolves the current snapshot, pushes it and hands the statuses to
// the status writer.
func (c *Controller) round() {
	in, changes, err := c.src.SnapshotChanges()
	if err != nil {
		c.reuse = nil
		c.log.Error("snapshot", logkey.Error, err)
		return
	}
	in.Options.TrustDomain = c.cfg.TrustDomain
	// an AuthorizationPolicy that stops compiling keeps what was in force
	in.AuthzInForce = c.authz
	// With only routes, or EndpointSlices, changed since the last round,
	// its clusters (but those of Services whose slices changed), workloads
	// and compiled routes (but those whose object changed) still hold:
	// resolution reuses them, and the push server sees the same objects.
	// With only EndpointSlices, the whole last Output but those clusters
	// holds. A pod's readiness alone (a probe flipped; its EndpointSlice
	// follows) changes nothing more, unless an EndpointSelector XBackend
	// reads it: the full resolution then builds XBackend clusters again.
	// With only AuthorizationPolicies, all but authorization holds.
	selectorReadiness := changes.Readiness && in.ReadsPodReadiness()
	switch {
	case c.reuse == nil || changes.Other:
	case changes.Pods:
		// pods came, went or changed: the compiled routes hold (a rolling
		// update would otherwise compile every route again for each pod),
		// and so do the clusters that name none of those pods and the
		// workloads of other nodes
		in.Reuse = resolve.ReusePods(c.reuse, changes.ChangedPods, changes.Slices)
		// (a policy change with them: every namespace's policies select
		// again, in the full resolution)
		in.Reuse.OnlyPods = !changes.Routes && !changes.Authz
	default:
		in.Reuse = c.reuse
		in.Reuse.StaleServices, in.Reuse.WorkloadsValid, in.Reuse.RoutesValid = changes.Slices, true, true
		switch {
		case changes.Authz:
			// an AuthorizationPolicy alone: only authorization is
			// resolved again
			in.Reuse.OnlyAuthz = !changes.Routes && len(changes.Slices) == 0 && !selectorReadiness
		case !selectorReadiness:
			// endpoint churn: routes need not be compiled again; a route
			// change: only the Service ports it claims are attached again
			in.Reuse.OnlyEndpoints, in.Reuse.OnlyRoutes = !changes.Routes, changes.Routes
		}
	}
	c.reuse = nil
	start := time.Now()
	out, ok := c.safeResolve(in)
	if !ok {
		return
	}
	var anchors [][]byte
	if c.cfg.TrustAnchors != nil {
		anchors = c.cfg.TrustAnchors()
	}
	// before ReuseOf: the next round that reuses these policies finds the
	// anchors in them and keeps the very objects
	out.Nodes = resolve.WithTrustAnchors(out.Nodes, anchors)
	c.reuse = resolve.ReuseOf(out)
	c.authz = out.AuthzInForce
	c.reportInvalidMTLS(out.InvalidMTLS)
	c.resolves.Add(1)
	c.metrics.Resolved(time.Since(start))
	changed := c.push.Update(out.Nodes)
	c.log.Debug("resolved", logkey.Nodes, len(out.Nodes), logkey.Changed, changed, logkey.Statuses, len(out.Statuses), logkey.Took, time.Since(start))
	var gwOut *gateway.Output
	if o, ok := c.resolveGateways(in); ok {
		gwOut = &o
		c.pushGateways(o.IR, anchors, out.Nodes)
	}
	c.statusMu.Lock()
	if gwOut == nil && c.latest != nil {
		gwOut = c.latest.want.Gateway // Gateways not resolved this round: keep the last decision
	}
	c.latest = &statusWork{want: status.Want{Mesh: out.Statuses, Authz: out.AuthzStatuses, Gateway: gwOut}, provision: c.provisions(gwOut, anchors)}
	c.statusMu.Unlock()
	select {
	case c.statusCh <- struct{}{}:
	default:
	}
}

// reportInvalidMTLS logs each invalid weft.dev/mtls annotation once, when
// it first appears (the pod is made strict meanwhile: fail safe).
func (c *Controller) reportInvalidMTLS(msgs []string) {
	now := make(map[string]bool, len(msgs))
	for _, m := range msgs {
		now[m] = true
		if !c.badMTLS[m] {
			c.log.Warn("invalid mTLS annotation, pod treated as strict", logkey.Detail, m)
		}
	}
	c.badMTLS = now
}

// resolveGateways resolves Weft's Gateways from the same snapshot as the
// mesh; false when they could not be resolved this round (their Secrets are
// not synced yet, or resolution failed).
func (c *Controller) resolveGateways(mesh resolve.Input) (gateway.Output, bool) {
	in, ok, err := c.src.GatewaySnapshot(mesh)
	if err != nil {
		c.log.Error("gateway snapshot", logkey.Error, err)
		return gateway.Output{}, false
	}
	if !ok {
		return gateway.Output{}, false
	}
	in.Options.Mesh = mesh.Options
	in.Options.ReservedPorts = gatewayReservedPorts
	in.Options.SupportedFeatures = gatewayclass.FeatureNames()
	in.Provisioned = provision.Provisioned(in.Gateways, in.Services, in.Pods)
	refused := map[string]string{}
	for _, st := range c.push.Gateways() {
		if st.NackedVersion > st.AckedVersion {
			refused[st.Gateway] = st.NackReason
		}
	}
	for i := range in.Provisioned {
		p := &in.Provisioned[i]
		p.Refused = refused[p.Namespace+"/"+p.Name]
	}
	c.gateways = in.Gateways
	return c.safeResolveGateways(in)
}

// provisions is the data plane of every Gateway out accepted.
func (c *Controller) provisions(out *gateway.Output, anchors [][]byte) []provision.Objects {
	img, pull := c.cfg.GatewayImage, corev1.PullPolicy("")
	if img == "" && c.agentImage != nil {
		img, pull = c.agentImage.get()
	}
	if out == nil || img == "" || len(anchors) == 0 {
		return nil
	}
	var bundle []byte
	for _, der := range anchors {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	p := provision.Params{
		Image:      img,
		PullPolicy: pull,
		Controller: "weft-controller." + c.cfg.Namespace + ".svc" + grpcPort(c.cfg.GRPCAddr),
		CABundle:   bundle,
		LogLevel:   c.cfg.LogLevel,
	}
	accepted := map[[2]string]bool{}
	for _, g := range out.IR {
		accepted[[2]string{g.Namespace, g.Name}] = true
	}
	var objs []provision.Objects
	for i := range c.gateways {
		if gw := &c.gateways[i]; accepted[[2]string{gw.Namespace, gw.Name}] {
			objs = append(objs, provision.Desired(gw, p))
		}
	}
	return objs
}

// grpcPort is ":<port>" of the gRPC listen address (":15012").
func grpcPort(addr string) string {
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "0" {
		return ":" + port
	}
	return ":15012"
}

// gatewayReservedPorts are the ports a Gateway's data plane uses itself
// (its health and readiness server, its metrics); a listener there is
// PortUnavailable.
var gatewayReservedPorts = []int32{mesh.HealthPort, mesh.MetricsPort}

func (c *Controller) safeResolveGateways(in gateway.Input) (out gateway.Output, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("gateway resolve panicked; keeping the last decision", logkey.Panic, fmt.Sprint(r))
			ok = false
		}
	}()
	return gateway.Resolve(in), true
}

// safeResolve keeps a bug in resolution from taking the controller down:
// the agents keep the last good policy and the error is logged.
func (c *Controller) safeResolve(in resolve.Input) (out resolve.Output, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			c.log.Error("resolve panicked; keeping the last policy", logkey.Panic, fmt.Sprint(r))
			ok = false
		}
	}()
	return c.cfg.Resolve(in), true
}

// statusLoop writes the newest statuses while this replica leads. A failed
// write is retried with backoff on the newest statuses. After a change of
// only some route's status (our own write, or another writer's), the
// newest statuses are compared again with the routes as they are now,
// without resolving: a status someone else overwrote is put back, and our
// own writes cost a comparison.
func (c *Controller) statusLoop(ctx context.Context) {
	backoff := time.Second
	for {
		recheck := false
		select {
		case <-ctx.Done():
			return
		case <-c.statusCh:
		case <-c.src.StatusDirty():
			recheck = true
		}
		if !c.leader.Load() {
			continue
		}
		if recheck && !c.settle(ctx) {
			return
		}
		c.statusMu.Lock()
		w := c.latest
		c.statusMu.Unlock()
		if w == nil {
			continue
		}
		// Compare with the routes as they are now, not as the resolution
		// saw them: status changes since then resolved nothing.
		in, err := c.src.StatusSnapshot()
		if err != nil {
			c.log.Error("status snapshot", logkey.Error, err)
			continue
		}
		if recheck {
			c.checks.Add(1)
		}
		if n, err := c.prov.Apply(ctx, w.provision); err != nil {
			c.log.Warn("provision gateways", logkey.Error, err)
		} else if n > 0 {
			c.log.Info("provisioned gateways", logkey.Objects, n)
		}
		gin, _, err := c.src.GatewaySnapshot(in)
		if err != nil {
			c.log.Error("gateway status snapshot", logkey.Error, err)
			continue
		}
		n, err := c.status.Write(ctx, status.Objects{Mesh: in, Gateway: gin}, w.want)
		c.writes.Add(uint64(n))
		if n > 0 {
			c.log.Info("wrote statuses", logkey.Objects, n)
		}
		if err == nil {
			backoff = time.Second
			continue
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("write statuses", logkey.Error, err, logkey.RetryIn, backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
		c.signalStatus()
	}
}

// settle waits one debounce window so that a burst of status changes (the
// echo of a round of our own writes) is one comparison; false when ctx
// ended.
func (c *Controller) settle(ctx context.Context) bool {
	t := time.NewTimer(c.cfg.Debounce)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	select {
	case <-c.src.StatusDirty():
	default:
	}
	return true
}

func (c *Controller) signalStatus() {
	select {
	case c.statusCh <- struct{}{}:
	default:
	}
}

func (c *Controller) becomeLeader(ctx context.Context) {
	c.prov.Forget() // read every provisioned object again
	c.leader.Store(true)
	c.metrics.Leading(true)
	if c.cfg.OnLeader != nil {
		if err := c.cfg.OnLeader(ctx); err != nil {
			c.log.Error("leader start hook", logkey.Error, err)
		}
	}
	c.signalStatus()
}

// elect campaigns for the Lease until ctx ends; after losing it, it
// campaigns again.
func (c *Controller) elect(ctx context.Context) {
	if err := c.ownLease(ctx); err != nil {
		c.log.Warn("the Lease has no owner: an uninstall will leave it behind", logkey.Error, err)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.cfg.Namespace, Name: c.cfg.LeaseName},
		Client:     c.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.cfg.ID},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   c.cfg.LeaseDuration,
			RenewDeadline:   c.cfg.RenewDeadline,
			RetryPeriod:     c.cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            c.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					c.log.Info("became leader; writing statuses", logkey.ID, c.cfg.ID)
					c.becomeLeader(lctx)
				},
				OnStoppedLeading: func() {
					c.leader.Store(false)
					c.metrics.Leading(false)
					c.log.Info("lost leadership; no longer writing statuses", logkey.ID, c.cfg.ID)
				},
				OnNewLeader: func(id string) {
					if id != c.cfg.ID {
						c.log.Info("leader", logkey.ID, id)
					}
				},
			},
		})
		if err != nil {
			c.log.Error("leader election config", logkey.Error, err)
			return
		}
		le.Run(ctx)
	}
}

func (c *Controller) healthMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !c.synced.Load():
			http.Error(w, "informers not synced", http.StatusServiceUnavailable)
		case !c.push.Ready():
			http.Error(w, "no policy resolved yet", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	mux.HandleFunc("GET /debug/nodes", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			Leader   bool                `json:"leader"`
			Nonce    string              `json:"controllerNonce"`
			Nodes    []push.NodeState    `json:"nodes"`
			Gateways []push.GatewayState `json:"gateways"`
			Kinds    []string            `json:"kinds"`
		}{c.leader.Load(), c.push.Nonce(), c.push.Nodes(), c.push.Gateways(), c.src.Kinds()})
	})
	return mux
}

// ownLease makes the election Lease carry the owner reference (see
// Config.OwnerClusterRole): it creates the Lease with it, or adds it to one an
// earlier version created. The election only ever creates a Lease with a name and
// a namespace, and its updates keep the metadata.
func (c *Controller) ownLease(ctx context.Context) error {
	if c.owner == nil {
		return nil
	}
	ref, err := c.owner(ctx)
	if err != nil {
		return err
	}
	leases := c.kube.CoordinationV1().Leases(c.cfg.Namespace)
	// Conflicts: another replica created or renewed the Lease meanwhile.
	return retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		l, err := leases.Get(ctx, c.cfg.LeaseName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
				Namespace: c.cfg.Namespace, Name: c.cfg.LeaseName, OwnerReferences: []metav1.OwnerReference{ref}}}, metav1.CreateOptions{})
			return err
		}
		if err != nil || slices.ContainsFunc(l.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == ref.UID }) {
			return err
		}
		l.OwnerReferences = append(l.OwnerReferences, ref)
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		return err
	})
}
