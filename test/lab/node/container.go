package node

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	backoffStart = time.Second
	backoffMax   = 60 * time.Second
	backoffReset = 60 * time.Second // a container that ran this long restarts without delay growth
)

// container runs one container of a pod: its processes across restarts,
// its probes and its observed state.
type container struct {
	spec corev1.Container
	init bool
	w    *podWorker

	stopOnce sync.Once
	stopCh   chan struct{} // closed by stop
	done     chan struct{} // closed when run returns

	mu       sync.Mutex
	snap     containerSnap
	cmd      *exec.Cmd
	instance int           // index of the latest started process (log file name)
	exited   chan struct{} // closed when the current process exits
	env      []string      // environment of the current process (exec uses it)
	root     *execRoot     // image containers: root, user and capabilities of the current process
	started  bool          // run was called
	liveKill bool          // the current process was killed by its liveness probe
	alive    bool          // the current process has not been reaped
}

func newContainer(w *podWorker, spec corev1.Container, init bool) *container {
	reason := "ContainerCreating"
	if !init && len(w.pod().Spec.InitContainers) > 0 {
		reason = "PodInitializing"
	}
	return &container{
		spec:   spec,
		init:   init,
		w:      w,
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
		snap: containerSnap{
			Name:  spec.Name,
			Image: spec.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}},
		},
	}
}

// logPath is the log file of a process instance.
func (c *container) logPath(instance int) string {
	return filepath.Join(c.w.dir, "logs", c.spec.Name, fmt.Sprintf("%d.log", instance))
}

func (c *container) snapshot() containerSnap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

func (c *container) update(f func(*containerSnap)) {
	c.mu.Lock()
	f(&c.snap)
	c.mu.Unlock()
	c.w.notify()
}

func (c *container) setWaiting(reason, msg string) {
	c.update(func(s *containerSnap) {
		s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
		s.Ready = false
	})
}

// start launches run once.
func (c *container) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.started {
		return
	}
	c.started = true
	go c.run()
}

// sleep waits d or until stop; false means stopped.
func (c *container) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.stopCh:
		return false
	}
}

func (c *container) stopping() bool {
	select {
	case <-c.stopCh:
		return true
	default:
		return false
	}
}

// run gets the container's image, starts its process, waits for it and
// restarts it as the restart policy says, with back-off; every failure
// shows as the kubelet's waiting reason.
func (c *container) run() {
	defer close(c.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-c.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	var pullBackoff, crashBackoff backoff
	for attempt := 0; !c.stopping(); {
		img, err := c.w.k.containerImage(ctx, c.spec)
		if err != nil {
			if !c.imageFailed(err, &pullBackoff) {
				return
			}
			continue
		}
		pullBackoff.reset()
		p, reason, err := c.w.plan(c.spec, img)
		if err != nil {
			if !c.waitOut(waitState{}, waitState{reason, err.Error()}, crashBackoff.next()) {
				return
			}
			continue
		}
		term, ran := c.runOnce(p, attempt)
		attempt++
		if c.stopping() || !shouldRestart(c.w.pod().Spec.RestartPolicy, c.init, int(term.ExitCode)) {
			return
		}
		if ran > backoffReset {
			crashBackoff.reset()
		}
		if !c.crashLoop(term, crashBackoff.next()) {
			return
		}
	}
}

// backoff is the kubelet's restart and image pull back-off: doubling from
// backoffStart to backoffMax.
type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = backoffStart
	}
	d := b.d
	b.d = min(2*b.d, backoffMax)
	return d
}

func (b *backoff) reset() { b.d = 0 }

// waitState is a waiting reason and message.
type waitState struct{ reason, msg string }

// waitOut shows first (when set) for half of d, then then for the rest: a
// kubelet reports a failure on the sync that met it and its back-off on the
// syncs after. It returns false when the container is stopping.
func (c *container) waitOut(first, then waitState, d time.Duration) bool {
	if first.reason != "" {
		c.setWaiting(first.reason, first.msg)
		if !c.sleep(d / 2) {
			return false
		}
		d -= d / 2
	}
	c.setWaiting(then.reason, then.msg)
	return c.sleep(d)
}

// imageFailed reports why the image is not there as the kubelet does and
// waits out the pull back-off; false when the container is stopping (or
// can never start: an unmapped image without a store, a bad reference).
func (c *container) imageFailed(err error, b *backoff) bool {
	ref := c.spec.Image
	switch {
	case errors.Is(err, ErrImageNotMapped):
		c.setWaiting("ErrImagePull", fmt.Sprintf("failed to pull image %q: %v", ref, err))
	case errors.Is(err, errInvalidImageName):
		c.setWaiting("InvalidImageName", fmt.Sprintf("Failed to apply default image tag %q: %v", ref, err))
	case errors.Is(err, ErrImageNeverPull):
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", ref)
		return c.waitOut(waitState{}, waitState{"ErrImageNeverPull", msg}, b.next())
	default:
		msg := fmt.Sprintf("failed to pull image %q: %v", ref, err)
		return c.waitOut(waitState{"ErrImagePull", msg},
			waitState{"ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", ref, msg)}, b.next())
	}
	<-c.stopCh
	return false
}

// runOnce starts one instance of the container and waits for it to end. A
// start that fails is an instance too: terminated with exit code 128 and
// reason StartError, as containerd reports it.
func (c *container) runOnce(p launchPlan, attempt int) (*corev1.ContainerStateTerminated, time.Duration) {
	id := fmt.Sprintf("weft-lab://%s-%s-%d", c.w.uid, c.spec.Name, attempt)
	c.mu.Lock()
	c.instance = attempt
	c.mu.Unlock()
	cmd, exited, err := c.launch(p, attempt)
	if err != nil {
		term := &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", Message: err.Error(),
			StartedAt: metav1.NewTime(time.Unix(0, 0).UTC()), FinishedAt: metav1.Now().Rfc3339Copy(), ContainerID: id}
		c.update(func(s *containerSnap) {
			s.RestartCount, s.ContainerID, s.ImageID = int32(attempt), id, p.imageID
			s.State, s.Ready = corev1.ContainerState{Terminated: term}, false
		})
		return term, 0
	}
	startedAt := time.Now()
	c.update(func(s *containerSnap) {
		s.RestartCount, s.ContainerID, s.ImageID = int32(attempt), id, p.imageID
		s.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(startedAt).Rfc3339Copy()}}
		s.Started = true
		s.Ready = c.spec.ReadinessProbe == nil && !c.init
	})
	probeCtx, cancelProbes := context.WithCancel(context.Background())
	if !c.init {
		c.w.startProbes(probeCtx, c)
	}
	werr := cmd.Wait()
	c.mu.Lock()
	c.alive = false
	live := c.liveKill
	c.liveKill = false
	c.mu.Unlock()
	cancelProbes()
	close(exited)
	code := exitCode(cmd, werr)
	term := &corev1.ContainerStateTerminated{ExitCode: int32(code), Reason: "Completed",
		StartedAt: metav1.NewTime(startedAt).Rfc3339Copy(), FinishedAt: metav1.Now().Rfc3339Copy(), ContainerID: id}
	if code != 0 {
		term.Reason = "Error"
	}
	if live {
		term.Message = "container failed its liveness probe and was restarted"
	}
	c.update(func(s *containerSnap) {
		s.State = corev1.ContainerState{Terminated: term}
		s.Ready = false
	})
	return term, time.Since(startedAt)
}

// crashLoop waits out the restart back-off after an instance ended:
// RunContainerError (for a start that failed), then CrashLoopBackOff, with
// the instance as lastState.
func (c *container) crashLoop(term *corev1.ContainerStateTerminated, d time.Duration) bool {
	c.update(func(s *containerSnap) { s.LastState = corev1.ContainerState{Terminated: term} })
	var first waitState
	if term.Reason == "StartError" {
		first = waitState{"RunContainerError", term.Message}
	}
	return c.waitOut(first, waitState{"CrashLoopBackOff",
		fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", d, c.spec.Name, c.w.key)}, d)
}

// shouldRestart applies a pod's restartPolicy to an exited container. Init
// containers treat Always as OnFailure.
func shouldRestart(policy corev1.RestartPolicy, init bool, code int) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return code != 0
	default:
		return !init || code != 0
	}
}

func exitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return 128
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// execTarget is what an exec into the container's current process needs.
type execTarget struct {
	pid  int
	env  []string
	root *execRoot // nil for a container on the host filesystem
}

// running returns the current process (pid 0 when none is running).
func (c *container) running() execTarget {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.snap.State.Running == nil {
		return execTarget{}
	}
	return execTarget{pid: c.cmd.Process.Pid, env: c.env, root: c.root}
}

// kill signals the current process group.
func (c *container) kill(sig syscall.Signal) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd != nil && c.alive {
		_ = syscall.Kill(-c.cmd.Process.Pid, sig)
	}
}

// livenessFailed kills the current process so run restarts it.
func (c *container) livenessFailed() {
	c.mu.Lock()
	c.liveKill = true
	c.mu.Unlock()
	c.kill(syscall.SIGKILL)
}

// stop ends the container: SIGTERM, then SIGKILL after grace; it returns
// when run has returned.
func (c *container) stop(grace time.Duration) {
	c.stopOnce.Do(func() { close(c.stopCh) })
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if !started {
		return
	}
	c.kill(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
		return
	case <-t.C:
	}
	for {
		c.kill(syscall.SIGKILL)
		select {
		case <-c.done:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
