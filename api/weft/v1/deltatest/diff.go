// Package deltatest holds the reference delta of two node policies, for
// tests of the deltas the controller sends and the agent applies.
package deltatest

import (
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Diff returns the delta that turns old into new (weftv1.ApplyDelta(old, Diff(old,
// new)) equals new up to list order), comparing units with proto.Equal.
// The controller's push server computes the same delta from encodings it
// shares between nodes; Diff is the reference it is tested against.
func Diff(old, new *weftv1.NodePolicy) *weftv1.NodePolicyDelta {
	d := &weftv1.NodePolicyDelta{}
	d.Services, d.RemovedServices = diffUnits(old.GetServices(), new.GetServices(), weftv1.ServiceKey)
	d.Clusters, d.RemovedClusters = diffUnits(old.GetClusters(), new.GetClusters(), (*weftv1.Cluster).GetName)
	d.Workloads, d.RemovedWorkloads = diffUnits(old.GetWorkloads(), new.GetWorkloads(), weftv1.WorkloadKey)
	d.Authz, d.RemovedAuthz = diffUnits(old.GetAuthz(), new.GetAuthz(), (*weftv1.AuthzPolicy).GetName)
	for n, a := range new.GetNodeTunnels() {
		if b, ok := old.GetNodeTunnels()[n]; !ok || a != b {
			if d.NodeTunnels == nil {
				d.NodeTunnels = map[string]string{}
			}
			d.NodeTunnels[n] = a
		}
	}
	for _, n := range slices.Sorted(maps.Keys(old.GetNodeTunnels())) {
		if _, ok := new.GetNodeTunnels()[n]; !ok {
			d.RemovedNodeTunnels = append(d.RemovedNodeTunnels, n)
		}
	}
	if old.GetTrustDomain() != new.GetTrustDomain() || !slices.EqualFunc(old.GetTrustAnchors(), new.GetTrustAnchors(), func(a, b []byte) bool { return string(a) == string(b) }) {
		d.ReplaceTrust, d.TrustDomain, d.TrustAnchors = true, new.GetTrustDomain(), new.GetTrustAnchors()
	}
	return d
}

func diffUnits[U proto.Message](old, new []U, key func(U) string) (upserts []U, removed []string) {
	before := make(map[string]U, len(old))
	for _, u := range old {
		before[key(u)] = u
	}
	now := make(map[string]bool, len(new))
	for _, u := range new {
		k := key(u)
		now[k] = true
		if b, ok := before[k]; !ok || !proto.Equal(b, u) {
			upserts = append(upserts, u)
		}
	}
	for _, u := range old {
		if k := key(u); !now[k] {
			removed = append(removed, k)
		}
	}
	return upserts, removed
}
