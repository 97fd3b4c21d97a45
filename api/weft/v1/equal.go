package weftv1

import "slices"

// EqualWorkload reports whether a and b have the same content, field by
// field: what proto.Equal says of two Workloads, at a fraction of its
// cost. The controller compares every node's workloads each time a pod
// changes (100,000 of them at issue #17's scale); TestEqualWorkloadSeesEveryField
// fails when a field is added here without being compared.
func EqualWorkload(a, b *Workload) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	return a.Namespace == b.Namespace && a.Name == b.Name && a.Uid == b.Uid &&
		a.ServiceAccount == b.ServiceAccount && a.Identity == b.Identity && slices.Equal(a.Ips, b.Ips) &&
		a.Workload == b.Workload && a.WorkloadKind == b.WorkloadKind && a.MtlsStrict == b.MtlsStrict &&
		len(a.unknownFields) == 0 && len(b.unknownFields) == 0
}
