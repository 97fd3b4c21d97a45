package resolve

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Pod is what the controller reads of a pod: its metadata and the few
// fields of its spec and status that resolution, the Gateway resolution
// and the Gateway provisioner read. The controller caches every pod of the
// cluster (100,000 at the scale benchmark's) as a Pod, not a corev1.Pod:
// unsafe.Sizeof(corev1.Pod{}) is 1,240 bytes (PodSpec 592, PodStatus 384),
// nearly all of them zero fields once the rest of the pod is dropped, and
// such slimmed corev1.Pods were 147 MB of the controller's ~500 MB live
// heap. Under a memory limit, live heap is how often the GC runs.
//
// A field read of a pod anywhere in the controller must be here, copied by
// PodOf and compared by the source's podChanged.
type Pod struct {
	metav1.ObjectMeta
	// NodeName, ServiceAccountName and HostNetwork are the pod's spec's.
	NodeName           string
	ServiceAccountName string
	HostNetwork        bool
	// Phase, PodIP and PodIPs are the pod's status's.
	Phase  corev1.PodPhase
	PodIP  string
	PodIPs []string
	// Conditions are the pod's Ready conditions (no other type is read),
	// type and status only, in the pod's order.
	Conditions []PodCondition
}

// PodCondition is the type and status of one condition of a pod.
type PodCondition struct {
	Type   corev1.PodConditionType
	Status corev1.ConditionStatus
}

// Ready is the status of the pod's last Ready condition ("" when it has
// none), as resolution and the source's podChanged read it.
func (p *Pod) Ready() corev1.ConditionStatus {
	var st corev1.ConditionStatus
	for _, c := range p.Conditions {
		if c.Type == corev1.PodReady {
			st = c.Status
		}
	}
	return st
}

// PodOf is p as a Pod. The Pod shares p's metadata (its maps and slices),
// not its spec or status.
func PodOf(p *corev1.Pod) *Pod {
	return &Pod{
		ObjectMeta:         p.ObjectMeta,
		NodeName:           p.Spec.NodeName,
		ServiceAccountName: p.Spec.ServiceAccountName,
		HostNetwork:        p.Spec.HostNetwork,
		Phase:              interned(p.Status.Phase, corev1.PodPending, corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed, corev1.PodUnknown),
		PodIP:              p.Status.PodIP,
		PodIPs:             ipsOf(p.Status.PodIPs),
		Conditions:         readyConditions(p.Status.Conditions),
	}
}

func ipsOf(ips []corev1.PodIP) []string {
	if len(ips) == 0 {
		return nil
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.IP
	}
	return out
}

func readyConditions(conds []corev1.PodCondition) []PodCondition {
	var out []PodCondition
	for _, c := range conds {
		if c.Type == corev1.PodReady {
			status := interned(c.Status, corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown)
			out = append(out, PodCondition{Type: corev1.PodReady, Status: status})
		}
	}
	return out
}

// interned is s, as the constant of its value when it is one of known: the
// decoder allocates every pod's "Running" and "True" anew, and the cache
// would keep 100,000 of each alive.
func interned[S ~string](s S, known ...S) S {
	for _, k := range known {
		if s == k {
			return k
		}
	}
	return s
}

var _ runtime.Object = (*Pod)(nil)

// GetObjectKind is empty, as it is on the objects of typed informers; it
// is part of runtime.Object, which client-go's informer machinery may
// expect of cached objects.
func (p *Pod) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }

// DeepCopyObject is DeepCopy, as a runtime.Object.
func (p *Pod) DeepCopyObject() runtime.Object { return p.DeepCopy() }

// DeepCopy copies p and everything it points to.
func (p *Pod) DeepCopy() *Pod {
	if p == nil {
		return nil
	}
	out := new(Pod)
	p.DeepCopyInto(out)
	return out
}

// DeepCopyInto copies p into out, and everything p points to.
func (p *Pod) DeepCopyInto(out *Pod) {
	*out = *p
	p.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	out.PodIPs = slices.Clone(p.PodIPs)
	out.Conditions = slices.Clone(p.Conditions)
}
