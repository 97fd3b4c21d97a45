package node

import (
	"context"
	"errors"
	"fmt"
	"os"
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

// run starts the container's process, waits for it and restarts it as the
// restart policy says, with back-off.
func (c *container) run() {
	defer close(c.done)
	backoff := backoffStart
	first := true
	for !c.stopping() {
		argv, env, err := c.w.containerCommand(c.spec)
		if errors.Is(err, ErrImageNotMapped) {
			c.setWaiting("ErrImagePull", fmt.Sprintf("failed to pull image %q: %v", c.spec.Image, err))
			<-c.stopCh
			return
		}
		if err != nil {
			c.setWaiting("CreateContainerConfigError", err.Error())
			if !c.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		c.mu.Lock()
		if !first {
			c.instance++
		}
		instance := c.instance
		c.mu.Unlock()
		cmd, exited, err := c.launch(argv, env, instance)
		if err != nil {
			c.setWaiting("RunContainerError", err.Error())
			if !c.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, backoffMax)
			continue
		}
		startedAt := time.Now()
		c.update(func(s *containerSnap) {
			if !first {
				s.RestartCount++
			}
			s.ContainerID = fmt.Sprintf("weft-lab://%s-%s-%d", c.w.uid, c.spec.Name, instance)
			s.State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(startedAt).Rfc3339Copy()}}
			s.Started = true
			s.Ready = c.spec.ReadinessProbe == nil && !c.init
		})
		first = false
		probeCtx, cancelProbes := context.WithCancel(context.Background())
		if !c.init {
			c.w.startProbes(probeCtx, c)
		}
		werr := cmd.Wait()
		c.mu.Lock()
		c.alive = false
		c.mu.Unlock()
		cancelProbes()
		close(exited)
		code := exitCode(cmd, werr)
		c.mu.Lock()
		live := c.liveKill
		c.liveKill = false
		c.mu.Unlock()
		reason := "Completed"
		if code != 0 {
			reason = "Error"
		}
		term := &corev1.ContainerStateTerminated{
			ExitCode:    int32(code),
			Reason:      reason,
			StartedAt:   metav1.NewTime(startedAt).Rfc3339Copy(),
			FinishedAt:  metav1.Now().Rfc3339Copy(),
			ContainerID: fmt.Sprintf("weft-lab://%s-%s-%d", c.w.uid, c.spec.Name, instance),
		}
		if live {
			term.Message = "container failed its liveness probe and was restarted"
		}
		c.update(func(s *containerSnap) {
			s.State = corev1.ContainerState{Terminated: term}
			s.Ready = false
		})
		if c.stopping() || !shouldRestart(c.w.pod().Spec.RestartPolicy, c.init, code) {
			return
		}
		if time.Since(startedAt) > backoffReset {
			backoff = backoffStart
		}
		c.update(func(s *containerSnap) {
			s.LastState = corev1.ContainerState{Terminated: term}
			s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
				Reason:  "CrashLoopBackOff",
				Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", backoff, c.spec.Name, c.w.key),
			}}
		})
		if !c.sleep(backoff) {
			return
		}
		backoff = min(2*backoff, backoffMax)
	}
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

// launch starts one process instance, logging to its own file.
func (c *container) launch(argv, env []string, instance int) (*exec.Cmd, chan struct{}, error) {
	if err := os.MkdirAll(filepath.Dir(c.logPath(instance)), 0o755); err != nil {
		return nil, nil, err
	}
	logf, err := os.OpenFile(c.logPath(instance), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	defer logf.Close()
	path, err := lookPath(argv[0], c.w.k.cfg.pathDirs(c.spec.Image))
	if err != nil {
		return nil, nil, err
	}
	dir := c.spec.WorkingDir
	if dir == "" {
		dir = "/"
	}
	binds, err := c.w.binds(c.spec)
	if err != nil {
		return nil, nil, err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, nil, err
	}
	defer devnull.Close()
	cmd, err := startProc(procSpec{
		Argv:     append([]string{path}, argv[1:]...),
		Env:      env,
		Dir:      dir,
		Netns:    c.w.netns,
		Hostname: c.w.hostname(),
		Binds:    binds,
		Cgroup:   c.w.cgroup,
		Stdin:    devnull,
		Stdout:   logf,
		Stderr:   logf,
	})
	if err != nil {
		return nil, nil, err
	}
	exited := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.env, c.exited, c.alive = cmd, env, exited, true
	c.mu.Unlock()
	if c.stopping() { // stop ran while this process started
		c.kill(syscall.SIGTERM)
	}
	return cmd, exited, nil
}

// running returns the pid of the current process, or 0.
func (c *container) running() (int, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil || c.snap.State.Running == nil {
		return 0, nil
	}
	return c.cmd.Process.Pid, c.env
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
