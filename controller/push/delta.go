package push

import (
	"bytes"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"unsafe"

	"google.golang.org/protobuf/encoding/protowire"
	protobuf "google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// A node's new version goes to its streams as a delta against the version
// before it (weftv1.NodePolicyDelta): what changed, not the node's whole
// policy. At 10k Services and 100k endpoints a node's policy is megabytes,
// a route or endpoint change a few hundred bytes.
//
// Resolution shares the services and clusters slices (and the tunnel map)
// between nodes, so a delta of those parts is computed and encoded once
// per pair of old and new slices, not once per node; units are compared by
// their deterministic encodings, kept from one Update to the next.

// Field numbers of PolicySnapshot and NodePolicyDelta used on the wire.
const (
	fieldBaseVersion = 5
	fieldDelta       = 6
)

// release is one version of a node's (or Gateway's) policy as its streams
// send it: the full snapshot, built on first use, and, when the node had a
// version before, the delta from it.
type release struct {
	version uint64
	// base is the version delta applies to; delta is nil when there is
	// none (first version, Gateways).
	base  uint64
	delta *wireSnapshot
	// patched is delta with cluster patches, for agents that apply them;
	// nil when it would be delta itself.
	patched *wireSnapshot

	once    sync.Once
	build   func() *wireSnapshot
	fullMsg *wireSnapshot
}

// full returns the full snapshot of the release, encoding it on first use.
func (r *release) full() *wireSnapshot {
	r.once.Do(func() {
		if r.fullMsg == nil && r.build != nil {
			r.fullMsg = r.build()
			r.build = nil
		}
	})
	return r.fullMsg
}

// sliceKey identifies a slice by its backing array and length.
type sliceKey struct {
	data unsafe.Pointer
	n    int
}

func keyOf[T any](s []T) sliceKey { return sliceKey{unsafe.Pointer(unsafe.SliceData(s)), len(s)} }

// partDelta is the delta of one shared part (services or clusters), with
// the encoding of its NodePolicyDelta fields.
type partDelta struct {
	services        []*weftv1.ServicePort
	removedServices []string
	clusters        []*weftv1.Cluster
	removedClusters []string
	tunnels         map[string]string
	removedTunnels  []string
	enc             []byte
	err             error
	// patched is the clusters part with cluster patches, for agents that
	// apply them; nil when no changed cluster is smaller as a patch.
	patched *partDelta
	patches []*weftv1.ClusterPatch
}

// unitEnc is a unit's encoding; it holds the unit so that its address,
// the cache key, is not reused while cached.
type unitEnc struct {
	unit protobuf.Message
	b    []byte
}

// unitEncs caches unit encodings by the unit's address, across Updates.
// Units are never modified once handed to Update, so an entry holds while
// it lives (and it keeps its unit alive). Entries of units that no policy
// holds any more are dropped when the cache outgrows the units in use
// (pruneEncs): touching the 40,000 unchanged units of a route change at
// issue #17's scale to carry them into a new cache was a third of Update.
type unitEncs map[unsafe.Pointer]unitEnc

// differ computes the deltas of one Update.
type differ struct {
	encs     unitEncs
	services map[[2]sliceKey]*partDelta
	clusters map[[2]sliceKey]*partDelta
	tunnels  map[[2]unsafe.Pointer]*partDelta
}

func newDiffer(encs unitEncs) *differ {
	if encs == nil {
		encs = unitEncs{}
	}
	return &differ{encs: encs, services: map[[2]sliceKey]*partDelta{},
		clusters: map[[2]sliceKey]*partDelta{}, tunnels: map[[2]unsafe.Pointer]*partDelta{}}
}

// unitEncoding is m's deterministic encoding, cached by pointer; nil when
// it cannot be encoded (it then differs from everything, and encoding the
// snapshot reports the error).
func (d *differ) unitEncoding(m protobuf.Message, p unsafe.Pointer) []byte {
	if e, ok := d.encs[p]; ok {
		return e.b
	}
	b, err := deterministic.Marshal(m)
	if err != nil {
		return nil
	}
	d.encs[p] = unitEnc{m, b}
	return b
}

// changed reports whether u replaces o with other content. Workloads are
// compared field by field: a pod change resolves every node's workloads
// anew, and encoding 100,000 of them was most of such a round's push.
func changed[U protobuf.Message](d *differ, o, u U) bool {
	if ow, ok := any(o).(*weftv1.Workload); ok {
		return !weftv1.EqualWorkload(ow, any(u).(*weftv1.Workload))
	}
	nb := d.unitEncoding(u, unitPtr(u))
	return nb == nil || !bytes.Equal(d.unitEncoding(o, unitPtr(o)), nb)
}

// diffUnits compares two lists of units by key and encoding.
func diffUnits[U interface {
	protobuf.Message
	comparable
}](d *differ, old, new []U, key func(U) string) (upserts []U, removed []string) {
	if upserts, ok := diffAligned(d, old, new, key); ok {
		return upserts, nil
	}
	before := make(map[string]U, len(old))
	for _, u := range old {
		before[key(u)] = u
	}
	now := make(map[string]bool, len(new))
	for _, u := range new {
		k := key(u)
		now[k] = true
		b, ok := before[k]
		if ok && b == u {
			continue
		}
		if !ok || changed(d, b, u) {
			upserts = append(upserts, u)
		}
	}
	for _, u := range old {
		if k := key(u); !now[k] {
			removed = append(removed, k)
		}
	}
	slices.Sort(removed)
	return upserts, removed
}

// diffAligned is diffUnits when new is old with units replaced in place
// (the same keys in the same order, as resolution builds a change): no
// maps, and the keys of unchanged units are not even built. false when it
// is not.
func diffAligned[U interface {
	protobuf.Message
	comparable
}](d *differ, old, new []U, key func(U) string) (upserts []U, ok bool) {
	if len(old) != len(new) {
		return nil, false
	}
	for i, u := range new {
		o := old[i]
		if o == u {
			continue
		}
		if key(o) != key(u) {
			return nil, false
		}
		if changed(d, o, u) {
			upserts = append(upserts, u)
		}
	}
	return upserts, true
}

// pruneEncs keeps the entries of encs for the units policies hold, when
// encs has outgrown them by a quarter (and 1,024).
func pruneEncs(encs unitEncs, policies map[string]*weftv1.NodePolicy) unitEncs {
	n := unitsIn(policies, nil)
	if len(encs) <= n+max(n/4, 1024) {
		return encs
	}
	kept := make(unitEncs, n)
	unitsIn(policies, func(p unsafe.Pointer) {
		if e, ok := encs[p]; ok {
			kept[p] = e
		}
	})
	return kept
}

// unitsIn counts the units of policies, each distinct slice once, and
// calls f (unless nil) with each one's address.
func unitsIn(policies map[string]*weftv1.NodePolicy, f func(unsafe.Pointer)) int {
	seen := map[sliceKey]bool{}
	n := 0
	for _, p := range policies {
		n += unitsOf(seen, p.GetServices(), f) + unitsOf(seen, p.GetClusters(), f) + unitsOf(seen, p.GetWorkloads(), f) + unitsOf(seen, p.GetAuthz(), f)
	}
	return n
}

func unitsOf[U any](seen map[sliceKey]bool, s []U, f func(unsafe.Pointer)) int {
	k := keyOf(s)
	if len(s) == 0 || seen[k] {
		return 0
	}
	seen[k] = true
	if f != nil {
		for _, u := range s {
			f(unitPtr(u))
		}
	}
	return len(s)
}

func unitPtr[U any](u U) unsafe.Pointer { return reflect.ValueOf(u).UnsafePointer() }

// serviceDelta is the delta of the services part between two slices.
func (d *differ) serviceDelta(old, new []*weftv1.ServicePort) *partDelta {
	k := [2]sliceKey{keyOf(old), keyOf(new)}
	if pd, ok := d.services[k]; ok {
		return pd
	}
	pd := &partDelta{}
	if k[0] != k[1] {
		pd.services, pd.removedServices = diffUnits(d, old, new, weftv1.ServiceKey)
		pd.enc, pd.err = marshalPart(&weftv1.NodePolicyDelta{Services: pd.services, RemovedServices: pd.removedServices})
	}
	d.services[k] = pd
	return pd
}

func (d *differ) clusterDelta(old, new []*weftv1.Cluster) *partDelta {
	k := [2]sliceKey{keyOf(old), keyOf(new)}
	if pd, ok := d.clusters[k]; ok {
		return pd
	}
	pd := &partDelta{}
	if k[0] != k[1] {
		pd.clusters, pd.removedClusters = diffUnits(d, old, new, (*weftv1.Cluster).GetName)
		pd.enc, pd.err = marshalPart(&weftv1.NodePolicyDelta{Clusters: pd.clusters, RemovedClusters: pd.removedClusters})
		pd.patched = d.patchedPart(old, pd)
	}
	d.clusters[k] = pd
	return pd
}

// patchedPart is pd with each upserted cluster that is smaller as a patch
// of its old self sent as that patch; nil when there is none.
func (d *differ) patchedPart(old []*weftv1.Cluster, pd *partDelta) *partDelta {
	var whole []*weftv1.Cluster
	var patches []*weftv1.ClusterPatch
	for i, u := range pd.clusters {
		if p := d.clusterPatch(old, u); p != nil {
			if patches == nil {
				whole = slices.Clone(pd.clusters[:i])
			}
			patches = append(patches, p)
		} else if patches != nil {
			whole = append(whole, u)
		}
	}
	if patches == nil {
		return nil
	}
	pp := &partDelta{clusters: whole, removedClusters: pd.removedClusters, patches: patches}
	pp.enc, pp.err = marshalPart(&weftv1.NodePolicyDelta{Clusters: whole, RemovedClusters: pd.removedClusters, ClusterPatches: patches})
	return pp
}

// clusterPatch is u as a patch of the cluster of its name in old (sorted
// by name); nil when there is none, the protocol changed, either lists its
// endpoints out of Cluster's order, or the patch is not smaller than u.
func (d *differ) clusterPatch(old []*weftv1.Cluster, u *weftv1.Cluster) *weftv1.ClusterPatch {
	i, ok := weftv1.SearchClusters(old, u.GetName())
	if !ok {
		return nil
	}
	o := old[i]
	oe, ne := o.GetEndpoints(), u.GetEndpoints()
	if o.GetProtocol() != u.GetProtocol() || !weftv1.EndpointsInOrder(oe) || !weftv1.EndpointsInOrder(ne) {
		return nil
	}
	p := &weftv1.ClusterPatch{Name: u.GetName()}
	for len(oe) > 0 || len(ne) > 0 {
		c := 1 // only old endpoints left: removed
		if len(oe) == 0 {
			c = -1
		} else if len(ne) > 0 {
			c = weftv1.CompareEndpoints(ne[0], oe[0])
		}
		switch {
		case c < 0:
			p.Endpoints = append(p.Endpoints, ne[0])
			ne = ne[1:]
		case c > 0:
			p.RemovedEndpoints = append(p.RemovedEndpoints, weftv1.EndpointKeyOf(oe[0]))
			oe = oe[1:]
		default:
			if ne[0] != oe[0] && !protobuf.Equal(ne[0], oe[0]) {
				p.Endpoints = append(p.Endpoints, ne[0])
			}
			oe, ne = oe[1:], ne[1:]
		}
	}
	whole := d.unitEncoding(u, unitPtr(u))
	if whole == nil || protobuf.Size(p) >= len(whole) {
		return nil
	}
	return p
}

func mapPtr(m map[string]string) unsafe.Pointer {
	if m == nil {
		return nil
	}
	return reflect.ValueOf(m).UnsafePointer()
}

func (d *differ) tunnelDelta(old, new map[string]string) *partDelta {
	k := [2]unsafe.Pointer{mapPtr(old), mapPtr(new)}
	if pd, ok := d.tunnels[k]; ok {
		return pd
	}
	pd := &partDelta{}
	if k[0] != k[1] || k[0] == nil {
		for n, a := range new {
			if b, ok := old[n]; !ok || a != b {
				if pd.tunnels == nil {
					pd.tunnels = map[string]string{}
				}
				pd.tunnels[n] = a
			}
		}
		for _, n := range slices.Sorted(maps.Keys(old)) {
			if _, ok := new[n]; !ok {
				pd.removedTunnels = append(pd.removedTunnels, n)
			}
		}
		if len(pd.tunnels)+len(pd.removedTunnels) > 0 {
			pd.enc, pd.err = marshalPart(&weftv1.NodePolicyDelta{NodeTunnels: pd.tunnels, RemovedNodeTunnels: pd.removedTunnels})
		}
	}
	d.tunnels[k] = pd
	return pd
}

func marshalPart(m protobuf.Message) ([]byte, error) {
	b, err := deterministic.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode delta: %w", err)
	}
	return b, nil
}

// nodeDelta is the delta between a node's old and new policy, with its
// encoding as a NodePolicyDelta (per-node fields in rest, the parts shared
// with other nodes in shared).
type nodeDelta struct {
	msg    *weftv1.NodePolicyDelta
	rest   []byte
	shared [][]byte
	// patched is the delta with cluster patches (partDelta.patched); nil
	// when there are none.
	patched *nodeDelta
}

func (n *nodeDelta) size() int {
	s := len(n.rest)
	for _, b := range n.shared {
		s += len(b)
	}
	return s
}

// diff returns the delta from old to new; nil when they are equal.
func (d *differ) diff(old, new *weftv1.NodePolicy) (*nodeDelta, error) {
	svc := d.serviceDelta(old.GetServices(), new.GetServices())
	cl := d.clusterDelta(old.GetClusters(), new.GetClusters())
	tun := d.tunnelDelta(old.GetNodeTunnels(), new.GetNodeTunnels())
	for _, pd := range []*partDelta{svc, cl, tun} {
		if pd.err != nil {
			return nil, pd.err
		}
	}
	own := &weftv1.NodePolicyDelta{}
	// the same slice (resolution reused it) has the same units: nothing
	// to compare or encode
	if keyOf(old.GetWorkloads()) != keyOf(new.GetWorkloads()) {
		own.Workloads, own.RemovedWorkloads = diffUnits(d, old.GetWorkloads(), new.GetWorkloads(), weftv1.WorkloadKey)
	}
	if keyOf(old.GetAuthz()) != keyOf(new.GetAuthz()) {
		own.Authz, own.RemovedAuthz = diffUnits(d, old.GetAuthz(), new.GetAuthz(), (*weftv1.AuthzPolicy).GetName)
	}
	if old.GetTrustDomain() != new.GetTrustDomain() || !slices.EqualFunc(old.GetTrustAnchors(), new.GetTrustAnchors(), bytes.Equal) {
		own.ReplaceTrust, own.TrustDomain, own.TrustAnchors = true, new.GetTrustDomain(), new.GetTrustAnchors()
	}
	if old.GetNode() != new.GetNode() {
		return nil, fmt.Errorf("policy of node %q replaces one of node %q", new.GetNode(), old.GetNode())
	}
	rest, err := deterministic.Marshal(own)
	if err != nil {
		return nil, fmt.Errorf("encode delta of node %s: %w", new.GetNode(), err)
	}
	var patchedOwn *weftv1.NodePolicyDelta
	if cl.patched != nil {
		if cl.patched.err != nil {
			return nil, cl.patched.err
		}
		patchedOwn = protobuf.Clone(own).(*weftv1.NodePolicyDelta) // before withParts adds the shared parts to own
	}
	nd := withParts(own, rest, svc, cl, tun)
	if nd != nil && patchedOwn != nil {
		nd.patched = withParts(patchedOwn, rest, svc, cl.patched, tun)
	}
	return nd, nil
}

// withParts completes own, the node's own fields encoded as rest, with the
// shared parts; nil when the delta changes nothing.
func withParts(own *weftv1.NodePolicyDelta, rest []byte, svc, cl, tun *partDelta) *nodeDelta {
	msg := own
	msg.Services, msg.RemovedServices = svc.services, svc.removedServices
	msg.Clusters, msg.RemovedClusters, msg.ClusterPatches = cl.clusters, cl.removedClusters, cl.patches
	msg.NodeTunnels, msg.RemovedNodeTunnels = tun.tunnels, tun.removedTunnels
	if msg.Empty() {
		return nil
	}
	nd := &nodeDelta{msg: msg, rest: rest}
	for _, b := range [][]byte{svc.enc, cl.enc, tun.enc} {
		if len(b) > 0 {
			nd.shared = append(nd.shared, b)
		}
	}
	return nd
}

// newDeltaWireSnapshot is the wire form of a delta from base to version.
func newDeltaWireSnapshot(version, base uint64, nonce string, nd *nodeDelta) *wireSnapshot {
	head := headFields(version, nonce)
	head = protowire.AppendTag(head, fieldBaseVersion, protowire.VarintType)
	head = protowire.AppendVarint(head, base)
	head = protowire.AppendTag(head, fieldDelta, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(nd.size()))
	return &wireSnapshot{
		PolicySnapshot: &weftv1.PolicySnapshot{Version: version, ControllerNonce: nonce, BaseVersion: base, Delta: nd.msg},
		head:           head,
		body:           encoded{rest: nd.rest},
		more:           nd.shared,
	}
}

// resumeSnapshot tells a reconnecting agent that the version it has is
// still the current one: an empty delta from version to version.
func resumeSnapshot(version uint64, nonce string) *wireSnapshot {
	return newDeltaWireSnapshot(version, version, nonce, &nodeDelta{msg: &weftv1.NodePolicyDelta{}})
}
