// Package policy is the agent's side of the policy stream: it subscribes to
// the controller with the node's name (and the version in force, so that a
// reconnect resumes with a delta), applies every snapshot or delta it receives,
// ACKs the ones that applied and NACKs (with the reason) the ones that did
// not, keeping the last good snapshot in memory and on disk so that a node
// keeps routing through a controller outage and an agent restart.
package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Applier installs a policy into the node (proxy tables, BPF maps). A
// non-nil error NACKs the snapshot; the applier must then leave the previous
// policy in force.
type Applier func(*weftv1.NodePolicy) error

// GatewayApplier installs a Gateway's policy into its data plane (listeners,
// route tables). A non-nil error NACKs the snapshot; the applier must then
// leave the previous policy in force.
type GatewayApplier func(*weftv1.GatewayPolicy) error

// Config configures a Client.
type Config struct {
	// Node the agent runs on. Exactly one of Node and Gateway is set.
	Node string
	// Gateway is "namespace/name" of the Gateway a gateway data plane
	// serves: the client subscribes with PolicyRequest.gateway and applies
	// PolicySnapshot.gateway with ApplyGateway.
	Gateway string
	// Conn to the controller's gRPC server.
	Conn grpc.ClientConnInterface
	// Token returns the bearer token sent with each stream (the projected
	// ServiceAccount token, re-read on every connect). Nil: none.
	Token func() (string, error)
	// Store keeps the last good snapshot across restarts. Nil: memory only.
	Store *Store
	// Apply is called for every snapshot, in order (node clients).
	Apply Applier
	// ApplyGateway is called for every snapshot, in order (gateway clients).
	ApplyGateway GatewayApplier
	// Log receives connection and NACK events. Nil: slog.Default().
	Log *slog.Logger
	// MinBackoff and MaxBackoff bound reconnect delays (defaults 200 ms,
	// 5 s): the client, not gRPC's connection backoff (up to 2 minutes),
	// paces reconnects, so an agent is back within MaxBackoff of the
	// controller's return however long it was away.
	MinBackoff, MaxBackoff time.Duration
	// Metrics records the version in force, applies and NACKs; nil: none.
	Metrics *metrics.Agent
}

// Client keeps a node's policy in sync with the controller.
type Client struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	current *weftv1.PolicySnapshot
	nacked  uint64
	lastErr string
	// fromController: a snapshot from the controller is in force (Status).
	fromController bool
	updated        chan struct{}
}

// Status is what the client knows about its stream, for probes and weftctl.
type Status struct {
	// Version and ControllerNonce of the snapshot in force (0 when none).
	Version         uint64
	ControllerNonce string
	// LastNACK is the last version refused and why.
	LastNACK       uint64
	LastNACKReason string
	// FromController: the controller has sent a snapshot that is in force
	// (applied, or the same policy as the one restored from the store).
	// Until then the policy in force is at best the last good copy from
	// disk, which may be stale.
	FromController bool
}

// New returns a client. Call Restore, then Run.
func New(cfg Config) (*Client, error) {
	if (cfg.Node == "") == (cfg.Gateway == "") {
		return nil, errors.New("policy client: exactly one of node name and gateway is required")
	}
	if cfg.Conn == nil {
		return nil, errors.New("policy client: controller connection is required")
	}
	if cfg.Node != "" && cfg.Apply == nil || cfg.Gateway != "" && cfg.ApplyGateway == nil {
		return nil, errors.New("policy client: apply function is required")
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 200 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 5 * time.Second
	}
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.Gateway != "" {
		log = log.With(logkey.Gateway, cfg.Gateway)
	} else {
		log = log.With(logkey.Node, cfg.Node)
	}
	return &Client{cfg: cfg, log: log, updated: make(chan struct{})}, nil
}

// subject is the request that names what this client subscribes for.
func (c *Client) subject(version uint64) *weftv1.PolicyRequest {
	return &weftv1.PolicyRequest{Node: c.cfg.Node, Gateway: c.cfg.Gateway, Version: version}
}

// payload is the part of a snapshot this client applies.
func (c *Client) payload(snap *weftv1.PolicySnapshot) proto.Message {
	if c.cfg.Gateway != "" {
		return snap.GetGateway()
	}
	return snap.GetPolicy()
}

// validate checks that snap carries a valid policy for this client's
// subject: the one definition of validity the controller checked too.
func (c *Client) validate(snap *weftv1.PolicySnapshot) error {
	if c.cfg.Gateway != "" {
		g := snap.GetGateway()
		if g == nil {
			return errors.New("snapshot has no gateway policy")
		}
		if n := g.GetNamespace() + "/" + g.GetName(); n != c.cfg.Gateway {
			return fmt.Errorf("snapshot is for gateway %q, not %q", n, c.cfg.Gateway)
		}
		if err := g.Validate(); err != nil {
			return fmt.Errorf("invalid gateway policy: %w", err)
		}
		return nil
	}
	if snap.GetPolicy() == nil {
		return errors.New("snapshot has no policy")
	}
	if n := snap.GetPolicy().GetNode(); n != c.cfg.Node {
		return fmt.Errorf("snapshot is for node %q, not %q", n, c.cfg.Node)
	}
	// Validity is the one definition the controller checked before it
	// pushed; a policy that fails it never reaches the applier.
	if err := snap.GetPolicy().Validate(); err != nil {
		return fmt.Errorf("invalid policy: %w", err)
	}
	return nil
}

// apply hands the snapshot's policy to the configured applier.
func (c *Client) apply(snap *weftv1.PolicySnapshot) error {
	if c.cfg.Gateway != "" {
		return c.cfg.ApplyGateway(snap.GetGateway())
	}
	return c.cfg.Apply(snap.GetPolicy())
}

// Restore applies the last good snapshot from the store, so the node routes
// before the controller answers. No stored snapshot is not an error.
func (c *Client) Restore() error {
	if c.cfg.Store == nil {
		return nil
	}
	snap, err := c.cfg.Store.Load()
	if err != nil {
		if errors.Is(err, ErrNoSnapshot) {
			return nil
		}
		return fmt.Errorf("restore last good policy: %w", err)
	}
	if err := c.validate(snap); err != nil {
		return fmt.Errorf("restore last good policy version %d: %w", snap.GetVersion(), err)
	}
	if err := c.apply(snap); err != nil {
		return fmt.Errorf("apply stored policy version %d: %w", snap.GetVersion(), err)
	}
	c.setCurrent(snap)
	c.log.Info("restored last good policy", logkey.Version, snap.GetVersion())
	return nil
}

// Current returns the snapshot in force, or nil.
func (c *Client) Current() *weftv1.PolicySnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// Updated returns a channel closed at the next change of the snapshot in force.
func (c *Client) Updated() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.updated
}

// Status reports the stream's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return Status{
		Version:         c.current.GetVersion(),
		ControllerNonce: c.current.GetControllerNonce(),
		LastNACK:        c.nacked,
		LastNACKReason:  c.lastErr,
		FromController:  c.fromController,
	}
}

func (c *Client) setFromController() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fromController = true
}

func (c *Client) setCurrent(s *weftv1.PolicySnapshot) {
	c.cfg.Metrics.Applied(s.GetVersion())
	c.mu.Lock()
	defer c.mu.Unlock()
	c.current = s
	close(c.updated)
	c.updated = make(chan struct{})
}

// Run keeps a stream open until ctx ends, reconnecting with jittered
// exponential backoff. It returns ctx's error.
func (c *Client) Run(ctx context.Context) error {
	delay := c.cfg.MinBackoff
	for {
		start := time.Now()
		err := c.stream(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(start) > 30*time.Second {
			delay = c.cfg.MinBackoff // the stream was healthy for a while
		}
		c.log.Warn("policy stream ended; reconnecting", logkey.Error, err, logkey.RetryIn, delay)
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		// gRPC backs off its own dials too, up to 2 minutes after a long
		// outage: without this the agent would come back only that long
		// after the controller did, keeping a stale policy meanwhile.
		if r, ok := c.cfg.Conn.(interface{ ResetConnectBackoff() }); ok {
			r.ResetConnectBackoff()
		}
		delay = min(delay*2, c.cfg.MaxBackoff)
	}
}

// stream runs one subscription until it fails.
func (c *Client) stream(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.cfg.Token != nil {
		tok, err := c.cfg.Token()
		if err != nil {
			return fmt.Errorf("read agent token: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	st, err := weftv1.NewPolicyClient(c.cfg.Conn).Stream(ctx)
	if err != nil {
		return fmt.Errorf("open policy stream: %w", err)
	}
	first := c.subject(0)
	if c.cfg.Node != "" {
		first.Deltas, first.EndpointPatches = true, true
		if cur := c.Current(); cur != nil {
			// the controller answers with a delta from it if it still can
			first.Version, first.ControllerNonce = cur.GetVersion(), cur.GetControllerNonce()
		}
	}
	if err := st.Send(first); err != nil {
		return fmt.Errorf("subscribe: %w", endedWith(st, err))
	}
	c.log.Info("subscribed to policy")
	for {
		snap, err := st.Recv()
		if err != nil {
			return fmt.Errorf("receive policy: %w", err)
		}
		ack := c.handle(snap)
		if err := st.Send(ack); err != nil {
			return fmt.Errorf("send ack for version %d: %w", snap.GetVersion(), endedWith(st, err))
		}
	}
}

// endedWith is the error of a Send on st: when it is io.EOF the controller
// ended the stream (it refuses an unknown token at once, for one), and gRPC
// gives the status it ended it with only to Recv, so that status is read
// (past any snapshot still queued) instead of logging a bare EOF.
func endedWith(st interface {
	Recv() (*weftv1.PolicySnapshot, error)
}, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	for {
		if _, rerr := st.Recv(); rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return err // ended with OK: nothing more to say
			}
			return rerr
		}
	}
}

// handle applies one snapshot and returns the ACK or NACK to send.
func (c *Client) handle(snap *weftv1.PolicySnapshot) *weftv1.PolicyRequest {
	req := c.subject(snap.GetVersion())
	if snap.GetDelta() != nil {
		return c.handleDelta(snap, req)
	}
	if err := c.check(snap); err != nil {
		return c.nack(req, err)
	}
	if cur := c.Current(); cur != nil && proto.Equal(c.payload(cur), c.payload(snap)) {
		// Same policy under a new version (e.g. a resync): nothing to apply.
		c.setCurrent(snap)
		c.setFromController()
		c.save(snap)
		return req
	}
	if err := c.apply(snap); err != nil {
		return c.nack(req, err)
	}
	c.setCurrent(snap)
	c.setFromController()
	c.save(snap)
	c.log.Info("applied policy", logkey.Version, snap.GetVersion(),
		logkey.Services, len(snap.GetPolicy().GetServices()), logkey.Workloads, len(snap.GetPolicy().GetWorkloads()),
		logkey.Ports, len(snap.GetGateway().GetPorts()))
	return req
}

// handleDelta applies a delta to the snapshot in force when it is the
// delta's base, and validates and applies the result exactly like a full
// snapshot. A delta against another version, or one that does not fit its
// base, is NACKed with resync set: the controller answers with a full
// snapshot. The policy in force stays until then.
func (c *Client) handleDelta(snap *weftv1.PolicySnapshot, req *weftv1.PolicyRequest) *weftv1.PolicyRequest {
	cur := c.Current()
	if c.cfg.Node == "" || cur == nil || cur.GetControllerNonce() != snap.GetControllerNonce() || cur.GetVersion() != snap.GetBaseVersion() {
		req.Resync = true
		return c.nack(req, fmt.Errorf("%w: delta against version %d of controller %q, in force: version %d of controller %q",
			ErrDeltaBase, snap.GetBaseVersion(), snap.GetControllerNonce(), cur.GetVersion(), cur.GetControllerNonce()))
	}
	if snap.GetVersion() == cur.GetVersion() && snap.GetDelta().Empty() {
		// A reconnect: the version in force is the controller's current one.
		c.setFromController()
		return req
	}
	if snap.GetVersion() <= cur.GetVersion() {
		return c.nack(req, fmt.Errorf("delta to version %d is not newer than %d in force", snap.GetVersion(), cur.GetVersion()))
	}
	p, err := weftv1.ApplyDelta(cur.GetPolicy(), snap.GetDelta())
	if err != nil {
		req.Resync = true
		return c.nack(req, fmt.Errorf("apply delta from version %d: %w", snap.GetBaseVersion(), err))
	}
	full := &weftv1.PolicySnapshot{Version: snap.GetVersion(), ControllerNonce: snap.GetControllerNonce(), Policy: p}
	if err := c.validate(full); err != nil {
		return c.nack(req, err)
	}
	if err := c.apply(full); err != nil {
		return c.nack(req, err)
	}
	c.setCurrent(full)
	c.setFromController()
	c.save(full)
	d := snap.GetDelta()
	c.log.Debug("applied policy delta", logkey.Version, full.GetVersion(), logkey.BaseVersion, snap.GetBaseVersion(),
		logkey.Services, len(d.GetServices())+len(d.GetRemovedServices()), logkey.Clusters, len(d.GetClusters())+len(d.GetRemovedClusters()),
		logkey.Workloads, len(d.GetWorkloads())+len(d.GetRemovedWorkloads()))
	return req
}

// ErrDeltaBase: a delta's base is not the version in force (NACKed with
// resync set).
var ErrDeltaBase = errors.New("delta base is not the version in force")

func (c *Client) check(snap *weftv1.PolicySnapshot) error {
	if err := c.validate(snap); err != nil {
		return err
	}
	cur := c.Current()
	if cur != nil && cur.GetControllerNonce() == snap.GetControllerNonce() {
		// On reconnect the controller resends the version in force: fine
		// when it is the same policy.
		if snap.GetVersion() < cur.GetVersion() {
			return fmt.Errorf("version %d is older than %d in force", snap.GetVersion(), cur.GetVersion())
		}
		if snap.GetVersion() == cur.GetVersion() && !proto.Equal(c.payload(snap), c.payload(cur)) {
			return fmt.Errorf("version %d differs from the version %d in force", snap.GetVersion(), cur.GetVersion())
		}
	}
	return nil
}

func (c *Client) nack(req *weftv1.PolicyRequest, err error) *weftv1.PolicyRequest {
	req.Error = err.Error()
	c.cfg.Metrics.Refused()
	c.mu.Lock()
	c.nacked, c.lastErr = req.Version, req.Error
	c.mu.Unlock()
	c.log.Error("refused policy; keeping the last good one", logkey.Version, req.Version, logkey.Error, err)
	return req
}

func (c *Client) save(snap *weftv1.PolicySnapshot) {
	if c.cfg.Store == nil {
		return
	}
	if err := c.cfg.Store.Save(snap); err != nil {
		// The policy is in force; only the restart copy is stale.
		c.log.Error("save last good policy", logkey.Version, snap.GetVersion(), logkey.Error, err)
	}
}
