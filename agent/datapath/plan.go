package datapath

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// State is the content of the node's two agent-written maps: the enrolled
// netns cookies and the meshed VIP:ports. It is both the desired state (from
// policy and the pods on the node) and the actual state (read from the maps).
type State struct {
	Enrolled []uint64
	Meshed   []netip.AddrPort
}

// OpKind is one kind of map write.
type OpKind int

// Map writes, in the order Plan emits them: puts before deletes, so a
// changing set never has a moment with less redirect than both ends.
const (
	OpEnroll   OpKind = iota // put a netns cookie into enrolled
	OpMesh                   // put a VIP:port into meshed
	OpUnmesh                 // delete a VIP:port from meshed
	OpUnenroll               // delete a netns cookie from enrolled
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
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is one map write. Cookie is set for enroll/unenroll, VIP for
// mesh/unmesh.
type Op struct {
	Kind   OpKind
	Cookie uint64
	VIP    netip.AddrPort
}

func (o Op) String() string {
	switch o.Kind {
	case OpEnroll, OpUnenroll:
		return fmt.Sprintf("%s %d", o.Kind, o.Cookie)
	}
	return fmt.Sprintf("%s %s", o.Kind, o.VIP)
}

// Plan returns the map writes that turn have into want, in a fixed order
// (puts, then deletes; each group sorted). Duplicates are ignored. Both
// states must be normalized (NormalizeVIPs); Plan is pure.
func Plan(want, have State) []Op {
	var ops []Op
	wantE, haveE := setOf(want.Enrolled), setOf(have.Enrolled)
	wantM, haveM := setOf(want.Meshed), setOf(have.Meshed)

	for _, c := range sortedKeys(wantE, cmp.Compare[uint64]) {
		if _, ok := haveE[c]; !ok {
			ops = append(ops, Op{Kind: OpEnroll, Cookie: c})
		}
	}
	for _, v := range sortedKeys(wantM, compareAddrPort) {
		if _, ok := haveM[v]; !ok {
			ops = append(ops, Op{Kind: OpMesh, VIP: v})
		}
	}
	for _, v := range sortedKeys(haveM, compareAddrPort) {
		if _, ok := wantM[v]; !ok {
			ops = append(ops, Op{Kind: OpUnmesh, VIP: v})
		}
	}
	for _, c := range sortedKeys(haveE, cmp.Compare[uint64]) {
		if _, ok := wantE[c]; !ok {
			ops = append(ops, Op{Kind: OpUnenroll, Cookie: c})
		}
	}
	return ops
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
