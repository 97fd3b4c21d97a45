package weftv1

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
)

// ErrBadDelta is wrapped by ApplyDelta's errors: the delta does not fit the
// policy it claims to change (it removes a unit the policy lacks, or names
// a unit twice). The agent answers it as a base mismatch: it asks for a
// full snapshot.
var ErrBadDelta = errors.New("delta does not apply")

// ServiceKey is the identity of a ServicePort in a NodePolicyDelta:
// "namespace/name:port".
func ServiceKey(sp *ServicePort) string {
	return sp.GetNamespace() + "/" + sp.GetName() + ":" + strconv.FormatUint(uint64(sp.GetPort()), 10)
}

// WorkloadKey is the identity of a Workload in a NodePolicyDelta:
// "namespace/name".
func WorkloadKey(w *Workload) string { return w.GetNamespace() + "/" + w.GetName() }

// compareServices is NodePolicy's order of services: namespace, name, port.
func compareServices(a, b *ServicePort) int {
	return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetName(), b.GetName()), cmp.Compare(a.GetPort(), b.GetPort()))
}

func compareWorkloads(a, b *Workload) int {
	return cmp.Or(strings.Compare(a.GetNamespace(), b.GetNamespace()), strings.Compare(a.GetName(), b.GetName()), strings.Compare(a.GetUid(), b.GetUid()))
}

// ApplyDelta returns the policy that d makes of base, with every list in
// NodePolicy's canonical order. base is not modified; the result shares
// base's unchanged units and d's upserts, so neither may be modified
// afterwards. The result is not validated: the caller validates it like a
// full snapshot.
func ApplyDelta(base *NodePolicy, d *NodePolicyDelta) (*NodePolicy, error) {
	if base == nil {
		return nil, fmt.Errorf("%w: no base policy", ErrBadDelta)
	}
	out := &NodePolicy{
		Node:         base.GetNode(),
		TrustDomain:  base.GetTrustDomain(),
		TrustAnchors: base.GetTrustAnchors(),
	}
	if d.GetReplaceTrust() {
		out.TrustDomain, out.TrustAnchors = d.GetTrustDomain(), d.GetTrustAnchors()
	}
	var err, e error
	if out.Services, err = applyUnits(base.GetServices(), d.GetServices(), d.GetRemovedServices(), ServiceKey, compareServices); err != nil {
		err = fmt.Errorf("services: %w", err)
	}
	if out.Clusters, e = applyUnits(base.GetClusters(), d.GetClusters(), d.GetRemovedClusters(), (*Cluster).GetName,
		func(a, b *Cluster) int { return strings.Compare(a.GetName(), b.GetName()) }); e != nil {
		err = errors.Join(err, fmt.Errorf("clusters: %w", e))
	} else if out.Clusters, e = applyPatches(out.Clusters, d); e != nil {
		err = errors.Join(err, fmt.Errorf("cluster patches: %w", e))
	}
	if out.Workloads, e = applyUnits(base.GetWorkloads(), d.GetWorkloads(), d.GetRemovedWorkloads(), WorkloadKey, compareWorkloads); e != nil {
		err = errors.Join(err, fmt.Errorf("workloads: %w", e))
	}
	if out.Authz, e = applyUnits(base.GetAuthz(), d.GetAuthz(), d.GetRemovedAuthz(), (*AuthzPolicy).GetName,
		func(a, b *AuthzPolicy) int { return strings.Compare(a.GetName(), b.GetName()) }); e != nil {
		err = errors.Join(err, fmt.Errorf("authz: %w", e))
	}
	if out.NodeTunnels, e = applyTunnels(base.GetNodeTunnels(), d.GetNodeTunnels(), d.GetRemovedNodeTunnels()); e != nil {
		err = errors.Join(err, fmt.Errorf("node tunnels: %w", e))
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// applyUnits upserts and removes units of a list sorted by compare.
func applyUnits[U any, K comparable](base, upserts []U, removed []K, key func(U) K, compare func(a, b U) int) ([]U, error) {
	if len(upserts) == 0 && len(removed) == 0 {
		return base, nil
	}
	change := make(map[K]bool, len(upserts)+len(removed))
	for _, u := range upserts {
		k := key(u)
		if change[k] {
			return nil, fmt.Errorf("%w: %q upserted twice", ErrBadDelta, fmt.Sprint(k))
		}
		change[k] = true
	}
	gone := make(map[K]bool, len(removed))
	for _, k := range removed {
		if change[k] || gone[k] {
			return nil, fmt.Errorf("%w: %q removed twice or upserted and removed", ErrBadDelta, fmt.Sprint(k))
		}
		gone[k] = true
	}
	out := make([]U, 0, len(base)+len(upserts))
	found := 0
	for _, u := range base {
		k := key(u)
		if gone[k] {
			found++
			continue
		}
		if change[k] {
			continue
		}
		out = append(out, u)
	}
	if found != len(gone) {
		return nil, fmt.Errorf("%w: %d of %d removed units are not in the base", ErrBadDelta, len(gone)-found, len(gone))
	}
	out = append(out, upserts...)
	slices.SortStableFunc(out, compare)
	return out, nil
}

// EndpointKeyOf is the key of an endpoint in a ClusterPatch.
func EndpointKeyOf(e *Endpoint) *EndpointKey { return &EndpointKey{Ip: e.GetIp(), Port: e.GetPort()} }

// CompareEndpoints is Cluster's order of endpoints: ip (as a string), then
// port.
func CompareEndpoints(a, b *Endpoint) int {
	return cmp.Or(strings.Compare(a.GetIp(), b.GetIp()), cmp.Compare(a.GetPort(), b.GetPort()))
}

type endpointKey struct {
	ip   string
	port uint32
}

// applyPatches applies d's cluster patches to clusters (sorted by name,
// d's upserts and removals already applied). A patch must name a cluster
// of the base that d neither upserts nor removes, and remove only
// endpoints it has.
func applyPatches(clusters []*Cluster, d *NodePolicyDelta) ([]*Cluster, error) {
	patches := d.GetClusterPatches()
	if len(patches) == 0 {
		return clusters, nil
	}
	whole := make(map[string]bool, len(d.GetClusters())+len(d.GetRemovedClusters()))
	for _, c := range d.GetClusters() {
		whole[c.GetName()] = true
	}
	for _, n := range d.GetRemovedClusters() {
		whole[n] = true
	}
	out := slices.Clone(clusters)
	patched := make(map[string]bool, len(patches))
	for _, p := range patches {
		name := p.GetName()
		switch {
		case whole[name]:
			return nil, fmt.Errorf("%w: cluster %q patched and upserted or removed", ErrBadDelta, name)
		case patched[name]:
			return nil, fmt.Errorf("%w: cluster %q patched twice", ErrBadDelta, name)
		}
		patched[name] = true
		i, ok := SearchClusters(out, name)
		if !ok {
			return nil, fmt.Errorf("%w: patched cluster %q is not in the base", ErrBadDelta, name)
		}
		eps, err := patchEndpoints(out[i].GetEndpoints(), p)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		out[i] = &Cluster{Name: name, Protocol: out[i].GetProtocol(), Endpoints: eps}
	}
	return out, nil
}

// patchEndpoints applies p to base's endpoints, which must be in Cluster's
// order; so is the result.
func patchEndpoints(base []*Endpoint, p *ClusterPatch) ([]*Endpoint, error) {
	if !EndpointsInOrder(base) {
		return nil, fmt.Errorf("%w: the base's endpoints are not unique and sorted", ErrBadDelta)
	}
	removed := make([]endpointKey, len(p.GetRemovedEndpoints()))
	for i, r := range p.GetRemovedEndpoints() {
		removed[i] = endpointKey{r.GetIp(), r.GetPort()}
	}
	return applyUnits(base, p.GetEndpoints(), removed, func(e *Endpoint) endpointKey { return endpointKey{e.GetIp(), e.GetPort()} }, CompareEndpoints)
}

// EndpointsInOrder reports whether eps are strictly in Cluster's order, so
// unique by key: what a patched cluster must be.
func EndpointsInOrder(eps []*Endpoint) bool {
	for i := 1; i < len(eps); i++ {
		if CompareEndpoints(eps[i-1], eps[i]) >= 0 {
			return false
		}
	}
	return true
}

// SearchClusters finds the cluster named name in clusters, sorted by name
// as a NodePolicy lists them: its index, and whether it is there.
func SearchClusters(clusters []*Cluster, name string) (int, bool) {
	return slices.BinarySearchFunc(clusters, name, func(c *Cluster, n string) int { return strings.Compare(c.GetName(), n) })
}

func (k endpointKey) String() string {
	return net.JoinHostPort(k.ip, strconv.FormatUint(uint64(k.port), 10))
}

func applyTunnels(base, upserts map[string]string, removed []string) (map[string]string, error) {
	if len(upserts) == 0 && len(removed) == 0 {
		return base, nil
	}
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	for _, n := range removed {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%w: node %q removed but not in the base", ErrBadDelta, n)
		}
		if _, ok := upserts[n]; ok {
			return nil, fmt.Errorf("%w: node %q upserted and removed", ErrBadDelta, n)
		}
		delete(out, n)
	}
	maps.Copy(out, upserts)
	return out, nil
}

// Empty reports whether d changes nothing.
func (d *NodePolicyDelta) Empty() bool {
	return len(d.GetServices())+len(d.GetRemovedServices())+len(d.GetClusters())+len(d.GetRemovedClusters())+
		len(d.GetWorkloads())+len(d.GetRemovedWorkloads())+len(d.GetAuthz())+len(d.GetRemovedAuthz())+
		len(d.GetNodeTunnels())+len(d.GetRemovedNodeTunnels())+len(d.GetClusterPatches()) == 0 && !d.GetReplaceTrust()
}
