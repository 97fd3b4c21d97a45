package datapath

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/weft-mesh/weft/bpf"
)

// Strict mTLS in the datapath
//
// A pod synced with Pod.Strict has each IPv4 address in the strict map
// (value: its netns cookie). Two programs, at the same cgroup as the
// redirect, refuse plaintext to it:
//
//   - connect4/connect6 (v4-mapped): a TCP connect from this node's pods
//     (kubepods subtree: other pods, enrolled or not, and hostNetwork pods)
//     to a strict pod's address fails with EPERM unless the socket carries
//     the node proxy's mark (SO_MARK, Config.DialMark; the inbound sets it
//     on every dial to a pod) or the caller is the pod itself (its netns).
//   - cgroup_skb/egress: on this node's pods' sockets, a TCP SYN to a
//     strict pod as addressed after NAT (kube-proxy translated a Service
//     VIP or NodePort to it) from a socket without the proxy's mark, and
//     not the pod's own, is dropped. Without it a hostNetwork pod could
//     reach a strict pod of its node through a Service: connect sees only
//     the VIP, and its SYN carries the node's address.
//   - cgroup_skb/ingress: on the strict pod's own sockets, a TCP SYN (SYN
//     without ACK) whose source is neither one of the node's addresses
//     (Config.NodeAddrs: where the proxy and the kubelet dial from) nor the
//     pod's own address or loopback is dropped. This refuses other nodes
//     and pods on other nodes (their SYNs carry their own addresses), and
//     same-node pods a second time.
//
// Refusals are counted per reason (StrictCounters).
//
// The kubelet runs outside the kubepods cgroup, so its probes never meet
// the connect check, and they come from a node address, so they pass the
// SYN check: probes keep working without rewriting (Istio rewrites probes
// to its sidecar; Linkerd exempts them by port). Any host process outside
// kubepods is trusted the same way, as the node itself.
//
// By design, a connect to a strict pod's own address is refused for every
// caller but the proxy and the pod, enrolled callers too: the mesh
// redirects Service cluster IPs, not pod IPs, so a direct dial (a headless
// Service) has no mTLS path.
//
// Known gaps: a connection the node forwards and SNATs to its own address
// (a NodePort or LoadBalancer Service with externalTrafficPolicy: Cluster
// whose backend is a strict pod) is indistinguishable here from the node's
// own and passes; a process with CAP_NET_ADMIN in a hostNetwork pod can set
// the mark itself; UDP and IPv6 are not checked.

// StrictCounters are the refusals counted since the maps were created (they
// survive agent restarts with the pinned map).
type StrictCounters struct {
	// Connect: plaintext connects from this node's pods refused (EPERM).
	Connect uint64
	// SYN: SYNs from other hosts dropped.
	SYN uint64
	// Egress: SYNs from this node's pods dropped after NAT (through a
	// Service), before they left the node's pods.
	Egress uint64
}

// StrictCounters sums the per-CPU refusal counters.
func (d *Datapath) StrictCounters() (StrictCounters, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.coll == nil {
		return StrictCounters{}, ErrClosed
	}
	return readStrictCounters(d.coll.Maps[bpf.RedirectMapStrictRefusals])
}

// Indexes of the strict_refusals map (enum strict_reason in redirect.c).
const (
	strictReasonConnect uint32 = 0
	strictReasonSYN     uint32 = 1
	strictReasonEgress  uint32 = 2
)

func readStrictCounters(m *ebpf.Map) (StrictCounters, error) {
	sum := func(key uint32) (uint64, error) {
		var per []uint64
		if err := m.Lookup(key, &per); err != nil {
			return 0, fmt.Errorf("read strict_refusals[%d]: %w", key, err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n, nil
	}
	var c StrictCounters
	var err error
	if c.Connect, err = sum(strictReasonConnect); err != nil {
		return c, err
	}
	if c.SYN, err = sum(strictReasonSYN); err != nil {
		return c, err
	}
	c.Egress, err = sum(strictReasonEgress)
	return c, err
}
