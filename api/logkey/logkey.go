// Package logkey names the keys of Weft's structured logs (log/slog), in the
// manner of Cilium's logfields: one constant per key, so a key is spelled
// one way everywhere ("error", never sometimes "err") and the operators'
// log queries and alerts keep working across components and releases.
//
// It sits under api/ because log keys are part of Weft's contract with the
// people who run it, next to the protocol agents and controllers speak; it
// is a leaf (it imports nothing), so agent/..., controller/... and cmd/...
// can all use it.
//
// Use: log.Warn("svid fetch failed", logkey.ID, id.String(), logkey.Error, err).
// Keys are lower snake_case. To convert a package, replace each literal key
// of its slog calls with the constant of the same meaning below, adding one
// here when none fits; a logger's Config field is named Logger everywhere.
package logkey

// Errors and outcomes.
const (
	Error    = "error"    // an error value
	Reason   = "reason"   // why, in words (a NACK's reason, a pending readiness)
	Panic    = "panic"    // a recovered panic value
	Failures = "failures" // consecutive failures so far
	Changed  = "changed"  // how many things changed
)

// Where: components and the Kubernetes objects they act on.
const (
	Component    = "component"     // the part of a process that logs (proxy, policy, identity, handoff)
	Node         = "node"          // Kubernetes Node name
	Namespace    = "namespace"     // Kubernetes namespace
	Name         = "name"          // object name (with Namespace and Kind)
	Kind         = "kind"          // object kind (HTTPRoute, ...)
	GroupVersion = "group_version" // API group/version of a kind
	Pod          = "pod"           // namespace/name of a pod
	DaemonSet    = "daemonset"     // namespace/name of a DaemonSet
	Leader       = "leader"        // identity of the replica holding the Lease
	ID           = "id"            // a replica's identity in the Lease, or a SPIFFE ID
)

// Network, files and the datapath.
const (
	Addr          = "addr"           // an address a socket has
	Want          = "want"           // the address, or value, that was expected instead
	GRPC          = "grpc"           // gRPC serving address
	Proxy         = "proxy"          // the node proxy's capture address
	Listener      = "listener"       // one listener's handoff name
	Listeners     = "listeners"      // listener handoff names
	Path          = "path"           // a file or socket path
	Program       = "program"        // BPF program name
	Map           = "map"            // BPF map name
	Cgroup        = "cgroup"         // cgroup v2 path
	AdoptedMaps   = "adopted_maps"   // pinned BPF maps kept from a previous agent
	Op            = "op"             // a protocol message's operation
	TookOver      = "took_over"      // whether listeners came from a previous agent
	ListenersFrom = "listeners_from" // where listeners came from: previous agent, holder, agent, bound
	Pid           = "pid"            // a process id
	Taken         = "taken"          // how many were taken
	Offered       = "offered"        // how many were offered
	Buffer        = "buffer"         // a buffer's capacity
)

// Policy, status and identities.
const (
	Version        = "version"         // a node policy version
	BaseVersion    = "base_version"    // the version a policy delta applies to
	Services       = "services"        // how many Service ports (in a policy or a delta)
	Clusters       = "clusters"        // how many clusters (in a policy or a delta)
	Workloads      = "workloads"       // how many workloads (in a policy or a delta)
	Build          = "build"           // the release a binary was built as (weft-images stamps it)
	Nodes          = "nodes"           // how many nodes
	Statuses       = "statuses"        // how many route statuses
	Objects        = "objects"         // how many objects
	Serial         = "serial"          // certificate serial number (hex)
	Expires        = "expires"         // certificate NotAfter
	CurrentExpires = "current_expires" // NotAfter of the certificate still in use
	RotateAt       = "rotate_at"       // when a certificate will be renewed
)

// Time.
const (
	Took    = "took"     // how long something took
	Wait    = "wait"     // how long something will be waited for
	Waited  = "waited"   // how long something was waited for
	Grace   = "grace"    // a drain's grace period
	Left    = "left"     // the work a drain's grace period ended (counts, in words)
	RetryIn = "retry_in" // delay before the next attempt
)

// The node proxy: what a request or connection was, and why it was refused.
const (
	Peer       = "peer"       // the remote address of a connection
	Client     = "client"     // a captured client's address
	Identity   = "identity"   // a SPIFFE ID a peer presented or claimed
	Status     = "status"     // an HTTP status the proxy answered
	Suppressed = "suppressed" // log lines a rate limit left out since the last one
	Target     = "target"     // the address a request or stream was for
	Detail     = "detail"     // more words on a refusal
	Cluster    = "cluster"    // a backend cluster (namespace/service:port)
	Service    = "service"    // a Service name
	Endpoint   = "endpoint"   // an endpoint address
	Plaintext  = "plaintext"  // whether an upstream is dialled without the tunnel
	Cookie     = "cookie"     // a network namespace cookie
	Dst        = "dst"        // a connection's original destination
	Type       = "type"       // a Go type
	Bytes      = "bytes"      // a size in bytes
)

// The gateway (north-south data plane).
const (
	Gateway = "gateway" // namespace/name of a Gateway
	Port    = "port"    // a listening port
	Ports   = "ports"   // how many ports
	Host    = "host"    // a request's Host or a TLS SNI
	Policy  = "policy"  // namespace/name of a policy object (BackendTLSPolicy)
)
