package node

import (
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func running() corev1.ContainerState {
	return corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
}

func exited(code int32) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code}}
}

func waiting(reason string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}
}

func TestMainPhase(t *testing.T) {
	crashed := containerSnap{State: waiting("CrashLoopBackOff"), LastState: exited(1)}
	for _, tc := range []struct {
		name   string
		policy corev1.RestartPolicy
		cs     []containerSnap
		want   corev1.PodPhase
	}{
		{"creating", corev1.RestartPolicyAlways, []containerSnap{{State: waiting("ContainerCreating")}}, corev1.PodPending},
		{"image missing", corev1.RestartPolicyAlways, []containerSnap{{State: waiting("ErrImagePull")}}, corev1.PodPending},
		{"running", corev1.RestartPolicyAlways, []containerSnap{{State: running()}}, corev1.PodRunning},
		{"one running one creating", corev1.RestartPolicyAlways, []containerSnap{{State: running()}, {State: waiting("ContainerCreating")}}, corev1.PodPending},
		{"crash loop", corev1.RestartPolicyAlways, []containerSnap{crashed}, corev1.PodRunning},
		{"never succeeded", corev1.RestartPolicyNever, []containerSnap{{State: exited(0)}}, corev1.PodSucceeded},
		{"never failed", corev1.RestartPolicyNever, []containerSnap{{State: exited(0)}, {State: exited(3)}}, corev1.PodFailed},
		{"onfailure succeeded", corev1.RestartPolicyOnFailure, []containerSnap{{State: exited(0)}}, corev1.PodSucceeded},
	} {
		if got := mainPhase(tc.policy, tc.cs); got != tc.want {
			t.Errorf("%s: phase %s, want %s", tc.name, got, tc.want)
		}
	}
}

func cond(st corev1.PodStatus, typ corev1.PodConditionType) corev1.PodCondition {
	for _, c := range st.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return corev1.PodCondition{}
}

func TestPodStatus(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	pod := testPod()
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	in := statusInput{
		Pod:          pod,
		Main:         []containerSnap{{Name: "echo", State: running(), Ready: false, Started: true}},
		PodIP:        netip.MustParseAddr("10.244.1.2"),
		HostIP:       netip.MustParseAddr("172.30.0.11"),
		SandboxReady: true,
		StartTime:    t0,
		Now:          t0,
	}
	st := podStatus(in)
	if st.Phase != corev1.PodRunning || st.PodIP != "10.244.1.2" || st.HostIP != "172.30.0.11" || len(st.PodIPs) != 1 {
		t.Fatalf("status %+v", st)
	}
	if c := cond(st, corev1.PodReady); c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotReady" {
		t.Errorf("Ready = %+v, want False/ContainersNotReady", c)
	}
	if c := cond(st, corev1.PodScheduled); c.Status != corev1.ConditionTrue {
		t.Errorf("PodScheduled = %+v", c)
	}
	// Readiness flips: Ready turns True at the new time; unchanged
	// conditions keep their transition time.
	pod.Status = st
	in.Main[0].Ready = true
	in.Now = t1
	st2 := podStatus(in)
	if c := cond(st2, corev1.PodReady); c.Status != corev1.ConditionTrue || !c.LastTransitionTime.Equal(&t1) {
		t.Errorf("Ready after probe = %+v", c)
	}
	if c := cond(st2, corev1.PodInitialized); !c.LastTransitionTime.Equal(&t0) {
		t.Errorf("Initialized transition time moved: %+v", c)
	}
	if len(st2.ContainerStatuses) != 1 || !st2.ContainerStatuses[0].Ready {
		t.Errorf("containerStatuses %+v", st2.ContainerStatuses)
	}
	// A readiness gate that is not True keeps the pod unready.
	pod.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "example.com/gate"}}
	if c := cond(podStatus(in), corev1.PodReady); c.Status != corev1.ConditionFalse {
		t.Errorf("Ready with an unmet gate = %+v", c)
	}
	// Init containers: pending until they exit 0; failure with Never fails the pod.
	pod.Spec.ReadinessGates = nil
	in.Init = []containerSnap{{Name: "init", State: running()}}
	if st := podStatus(in); st.Phase != corev1.PodPending || cond(st, corev1.PodInitialized).Status != corev1.ConditionFalse {
		t.Errorf("init running: %s %+v", st.Phase, cond(st, corev1.PodInitialized))
	}
	pod.Spec.RestartPolicy = corev1.RestartPolicyNever
	in.Init[0].State = exited(1)
	if st := podStatus(in); st.Phase != corev1.PodFailed {
		t.Errorf("init failed with Never: %s", st.Phase)
	}
}
