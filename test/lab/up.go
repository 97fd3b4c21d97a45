package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-mesh/weft/test/lab/cluster"
)

// UpConfig configures Up.
type UpConfig struct {
	Paths Paths
	Nodes int
	// Supervisor is the command that runs Serve, without the node flag, e.g.
	// [".cache/bin/weft-lab", "serve"]; Up appends "--nodes N".
	Supervisor []string
	Timeout    time.Duration // default 3m
	Progress   io.Writer     // optional progress lines
}

// ErrRunning means a lab of another size already runs.
var ErrRunning = errors.New("a lab is already running")

// Up starts the supervisor detached (its own session; it outlives the caller) unless a
// lab of the same size runs already, and returns once every node is Ready and CoreDNS is
// available. A lab that crashed is cleaned up by the new supervisor before it starts.
func Up(ctx context.Context, cfg UpConfig) (started bool, err error) {
	p := cfg.Paths
	if err := checkNodes(cfg.Nodes); err != nil {
		return false, err
	}
	if len(cfg.Supervisor) == 0 {
		return false, errors.New("no supervisor command")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 3 * time.Minute
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	if _, err := os.Stat(filepath.Join(p.K8sBinDir, "kube-apiserver")); err != nil {
		return false, fmt.Errorf("control-plane binaries missing in %s: run `make lab-binaries`", p.K8sBinDir)
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return false, err
	}
	// Concurrent up/down of the same lab take turns; a second up then finds the lab running.
	unlock, err := lockFile(ctx, p.cliLock(), true)
	if err != nil {
		return false, err
	}
	defer unlock()
	if st, err := ReadState(p); err == nil && st.Alive() {
		if st.Nodes != cfg.Nodes {
			return false, fmt.Errorf("%w with %d nodes (pid %d): `weft-lab down` first", ErrRunning, st.Nodes, st.PID)
		}
		fmt.Fprintf(progress, "lab already running (pid %d)\n", st.PID)
		return false, WaitReady(ctx, p, cfg.Nodes, cfg.Timeout)
	}
	_ = os.Remove(p.State)
	_ = os.Remove(p.Kubeconfig)
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return false, err
	}
	defer logf.Close()
	args := append(append([]string{}, cfg.Supervisor[1:]...), "--nodes", strconv.Itoa(cfg.Nodes))
	cmd := exec.Command(cfg.Supervisor[0], args...)
	cmd.Dir = p.Root
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("start lab supervisor: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaps it when the caller outlives it (tests)
	fmt.Fprintf(progress, "lab supervisor started (pid %d, log %s)\n", cmd.Process.Pid, p.Log)

	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	wctx, stopWait := context.WithCancel(ctx)
	defer stopWait()
	waitErr := make(chan error, 1)
	go func() { waitErr <- WaitReady(wctx, p, cfg.Nodes, cfg.Timeout) }()
	select {
	case err := <-waitErr:
		if err != nil {
			return true, fmt.Errorf("%w\n%s", err, tail(p.Log, 30))
		}
		return true, nil
	case err := <-exited:
		return true, fmt.Errorf("lab supervisor exited (%v):\n%s", err, tail(p.Log, 30))
	}
}

// WaitReady waits until the lab's n nodes are Ready and CoreDNS is available.
func WaitReady(ctx context.Context, p Paths, n int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "waiting for the kubeconfig"
	for {
		if msg, ok := readiness(ctx, p, n); ok {
			return nil
		} else if msg != "" {
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab not ready: %s", last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func readiness(ctx context.Context, p Paths, n int) (string, bool) {
	st, err := ReadState(p)
	if err == nil && st.Phase == PhaseFailed {
		return "supervisor failed: " + st.Error, false
	}
	if err != nil || st.Phase != PhaseRunning {
		return "", false
	}
	cs, err := Clientset(p)
	if err != nil {
		return err.Error(), false
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(rctx, metav1.ListOptions{})
	if err != nil {
		return err.Error(), false
	}
	if msg := NodesReady(nodes.Items, n); msg != "" {
		return msg, false
	}
	dep, err := cs.AppsV1().Deployments("kube-system").Get(rctx, "coredns", metav1.GetOptions{})
	if err != nil {
		return err.Error(), false
	}
	if !DeploymentAvailable(dep) {
		return "coredns not available yet", false
	}
	return "", true
}

// NodesReady returns "" when exactly the nodes lab-node-1..n exist and are Ready, or what
// is missing.
func NodesReady(nodes []corev1.Node, n int) string {
	ready := map[string]bool{}
	for _, nd := range nodes {
		for _, c := range nd.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready[nd.Name] = true
			}
		}
	}
	var missing []string
	for i := 1; i <= n; i++ {
		if !ready[NodeName(i)] {
			missing = append(missing, NodeName(i))
		}
	}
	if len(missing) > 0 {
		return "nodes not Ready: " + strings.Join(missing, ", ")
	}
	return ""
}

// DeploymentAvailable reports whether every desired replica of the current generation
// is updated and available.
func DeploymentAvailable(d *appsv1.Deployment) bool {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want
}

// Clientset is an admin clientset for the running lab.
func Clientset(p Paths) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", p.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load lab kubeconfig: %w", err)
	}
	return kubernetes.NewForConfig(cfg)
}

// Down stops the supervisor (SIGTERM, then SIGKILL after timeout) and cleans up
// everything a lab may have left, whether or not a supervisor was running.
func Down(p Paths, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Minute)
	defer cancel()
	unlock, err := lockFile(ctx, p.cliLock(), true)
	if err != nil {
		return err
	}
	defer unlock()
	if st, err := ReadState(p); err == nil && st.Alive() {
		_ = syscall.Kill(st.PID, syscall.SIGTERM)
		deadline := time.Now().Add(timeout)
		for st.Alive() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if st.Alive() {
			_ = syscall.Kill(st.PID, syscall.SIGKILL)
			for i := 0; st.Alive() && i < 100; i++ {
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	if err := cleanupLeftovers(p); err != nil {
		return err
	}
	for _, f := range []string{p.State, p.Kubeconfig} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// Status describes the lab for `weft-lab status`.
func Status(ctx context.Context, p Paths) (string, error) {
	st, err := ReadState(p)
	if errors.Is(err, os.ErrNotExist) {
		return "no lab running", nil
	}
	if err != nil {
		return "", err
	}
	var b strings.Builder
	alive := st.Alive()
	fmt.Fprintf(&b, "supervisor: pid %d, %s", st.PID, st.Phase)
	if !alive {
		b.WriteString(" (not running: stale state, the next `weft-lab up` cleans it up)")
	}
	if st.Error != "" {
		fmt.Fprintf(&b, "\nerror: %s", st.Error)
	}
	fmt.Fprintf(&b, "\nstarted: %s\nkubeconfig: %s\napiserver: https://%s\n", st.Started.Format(time.RFC3339), p.Kubeconfig, cluster.APIServerAddr)
	if !alive {
		return b.String(), nil
	}
	if rss, procs := treeRSS(st.PID); procs > 0 {
		fmt.Fprintf(&b, "memory: %d MiB RSS in %d processes\n", rss>>20, procs)
	}
	if recs, err := cluster.ReadPIDs(p.CPDir); err == nil {
		b.WriteString(controlPlaneStatus(recs))
	}
	b.WriteString(registryStatus(ctx))
	cs, err := Clientset(p)
	if err != nil {
		return b.String(), nil
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	nodes, err := cs.CoreV1().Nodes().List(rctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(&b, "nodes: %v\n", err)
		return b.String(), nil
	}
	for _, n := range nodes.Items {
		ready := "NotReady"
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = "Ready"
			}
		}
		fmt.Fprintf(&b, "node %s: %s\n", n.Name, ready)
	}
	if svcs, err := cs.CoreV1().Services("").List(rctx, metav1.ListOptions{}); err == nil {
		pool := cluster.LoadBalancerPool
		fmt.Fprintf(&b, "load balancers: %d of %d addresses of %s in use (reachable from this host)\n",
			cluster.LoadBalancersInUse(svcs.Items, pool), cluster.PoolSize(pool), pool)
	}
	return b.String(), nil
}

// controlPlaneStatus is one line per control-plane process: pid, whether it runs, and
// how often the supervisor restarted it.
func controlPlaneStatus(recs []cluster.PIDRecord) string {
	var b strings.Builder
	for _, r := range recs {
		state := "running"
		if r.PID == 0 || !r.Running() {
			state = "not running"
		}
		fmt.Fprintf(&b, "%s: pid %d, %s", r.Name, r.PID, state)
		if r.Restarts > 0 {
			fmt.Fprintf(&b, ", %d restarts (last: %s)", r.Restarts, r.LastExit)
		}
		b.WriteString("\n")
	}
	return b.String()
}
