package node

import (
	"cmp"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// containerSnap is one container's observed state.
type containerSnap struct {
	Name         string
	Image        string
	ImageID      string // "" until the image is known
	ContainerID  string
	State        corev1.ContainerState
	LastState    corev1.ContainerState
	RestartCount int32
	Ready        bool
	Started      bool
}

// statusInput is everything a pod status is computed from.
type statusInput struct {
	Pod          *corev1.Pod // spec and the status last written
	Init, Main   []containerSnap
	PodIP        netip.Addr
	HostIP       netip.Addr
	SandboxReady bool
	StartTime    metav1.Time
	Now          metav1.Time
}

// podStatus computes the status a kubelet would report. Transition times
// are kept from the previous status when a condition did not change.
func podStatus(in statusInput) corev1.PodStatus {
	spec := in.Pod.Spec
	st := corev1.PodStatus{
		QOSClass:  in.Pod.Status.QOSClass,
		StartTime: &in.StartTime,
	}
	if in.HostIP.IsValid() {
		st.HostIP = in.HostIP.String()
		st.HostIPs = []corev1.HostIP{{IP: st.HostIP}}
	}
	if in.PodIP.IsValid() {
		st.PodIP = in.PodIP.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	for _, c := range in.Init {
		st.InitContainerStatuses = append(st.InitContainerStatuses, c.status())
	}
	for _, c := range in.Main {
		st.ContainerStatuses = append(st.ContainerStatuses, c.status())
	}
	initDone, initFailed := true, false
	for _, c := range in.Init {
		t := c.State.Terminated
		if t == nil || t.ExitCode != 0 {
			initDone = false
		}
		if t != nil && t.ExitCode != 0 && spec.RestartPolicy == corev1.RestartPolicyNever {
			initFailed = true
		}
	}
	switch {
	case initFailed:
		st.Phase = corev1.PodFailed
	case !initDone:
		st.Phase = corev1.PodPending
	default:
		st.Phase = mainPhase(spec.RestartPolicy, in.Main)
	}
	ready := initDone && len(in.Main) > 0
	for _, c := range in.Main {
		ready = ready && c.Ready
	}
	podReady := ready
	for _, g := range spec.ReadinessGates {
		ok := false
		for _, c := range in.Pod.Status.Conditions {
			if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
				ok = true
			}
		}
		podReady = podReady && ok
	}
	conds := []corev1.PodCondition{
		{Type: corev1.PodReadyToStartContainers, Status: boolCond(in.SandboxReady)},
		{Type: corev1.PodInitialized, Status: boolCond(initDone)},
		{Type: corev1.ContainersReady, Status: boolCond(ready)},
		{Type: corev1.PodReady, Status: boolCond(podReady)},
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
	}
	for i := range conds {
		conds[i].LastTransitionTime = in.Now
		if !ready && (conds[i].Type == corev1.ContainersReady || conds[i].Type == corev1.PodReady) {
			conds[i].Reason = "ContainersNotReady"
		}
		if !initDone && conds[i].Type == corev1.PodInitialized {
			conds[i].Reason = "ContainersNotInitialized"
		}
		for _, old := range in.Pod.Status.Conditions {
			if old.Type == conds[i].Type && old.Status == conds[i].Status {
				conds[i].LastTransitionTime = old.LastTransitionTime
			}
		}
	}
	// Conditions set by others (readiness gates, DisruptionTarget) stay.
	for _, old := range in.Pod.Status.Conditions {
		known := false
		for _, c := range conds {
			known = known || c.Type == old.Type
		}
		if !known {
			conds = append(conds, old)
		}
	}
	st.Conditions = conds
	return st
}

// mainPhase is the kubelet's phase rule for the regular containers.
func mainPhase(policy corev1.RestartPolicy, cs []containerSnap) corev1.PodPhase {
	var pending, running, waiting, stopped, succeeded int
	for _, c := range cs {
		switch {
		case c.State.Running != nil:
			running++
		case c.State.Terminated != nil:
			stopped++
			if c.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case c.LastState.Terminated != nil:
			waiting++ // restarting
		default:
			pending++
		}
	}
	switch {
	case pending > 0:
		return corev1.PodPending
	case running > 0 || waiting > 0:
		return corev1.PodRunning
	case stopped > 0 && stopped == len(cs):
		if policy == corev1.RestartPolicyAlways {
			return corev1.PodRunning
		}
		if succeeded == stopped {
			return corev1.PodSucceeded
		}
		if policy == corev1.RestartPolicyNever {
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

func (c containerSnap) status() corev1.ContainerStatus {
	started := c.Started
	return corev1.ContainerStatus{
		Name:                 c.Name,
		Image:                c.Image,
		ImageID:              cmp.Or(c.ImageID, c.Image),
		ContainerID:          c.ContainerID,
		State:                c.State,
		LastTerminationState: c.LastState,
		RestartCount:         c.RestartCount,
		Ready:                c.Ready,
		Started:              &started,
	}
}

func boolCond(b bool) corev1.ConditionStatus {
	if b {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}
