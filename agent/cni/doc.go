// Package cni is weft-cni, Weft's chained CNI plugin, and the node agent's
// side of it.
//
// The container runtime runs weft-cni after the cluster's primary CNI
// plugin(s) when it creates a pod sandbox, before any container of the pod
// (init containers included) starts. weft-cni asks the node's agent over a
// unix socket in the agent's state directory (wire.go) to enroll the pod's
// network namespace, and returns the previous plugin's result only once the
// agent answered that the pod is enrolled (its netns cookie is in the
// pinned BPF map "enrolled") or that it is not to be enrolled. An agent that
// cannot be reached fails ADD: the runtime retries the sandbox, the pod never
// runs unmeshed (fail closed). DEL removes the enrollment; it is idempotent.
//
// The agent decides (Enroller, Decider): it reads the pod and its namespace
// from the API server (annotation weft.dev/mesh on both, api/mesh) rather
// than its pushed policy, because the policy names a pod only once the
// controller has seen the pod's IP, which is after its sandbox exists. An
// API server it cannot reach fails ADD (fail closed). The enrollment is
// held (datapath.Hold) across the agent's policy syncs and restarts (the
// holds are kept on disk) until DEL, or until a policy that once named the
// pod stops naming it (the namespace or pod left the mesh).
//
// Files: plugin.go (the plugin's verbs), conf.go (its network config),
// wire.go (the socket protocol), server.go (the agent's socket), enroll.go
// (the agent's holds), decide.go (the decision's interface; the agent's
// decider reads the API server, agent/cnidecide.go, so the plugin binary
// links no Kubernetes client).
// The conflist installer is package cni/install.
package cni
