// Package push serves per-node policy snapshots to agents over gRPC
// (weftv1.PolicyServer). Every snapshot carries a version that is strictly
// increasing within one controller process and the process's nonce. Only
// nodes whose policy changed get a new snapshot; a stream that falls too far
// behind is closed and the agent resyncs in full when it reconnects.
//
// Register the server on a grpc.Server built with ServerCodec() so each
// snapshot is encoded once per change rather than once per stream.
package push

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// DefaultSendBuffer is how many snapshots may wait for one slow stream
// before it is closed.
const DefaultSendBuffer = 16

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

// Config configures a Server.
type Config struct {
	// Authenticator checks every stream's bearer token. Required.
	Authenticator Authenticator
	// SendBuffer is the number of snapshots queued per stream before the
	// stream is considered too slow and closed; DefaultSendBuffer when zero.
	SendBuffer int
	// Nonce identifies this controller process in every snapshot; random
	// when empty.
	Nonce string
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// NodeState is what the server knows about one node, for introspection
// (weftctl status).
type NodeState struct {
	Node string
	// Version of the node's current snapshot; 0 when none.
	Version uint64
	// AckedVersion is the newest version an agent of this node ACKed.
	AckedVersion uint64
	// NackedVersion and NackReason describe the newest NACK, if any.
	NackedVersion uint64
	NackReason    string
	// Streams is the number of connected agent streams for this node.
	Streams int
}

type snapshot struct {
	version uint64
	policy  *weftv1.NodePolicy
	enc     encoded
	msg     *wireSnapshot
}

type subscriber struct {
	node    string
	ch      chan *wireSnapshot
	evicted chan struct{}
	once    sync.Once
}

func (s *subscriber) evict() { s.once.Do(func() { close(s.evicted) }) }

type nodeEntry struct {
	snap          snapshot
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
	nonce  string
	log    *slog.Logger

	mu      sync.Mutex
	version uint64
	nodes   map[string]*nodeEntry
	updated bool
}

// New returns a Server; register it with weftv1.RegisterPolicyServer.
func New(cfg Config) (*Server, error) {
	if cfg.Authenticator == nil {
		return nil, ErrNoAuthenticator
	}
	s := &Server{
		auth:   cfg.Authenticator,
		buffer: cfg.SendBuffer,
		nonce:  cfg.Nonce,
		log:    cfg.Logger,
		nodes:  map[string]*nodeEntry{},
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
// equal to their current one (same deterministic encoding) get nothing; changed nodes get a new
// version pushed to every stream; nodes missing from policies keep their
// last snapshot while an agent of theirs is connected (it keeps its last
// good policy) and are forgotten otherwise. The policies must not be modified after the call.
// Update never blocks on a stream: a stream whose buffer is full is closed.
// It returns the number of nodes that got a new version.
func (s *Server) Update(policies map[string]*weftv1.NodePolicy) int {
	enc := &encoder{}
	names := make([]string, 0, len(policies))
	for n := range policies {
		names = append(names, n)
	}
	sort.Strings(names)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.updated = true
	changed := 0
	for _, name := range names {
		p := policies[name]
		if p == nil {
			continue
		}
		e := s.nodes[name]
		if e == nil {
			e = &nodeEntry{subs: map[*subscriber]struct{}{}}
			s.nodes[name] = e
		}
		body, err := enc.encode(p)
		if err != nil {
			s.log.Error("cannot encode node policy; the node keeps its last one", logkey.Node, name, logkey.Error, err)
			continue
		}
		if e.snap.policy != nil && e.snap.enc.equal(body) {
			continue
		}
		s.version++
		e.snap = snapshot{version: s.version, policy: p, enc: body, msg: newWireSnapshot(s.version, s.nonce, p, body)}
		changed++
		for sub := range e.subs {
			s.enqueue(sub, e.snap.msg)
		}
	}
	for name, e := range s.nodes {
		if _, ok := policies[name]; !ok && len(e.subs) == 0 {
			delete(s.nodes, name)
		}
	}
	return changed
}

// Nodes returns the state of every known node, sorted by name.
func (s *Server) Nodes() []NodeState {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]NodeState, 0, len(s.nodes))
	for name, e := range s.nodes {
		out = append(out, NodeState{
			Node:          name,
			Version:       e.snap.version,
			AckedVersion:  e.acked,
			NackedVersion: e.nackedVersion,
			NackReason:    e.nackReason,
			Streams:       len(e.subs),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// enqueue hands msg to sub without blocking; a full buffer evicts the
// stream (Linkerd's enqueueUpdate). Called with s.mu held.
func (s *Server) enqueue(sub *subscriber, msg *wireSnapshot) {
	select {
	case <-sub.evicted:
	case sub.ch <- msg:
	default:
		s.log.Warn("policy stream fell behind, closing it", logkey.Node, sub.node, logkey.Version, msg.Version, logkey.Buffer, cap(sub.ch))
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
	authNode, err := s.auth.Authenticate(ctx, token)
	if err != nil {
		s.log.Info("policy stream authentication failed", logkey.Error, err)
		return status.Errorf(codes.Unauthenticated, "authenticate agent: %v", err)
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetNode() == "" {
		return status.Error(codes.InvalidArgument, "first message must name the agent's node")
	}
	if first.GetNode() != authNode {
		return status.Errorf(codes.PermissionDenied, "agent authenticated for node %q cannot subscribe to node %q", authNode, first.GetNode())
	}
	node := authNode

	sub := &subscriber{node: node, ch: make(chan *wireSnapshot, s.buffer), evicted: make(chan struct{})}
	s.subscribe(sub)
	defer s.unsubscribe(sub)
	s.log.Info("agent subscribed", logkey.Node, node)

	recvErr := make(chan error, 1)
	go func() { recvErr <- s.receive(stream, node) }()

	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case err := <-recvErr:
			return err
		case <-sub.evicted:
			return status.Errorf(codes.ResourceExhausted, "policy stream for node %q fell behind; reconnect for a full snapshot", node)
		case msg := <-sub.ch:
			if err := stream.SendMsg(msg); err != nil {
				return err
			}
		}
	}
}

// receive records ACKs and NACKs until the stream ends; the agent closing
// its side (io.EOF) ends the stream cleanly.
func (s *Server) receive(stream grpc.BidiStreamingServer[weftv1.PolicyRequest, weftv1.PolicySnapshot], node string) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetNode() != "" && req.GetNode() != node {
			return status.Errorf(codes.PermissionDenied, "stream subscribed for node %q sent a message for node %q", node, req.GetNode())
		}
		s.ack(node, req.GetVersion(), req.GetError())
	}
}

func (s *Server) ack(node string, version uint64, reason string) {
	s.mu.Lock()
	e := s.nodes[node]
	if e != nil {
		if reason == "" {
			if version > e.acked {
				e.acked = version
			}
		} else if version >= e.nackedVersion {
			e.nackedVersion = version
			e.nackReason = reason
		}
	}
	s.mu.Unlock()
	if reason != "" {
		s.log.Warn("agent rejected policy", logkey.Node, node, logkey.Version, version, logkey.Reason, reason)
	} else {
		s.log.Debug("agent applied policy", logkey.Node, node, logkey.Version, version)
	}
}

func (s *Server) subscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.nodes[sub.node]
	if e == nil {
		e = &nodeEntry{subs: map[*subscriber]struct{}{}}
		s.nodes[sub.node] = e
	}
	e.subs[sub] = struct{}{}
	if e.snap.policy != nil {
		s.enqueue(sub, e.snap.msg)
	}
}

func (s *Server) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.nodes[sub.node]; e != nil {
		delete(e.subs, sub)
	}
	sub.evict()
}
