package weftv1

import "google.golang.org/grpc"

// The policy stream's HTTP/2 flow control, the same on every agent and
// controller. gRPC's default is dynamic: each end measures the
// bandwidth-delay product with a PING whenever data arrives after its last
// measurement ended. On this stream every message is small and comes alone
// (a push, its ACK), so every message drew a measurement: per push round the
// controller sent two PINGs (its own, and the answer to the agent's) and a
// WINDOW_UPDATE beside the push, and read as many, times every node
// (TestPolicyStreamSendsNoFlowControlPings: 99 PINGs and 50 WINDOW_UPDATEs
// in 50 rounds). Static windows send none of them.
const (
	// AgentStreamWindow and AgentConnWindow are what the controller may
	// send an agent before it hears back: a delta fits many times over, a
	// first snapshot (12 MiB per node at 10,000 Services) takes a dozen
	// window updates. Windows of 16 MiB, what dynamic windows may grow to,
	// stalled the scale benchmark's first sync: 13 of 1,000 streams never
	// finished their first snapshot.
	AgentStreamWindow = 1 << 20
	AgentConnWindow   = 1 << 20
	// ControllerStreamWindow and ControllerConnWindow are what an agent may
	// send the controller before it reads: requests and ACKs, a few hundred
	// bytes each.
	ControllerStreamWindow = 256 << 10
	ControllerConnWindow   = 256 << 10
)

// DialOptions are the policy stream's options for an agent's (or a
// gateway's) connection to the controller: static windows, and room for a
// node's first snapshot above gRPC's 4 MiB message default (a node's policy
// carries every meshed Service and cluster it can reach: about 1 MiB at 1k
// Services).
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithStaticStreamWindowSize(AgentStreamWindow),
		grpc.WithStaticConnWindowSize(AgentConnWindow),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20)),
	}
}

// ServerOptions are the controller's side of DialOptions: static windows.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.StaticStreamWindowSize(ControllerStreamWindow),
		grpc.StaticConnWindowSize(ControllerConnWindow),
	}
}
