package datapath

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// State is the content of the node's agent-written maps: the enrolled
// netns cookies, the meshed VIP:ports, the strict pods and the node's own
// addresses. It is both the desired state (from policy and the pods on the
// node) and the actual state (read from the maps).
type State struct {
	Enrolled []uint64
	Meshed   []netip.AddrPort
	// Strict pods by IPv4 address (strict mTLS: plaintext refused).
	Strict []StrictPod
	// NodeAddrs are the node's own IPv4 addresses: a SYN to a strict pod
	// from one of them comes from this node (its proxy, its kubelet).
	NodeAddrs []netip.Addr
}

// StrictPod is one entry of the strict map: a strict pod's IPv4 address and
// its netns cookie (the pod may connect to itself).
type StrictPod struct {
	IP          netip.Addr
	NetnsCookie uint64
}

// OpKind is one kind of map write.
type OpKind int

// Map writes, in the order Plan emits them: puts before deletes, so a
// changing set never has a moment with less redirect than both ends. Node
// addresses go in before strict entries (the proxy's SYNs must pass before
// a pod turns strict) and out after them.
const (
	OpEnroll     OpKind = iota // put a netns cookie into enrolled
	OpNodeAddr                 // put a node address into node_addrs
	OpMesh                     // put a VIP:port into meshed
	OpStrict                   // put (or update) a strict pod
	OpUnstrict                 // delete a strict pod
	OpUnmesh                   // delete a VIP:port from meshed
	OpUnnodeAddr               // delete a node address from node_addrs
	OpUnenroll                 // delete a netns cookie from enrolled
)

func (k OpKind) String() string {
	switch k {
	case OpEnroll:
		return "enroll"
	case OpMesh:
		return "mesh"
	case OpUnmesh:
		return "unmesh"
	case OpUnenroll:
		return "unenroll"
	case OpNodeAddr:
		return "node-addr"
	case OpUnnodeAddr:
		return "unnode-addr"
	case OpStrict:
		return "strict"
	case OpUnstrict:
		return "unstrict"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is one map write. Cookie is set for enroll/unenroll and strict, VIP
// for mesh/unmesh, Addr for node-addr/unnode-addr and strict/unstrict.
type Op struct {
	Kind   OpKind
	Cookie uint64
	VIP    netip.AddrPort
	Addr   netip.Addr
}

func (o Op) String() string {
	switch o.Kind {
	case OpEnroll, OpUnenroll:
		return fmt.Sprintf("%s %d", o.Kind, o.Cookie)
	case OpStrict:
		return fmt.Sprintf("%s %s %d", o.Kind, o.Addr, o.Cookie)
	case OpUnstrict, OpNodeAddr, OpUnnodeAddr:
		return fmt.Sprintf("%s %s", o.Kind, o.Addr)
	}
	return fmt.Sprintf("%s %s", o.Kind, o.VIP)
}

// Plan returns the map writes that turn have into want, in a fixed order
// (the OpKind order: puts, then deletes; each kind sorted). Duplicates are
// ignored; of two strict entries for one address the first wins. Both
// states must be normalized (NormalizeVIPs); Plan is pure.
func Plan(want, have State) []Op {
	var ops []Op
	wantE, haveE := setOf(want.Enrolled), setOf(have.Enrolled)
	wantM, haveM := setOf(want.Meshed), setOf(have.Meshed)
	wantN, haveN := setOf(want.NodeAddrs), setOf(have.NodeAddrs)
	wantS, haveS := strictSet(want.Strict), strictSet(have.Strict)

	for _, c := range sortedKeys(wantE, cmp.Compare[uint64]) {
		if _, ok := haveE[c]; !ok {
			ops = append(ops, Op{Kind: OpEnroll, Cookie: c})
		}
	}
	for _, a := range sortedKeys(wantN, netip.Addr.Compare) {
		if _, ok := haveN[a]; !ok {
			ops = append(ops, Op{Kind: OpNodeAddr, Addr: a})
		}
	}
	for _, v := range sortedKeys(wantM, compareAddrPort) {
		if _, ok := haveM[v]; !ok {
			ops = append(ops, Op{Kind: OpMesh, VIP: v})
		}
	}
	for _, a := range sortedMapKeys(wantS) {
		if c, ok := haveS[a]; !ok || c != wantS[a] {
			ops = append(ops, Op{Kind: OpStrict, Addr: a, Cookie: wantS[a]})
		}
	}
	for _, a := range sortedMapKeys(haveS) {
		if _, ok := wantS[a]; !ok {
			ops = append(ops, Op{Kind: OpUnstrict, Addr: a})
		}
	}
	for _, v := range sortedKeys(haveM, compareAddrPort) {
		if _, ok := wantM[v]; !ok {
			ops = append(ops, Op{Kind: OpUnmesh, VIP: v})
		}
	}
	for _, a := range sortedKeys(haveN, netip.Addr.Compare) {
		if _, ok := wantN[a]; !ok {
			ops = append(ops, Op{Kind: OpUnnodeAddr, Addr: a})
		}
	}
	for _, c := range sortedKeys(haveE, cmp.Compare[uint64]) {
		if _, ok := wantE[c]; !ok {
			ops = append(ops, Op{Kind: OpUnenroll, Cookie: c})
		}
	}
	return ops
}

// strictSet indexes strict entries by address (the first entry wins).
func strictSet(ps []StrictPod) map[netip.Addr]uint64 {
	m := make(map[netip.Addr]uint64, len(ps))
	for _, p := range ps {
		if _, ok := m[p.IP]; !ok {
			m[p.IP] = p.NetnsCookie
		}
	}
	return m
}

func sortedMapKeys(m map[netip.Addr]uint64) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// NormalizeVIPs validates meshed destinations for the IPv4 redirect maps.
// v4-mapped addresses are unmapped. IPv6 destinations are returned in
// skipped (the redirect is IPv4 only; an AF_INET6 socket dialing a
// v4-mapped VIP is still redirected). An invalid address, an unspecified
// address or port 0 is an error, and nothing is returned then.
func NormalizeVIPs(vips []netip.AddrPort) (ok, skipped []netip.AddrPort, err error) {
	for _, v := range vips {
		a := v.Addr()
		if !v.IsValid() || a.IsUnspecified() || v.Port() == 0 || a.Zone() != "" {
			return nil, nil, fmt.Errorf("%w: %q", ErrInvalidVIP, v)
		}
		a = a.Unmap()
		if !a.Is4() {
			skipped = append(skipped, v)
			continue
		}
		ok = append(ok, netip.AddrPortFrom(a, v.Port()))
	}
	return ok, skipped, nil
}

func setOf[T comparable](xs []T) map[T]struct{} {
	s := make(map[T]struct{}, len(xs))
	for _, x := range xs {
		s[x] = struct{}{}
	}
	return s
}

func sortedKeys[T comparable](s map[T]struct{}, cmpf func(a, b T) int) []T {
	out := make([]T, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	slices.SortFunc(out, cmpf)
	return out
}

func compareAddrPort(a, b netip.AddrPort) int { return a.Compare(b) }
