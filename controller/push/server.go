// Package push serves per-node policy snapshots to agents over gRPC
// (weftv1.PolicyServer). Every snapshot carries a version that is strictly
// increasing within one controller process and the process's nonce. Only
// nodes whose policy changed get a new version, as a delta against the
// version before it (delta.go) when the stream has that one in force, and
// as a full snapshot otherwise (first subscription, a reconnect from an
// older or unknown version, a NACK). A stream that falls too far behind is
// closed and the agent resyncs when it reconnects.
//
// A Gateway's data plane subscribes the same way with PolicyRequest.gateway
// ("namespace/name") instead of node; Config.Gateways authorizes it, and it
// gets that Gateway's GatewayPolicy (UpdateGateways) with the same versions,
// ACK and NACK bookkeeping (Gateways).
//
// Register the server on a grpc.Server built with ServerCodec() so each
// snapshot is encoded once per change rather than once per stream.
package push

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/metrics"
)

// DefaultSendBuffer is how many snapshots may wait for one slow stream
// before it is closed.
const DefaultSendBuffer = 16

// DefaultFirstMessageTimeout is how long a stream may take to send its
// subscription, which says whose token check applies.
const DefaultFirstMessageTimeout = 10 * time.Second

// Sentinel errors.
var (
	// ErrNoToken: the call carries no "authorization: Bearer <token>".
	ErrNoToken = errors.New("missing bearer token in authorization metadata")
	// ErrNoAuthenticator: Config.Authenticator is nil.
	ErrNoAuthenticator = errors.New("push: no authenticator configured")
)

// Authenticator maps an agent's bearer token to the node the agent runs on.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (node string, err error)
}

// GatewayAuthorizer checks that a bearer token belongs to a data plane pod
// of the Gateway namespace/name. Its errors are gRPC status errors
// (Unauthenticated, PermissionDenied, Unavailable).
type GatewayAuthorizer interface {
	AuthorizeGateway(ctx context.Context, token, namespace, name string) error
}

// Config configures a Server.
type Config struct {
	// Authenticator checks every node stream's bearer token. Required.
	Authenticator Authenticator
	// Gateways checks the bearer token of every Gateway data plane's
	// stream; nil refuses those streams.
	Gateways GatewayAuthorizer
	// FirstMessageTimeout closes a stream that has not subscribed by then;
	// DefaultFirstMessageTimeout when zero.
	FirstMessageTimeout time.Duration
	// SendBuffer is the number of snapshots queued per stream before the
	// stream is considered too slow and closed; DefaultSendBuffer when zero.
	SendBuffer int
	// Nonce identifies this controller process in every snapshot; random
	// when empty.
	Nonce string
	// GatewayRefusalChanged, when set, is called (outside the server's
	// lock) when a Gateway data plane starts or stops refusing its policy:
	// a NACK, or an ACK of a version past the last NACK.
	GatewayRefusalChanged func()
	// Metrics records ACK latencies and NACKs; nil: none.
	Metrics *metrics.Controller
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// EntryState is what the server knows about the policy of one node or
// one Gateway's data plane, for introspection (weftctl status).
type EntryState struct {
	// Version of the current snapshot; 0 when none.
	Version uint64
	// AckedVersion is the newest version a stream of this entry ACKed.
	AckedVersion uint64
	// NackedVersion and NackReason describe the newest NACK, if any.
	NackedVersion uint64
	NackReason    string
	// Streams is the number of connected streams.
	Streams int
}

// NodeState is EntryState for a node.
type NodeState struct {
	Node string
	EntryState
}

// GatewayState is EntryState for a Gateway's data plane.
type GatewayState struct {
	// Gateway is "namespace/name".
	Gateway string
	EntryState
}

// state reads e. Called with s.mu held.
func (e *nodeEntry) state() EntryState {
	var v uint64
	if e.rel != nil {
		v = e.rel.version
	}
	return EntryState{Version: v, AckedVersion: e.acked, NackedVersion: e.nackedVersion, NackReason: e.nackReason, Streams: len(e.subs)}
}

// subscriber is one stream: of a node, or of a Gateway's data plane
// (gateway set, node is then "namespace/name").
type subscriber struct {
	node    string
	gateway bool
	ch      chan *release
	evicted chan struct{}
	once    sync.Once
	// resync asks the sending loop for a full snapshot of the current
	// version (the agent NACKed a delta it could not apply).
	resync chan struct{}

	mu sync.Mutex
	// at is the version the agent has in force if it applied everything
	// sent, as far as the server knows; 0: unknown (send full snapshots).
	at uint64
	// deltas: the agent said it applies deltas (PolicyRequest.deltas);
	// patches: also cluster patches (PolicyRequest.endpoint_patches).
	deltas, patches bool
	// sent is when each version not answered yet was sent on the stream
	// (oldest first, at most maxPending), for the ACK latency.
	sent []sentVersion
}

// sentVersion is a version sent on a stream and when.
type sentVersion struct {
	version uint64
	at      time.Time
}

// maxPending bounds the versions a stream remembers sending: an agent that
// answers none of them costs no more.
const maxPending = 64

// sending records that version is sent now.
func (sub *subscriber) sending(version uint64, now time.Time) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.sent) == maxPending {
		sub.sent = append(sub.sent[:0], sub.sent[1:]...)
	}
	sub.sent = append(sub.sent, sentVersion{version, now})
}

// answered returns how long ago version was sent (forgetting it and every
// older one: the agent answers in order); negative when this stream did
// not send it.
func (sub *subscriber) answered(version uint64, now time.Time) time.Duration {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	d := time.Duration(-1)
	i := 0
	for ; i < len(sub.sent) && sub.sent[i].version <= version; i++ {
		if sub.sent[i].version == version {
			d = now.Sub(sub.sent[i].at)
		}
	}
	sub.sent = append(sub.sent[:0], sub.sent[i:]...)
	return d
}

func (s *subscriber) evict() { s.once.Do(func() { close(s.evicted) }) }

type nodeEntry struct {
	// rel is the current version; nil: none yet.
	rel *release
	// policy is rel's policy (nodes), gwBody its encoding (Gateways).
	policy        *weftv1.NodePolicy
	gwBody        []byte
	acked         uint64
	nackedVersion uint64
	nackReason    string
	subs          map[*subscriber]struct{}
}

// Server implements weftv1.PolicyServer.
type Server struct {
	weftv1.UnimplementedPolicyServer

	auth   Authenticator
	buffer int
	first  time.Duration
	nonce  string
	log    *slog.Logger
	m      *metrics.Controller

	gateways GatewayAuthorizer
	refusal  func() // Config.GatewayRefusalChanged

	// updateMu serializes Update: the deltas are computed outside mu.
	updateMu sync.Mutex
	// encs are the unit encodings of earlier Updates (delta.go).
	encs unitEncs

	mu      sync.Mutex
	version uint64
	nodes   map[string]*nodeEntry
	gws     map[string]*nodeEntry // by "namespace/name"
	updated bool
}

// New returns a Server; register it with weftv1.RegisterPolicyServer.
func New(cfg Config) (*Server, error) {
	if cfg.Authenticator == nil {
		return nil, ErrNoAuthenticator
	}
	s := &Server{
		auth:     cfg.Authenticator,
		gateways: cfg.Gateways,
		refusal:  cfg.GatewayRefusalChanged,
		buffer:   cfg.SendBuffer,
		first:    cmp.Or(cfg.FirstMessageTimeout, DefaultFirstMessageTimeout),
		nonce:    cfg.Nonce,
		log:      cfg.Logger,
		m:        cfg.Metrics,
		nodes:    map[string]*nodeEntry{},
		gws:      map[string]*nodeEntry{},
	}
	if s.buffer <= 0 {
		s.buffer = DefaultSendBuffer
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.nonce == "" {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("generate controller nonce: %w", err)
		}
		s.nonce = hex.EncodeToString(b[:])
	}
	return s, nil
}

// Nonce is the controller nonce carried by every snapshot.
func (s *Server) Nonce() string { return s.nonce }

// Ready reports whether Update has been called at least once.
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updated
}

// Update replaces the desired policy of every node. Nodes whose policy is
// equal to their current one get nothing; changed nodes get a new version
// pushed to every stream (as a delta against the version before it where
// the stream has that one); nodes missing from policies keep their last
// version while an agent of theirs is connected (it keeps its last good
// policy) and are forgotten otherwise. The policies must not be modified
// after the call. Update never blocks on a stream: a stream whose buffer is
// full is closed. It returns the number of nodes that got a new version.
func (s *Server) Update(policies map[string]*weftv1.NodePolicy) int {
	s.updateMu.Lock()
	defer s.updateMu.Unlock()
	names := slices.Sorted(maps.Keys(policies))
	prev := make(map[string]*weftv1.NodePolicy, len(names))
	s.mu.Lock()
	for _, n := range names {
		if e := s.nodes[n]; e != nil {
			prev[n] = e.policy
		}
	}
	s.mu.Unlock()

	// The deltas and first snapshots, computed without holding mu.
	type change struct {
		name  string
		p     *weftv1.NodePolicy
		delta *nodeDelta
		full  *wireSnapshot // first version of a node
	}
	enc := &encoder{}
	d := newDiffer(s.encs)
	var changes []change
	for _, name := range names {
		p := policies[name]
		if p == nil {
			continue
		}
		if old := prev[name]; old != nil {
			nd, err := d.diff(old, p)
			if err != nil {
				s.log.Error("cannot encode node policy; the node keeps its last one", logkey.Node, name, logkey.Error, err)
				continue
			}
			if nd != nil {
				changes = append(changes, change{name: name, p: p, delta: nd})
			}
			continue
		}
		body, err := enc.encode(p)
		if err != nil {
			s.log.Error("cannot encode node policy; the node keeps its last one", logkey.Node, name, logkey.Error, err)
			continue
		}
		changes = append(changes, change{name: name, p: p, full: newWireSnapshot(0, s.nonce, p, body)})
	}
	s.encs = pruneEncs(d.encs, policies)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.updated = true
	for _, c := range changes {
		e := s.nodes[c.name]
		if e == nil {
			e = &nodeEntry{subs: map[*subscriber]struct{}{}}
			s.nodes[c.name] = e
		}
		s.version++
		v, p := s.version, c.p
		r := &release{version: v}
		switch {
		case c.full != nil:
			r.fullMsg = newWireSnapshot(v, s.nonce, p, c.full.body)
		case e.rel == nil || e.policy != prev[c.name]:
			// forgotten meanwhile: no base to send a delta against
			r.build = func() *wireSnapshot { return buildFull(enc, v, s.nonce, p) }
		default:
			r.base = e.rel.version
			r.delta = newDeltaWireSnapshot(v, r.base, s.nonce, c.delta)
			if c.delta.patched != nil {
				r.patched = newDeltaWireSnapshot(v, r.base, s.nonce, c.delta.patched)
			}
			r.build = func() *wireSnapshot { return buildFull(enc, v, s.nonce, p) }
		}
		e.rel, e.policy = r, p
		for sub := range e.subs {
			s.enqueue(sub, r)
		}
	}
	forget(s.nodes, policies, s.m.Forget)
	return len(changes)
}

// buildFull encodes the full snapshot of a version; nil when it cannot be
// encoded (the stream that needs it is closed).
func buildFull(enc *encoder, version uint64, nonce string, p *weftv1.NodePolicy) *wireSnapshot {
	body, err := enc.encode(p)
	if err != nil {
		return nil
	}
	return newWireSnapshot(version, nonce, p, body)
}

// forget drops the entries missing from policies that no stream uses;
// gone, when set, is told each name dropped.
func forget[P any](entries map[string]*nodeEntry, policies map[string]P, gone func(string)) {
	for name, e := range entries {
		if _, ok := policies[name]; !ok && len(e.subs) == 0 {
			delete(entries, name)
			if gone != nil {
				gone(name)
			}
		}
	}
}

// Nodes returns the state of every known node, sorted by name.
func (s *Server) Nodes() []NodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeState, 0, len(s.nodes))
	for _, name := range slices.Sorted(maps.Keys(s.nodes)) {
		out = append(out, NodeState{Node: name, EntryState: s.nodes[name].state()})
	}
	return out
}

// enqueue hands msg to sub without blocking; a full buffer evicts the
// stream (Linkerd's enqueueUpdate). Called with s.mu held.
func (s *Server) enqueue(sub *subscriber, r *release) {
	select {
	case <-sub.evicted:
	case sub.ch <- r:
	default:
		s.log.Warn("policy stream fell behind, closing it", logkey.Node, sub.node, logkey.Version, r.version, logkey.Buffer, cap(sub.ch))
		sub.evict()
	}
}

// BearerToken returns the token of the "authorization: Bearer <token>"
// metadata of an incoming call.
func BearerToken(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "bearer") && strings.TrimSpace(token) != "" {
			return strings.TrimSpace(token), nil
		}
	}
	return "", ErrNoToken
}

// Stream serves one agent: authenticate, read the subscription, send the
// node's current snapshot and every later one, record ACKs and NACKs.
func (s *Server) Stream(stream grpc.BidiStreamingServer[weftv1.PolicyRequest, weftv1.PolicySnapshot]) error {
	ctx := stream.Context()
	token, err := BearerToken(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	first, err := s.recvFirst(stream)
	if err != nil {
		return err
	}
	var sub *subscriber
	if first.GetGateway() != "" {
		sub, err = s.authorizeGateway(ctx, token, first)
	} else {
		sub, err = s.authorizeNode(ctx, token, first)
	}
	if err != nil {
		return err
	}
	return s.serve(stream, sub, first)
}

// recvFirst reads the subscription; the token is checked after it (whose
// check depends on it), so a stream that never subscribes is closed.
func (s *Server) recvFirst(stream grpc.BidiStreamingServer[weftv1.PolicyRequest, weftv1.PolicySnapshot]) (*weftv1.PolicyRequest, error) {
	type result struct {
		req *weftv1.PolicyRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		req, err := stream.Recv()
		ch <- result{req, err}
	}()
	t := time.NewTimer(s.first)
	defer t.Stop()
	select {
	case r := <-ch:
		return r.req, r.err
	case <-t.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "no subscription within %v", s.first)
	}
}

// authorizeNode checks an agent's token against the node of its first
// message.
func (s *Server) authorizeNode(ctx context.Context, token string, first *weftv1.PolicyRequest) (*subscriber, error) {
	authNode, err := s.auth.Authenticate(ctx, token)
	if err != nil {
		s.log.Info("policy stream authentication failed", logkey.Error, err)
		return nil, status.Errorf(codes.Unauthenticated, "authenticate agent: %v", err)
	}
	if first.GetNode() == "" {
		return nil, status.Error(codes.InvalidArgument, "first message must name the agent's node")
	}
	if first.GetNode() != authNode {
		return nil, status.Errorf(codes.PermissionDenied, "agent authenticated for node %q cannot subscribe to node %q", authNode, first.GetNode())
	}
	s.log.Info("agent subscribed", logkey.Node, authNode)
	return s.newSubscriber(authNode, false), nil
}

// authorizeGateway checks that the token is a data plane pod's of the
// Gateway the first message names.
func (s *Server) authorizeGateway(ctx context.Context, token string, first *weftv1.PolicyRequest) (*subscriber, error) {
	gw := first.GetGateway()
	ns, name, ok := strings.Cut(gw, "/")
	switch {
	case first.GetNode() != "":
		return nil, status.Error(codes.InvalidArgument, "first message names both a node and a gateway")
	case !ok || ns == "" || name == "" || strings.Contains(name, "/"):
		return nil, status.Errorf(codes.InvalidArgument, "gateway %q is not namespace/name", gw)
	case s.gateways == nil:
		return nil, status.Error(codes.PermissionDenied, "this controller serves no gateway data planes")
	}
	if err := s.gateways.AuthorizeGateway(ctx, token, ns, name); err != nil {
		s.log.Info("gateway policy stream refused", logkey.Gateway, gw, logkey.Error, err)
		if _, isStatus := status.FromError(err); isStatus {
			return nil, err
		}
		return nil, status.Errorf(codes.PermissionDenied, "gateway %s: %v", gw, err)
	}
	s.log.Info("gateway data plane subscribed", logkey.Gateway, gw)
	return s.newSubscriber(gw, true), nil
}

func (s *Server) newSubscriber(key string, gateway bool) *subscriber {
	return &subscriber{node: key, gateway: gateway, ch: make(chan *release, s.buffer), evicted: make(chan struct{}), resync: make(chan struct{}, 1)}
}

// serve sends sub's snapshots and records its ACKs and NACKs.
func (s *Server) serve(stream grpc.BidiStreamingServer[weftv1.PolicyRequest, weftv1.PolicySnapshot], sub *subscriber, first *weftv1.PolicyRequest) error {
	ctx := stream.Context()
	node := sub.node
	s.subscribe(sub, first)
	defer s.unsubscribe(sub)

	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receive(stream, sub) }()

	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case err := <-recvErr:
			return err
		case <-sub.evicted:
			return status.Errorf(codes.ResourceExhausted, "policy stream for %s %q fell behind; reconnect for a full snapshot", sub.kind(), node)
		case <-sub.resync:
			s.mu.Lock()
			var r *release
			if e := s.entries(sub)[sub.node]; e != nil {
				r = e.rel
			}
			s.mu.Unlock()
			if r != nil {
				if err := s.send(stream, sub, r, true); err != nil {
					return err
				}
			}
		case r := <-sub.ch:
			if err := s.send(stream, sub, r, false); err != nil {
				return err
			}
		}
	}
}

// send sends release r on sub's stream: its delta when the agent has its
// base in force, nothing when a full snapshot of it (or a newer one) was
// sent already, else its full snapshot (always when full is set).
func (s *Server) send(stream grpc.BidiStreamingServer[weftv1.PolicyRequest, weftv1.PolicySnapshot], sub *subscriber, r *release, full bool) error {
	sub.mu.Lock()
	at := sub.at
	sub.mu.Unlock()
	var msg *wireSnapshot
	switch {
	case !full && sub.deltas && r.delta != nil && r.base == at:
		msg = r.delta
		if sub.patches && r.patched != nil {
			msg = r.patched
		}
	case !full && r.version <= at:
		return nil
	default:
		if msg = r.full(); msg == nil {
			return status.Errorf(codes.Internal, "policy version %d of %s %q cannot be encoded", r.version, sub.kind(), sub.node)
		}
	}
	sub.mu.Lock()
	sub.at = r.version
	sub.mu.Unlock()
	sub.sending(r.version, time.Now())
	return stream.SendMsg(msg)
}

// receive records ACKs and NACKs until the stream ends; the agent closing
// its side (io.EOF) ends the stream cleanly.
func (s *Server) receive(stream grpc.BidiStreamingServer[weftv1.PolicyRequest, weftv1.PolicySnapshot], sub *subscriber) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := sub.check(req); err != nil {
			return err
		}
		s.m.Answered(sub.node, sub.gateway, req.GetError() != "", sub.answered(req.GetVersion(), time.Now()))
		s.ack(sub, req.GetVersion(), req.GetError())
		if req.GetError() != "" {
			// The agent keeps an older version: what follows goes in full.
			sub.mu.Lock()
			sub.at = 0
			sub.mu.Unlock()
			if req.GetResync() {
				select {
				case sub.resync <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (sub *subscriber) kind() string {
	if sub.gateway {
		return "gateway"
	}
	return "node"
}

// check refuses a message for another node or Gateway than the stream's.
func (sub *subscriber) check(req *weftv1.PolicyRequest) error {
	if sub.gateway {
		if req.GetNode() != "" || req.GetGateway() != "" && req.GetGateway() != sub.node {
			return status.Errorf(codes.PermissionDenied, "stream subscribed for gateway %q sent a message for node %q, gateway %q", sub.node, req.GetNode(), req.GetGateway())
		}
		return nil
	}
	if req.GetGateway() != "" || req.GetNode() != "" && req.GetNode() != sub.node {
		return status.Errorf(codes.PermissionDenied, "stream subscribed for node %q sent a message for node %q, gateway %q", sub.node, req.GetNode(), req.GetGateway())
	}
	return nil
}

// entries is the table of sub's kind. Called with s.mu held.
func (s *Server) entries(sub *subscriber) map[string]*nodeEntry {
	if sub.gateway {
		return s.gws
	}
	return s.nodes
}

func (s *Server) ack(sub *subscriber, version uint64, reason string) {
	s.mu.Lock()
	e := s.entries(sub)[sub.node]
	changed := false
	if e != nil {
		refusing := e.nackedVersion > e.acked
		if reason == "" {
			if version > e.acked {
				e.acked = version
			}
		} else if version >= e.nackedVersion {
			changed = e.nackReason != reason
			e.nackedVersion = version
			e.nackReason = reason
		}
		changed = changed || refusing != (e.nackedVersion > e.acked)
	}
	s.mu.Unlock()
	if changed && sub.gateway && s.refusal != nil {
		s.refusal()
	}
	key := logkey.Node
	if sub.gateway {
		key = logkey.Gateway
	}
	if reason != "" {
		s.log.Warn("agent rejected policy", key, sub.node, logkey.Version, version, logkey.Reason, reason)
	} else {
		s.log.Debug("agent applied policy", key, sub.node, logkey.Version, version)
	}
}

// subscribe adds sub to its entry and queues the current version: a
// delta when the agent named (first message) the version before it, an
// empty delta when it has the current one, else a full snapshot.
func (s *Server) subscribe(sub *subscriber, first *weftv1.PolicyRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	entries := s.entries(sub)
	e := entries[sub.node]
	if e == nil {
		e = &nodeEntry{subs: map[*subscriber]struct{}{}}
		entries[sub.node] = e
	}
	e.subs[sub] = struct{}{}
	sub.deltas = !sub.gateway && first.GetDeltas()
	sub.patches = sub.deltas && first.GetEndpointPatches()
	if sub.deltas && first.GetControllerNonce() == s.nonce {
		sub.at = first.GetVersion()
	}
	switch {
	case e.rel == nil:
	case sub.deltas && sub.at != 0 && sub.at == e.rel.version:
		s.enqueue(sub, &release{version: sub.at, base: sub.at, delta: resumeSnapshot(sub.at, s.nonce), build: e.rel.full})
	default:
		s.enqueue(sub, e.rel)
	}
}

func (s *Server) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.entries(sub)[sub.node]; e != nil {
		delete(e.subs, sub)
	}
	sub.evict()
}
