package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podWorker owns one pod on the node: its sandbox, containers and status.
type podWorker struct {
	k   *kubelet
	uid types.UID
	key string // namespace/name
	log *slog.Logger

	notifyCh chan struct{}

	mu       sync.Mutex
	latest   *corev1.Pod
	gone     bool // deleted from the apiserver
	init     []*container
	main     []*container
	ready    bool // sandbox, cgroup and volumes are set up
	vols     *volumes
	setupMsg string

	// Set once by setup, read-only afterwards.
	dir    string // state directory of the pod
	netns  string // netns file the containers join
	cgroup string
	podIP  netip.Addr
	sb     *sandbox
	resolv string // resolv.conf file, "" for the host's
	// /etc/hosts and /etc/hostname of the pod's image containers.
	hostsFile, hostnameFile string
	startTime               metav1.Time

	written *corev1.PodStatus // last status written
}

func newPodWorker(k *kubelet, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		k:         k,
		uid:       pod.UID,
		key:       pod.Namespace + "/" + pod.Name,
		log:       k.log.With("pod", pod.Namespace+"/"+pod.Name),
		notifyCh:  make(chan struct{}, 1),
		latest:    pod,
		dir:       filepath.Join(k.cfg.StateDir, "pods", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID)),
		cgroup:    podCgroup(k.cfg.CgroupRoot, k.cfg.Name, string(pod.UID)),
		startTime: metav1.Now().Rfc3339Copy(),
	}
	for _, c := range pod.Spec.InitContainers {
		w.init = append(w.init, newContainer(w, c, true))
	}
	for _, c := range pod.Spec.Containers {
		w.main = append(w.main, newContainer(w, c, false))
	}
	return w
}

func (w *podWorker) pod() *corev1.Pod {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest
}

func (w *podWorker) setPod(pod *corev1.Pod) {
	w.mu.Lock()
	w.latest = pod
	w.mu.Unlock()
	w.notify()
}

func (w *podWorker) setGone() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	w.notify()
}

func (w *podWorker) notify() {
	select {
	case w.notifyCh <- struct{}{}:
	default:
	}
}

// loop syncs the pod on every change and every few seconds until it is
// deleted or the node stops.
func (w *podWorker) loop(ctx context.Context) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			w.teardown(2*time.Second, false)
			return
		case <-w.notifyCh:
		case <-tick.C:
		}
		if w.sync(ctx) {
			return
		}
	}
}

// container finds a container by name.
func (w *podWorker) container(name string) *container {
	for _, c := range append(append([]*container{}, w.init...), w.main...) {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

// sync moves the pod one step towards its spec and writes its status.
// It returns true once the pod is gone.
func (w *podWorker) sync(ctx context.Context) bool {
	w.mu.Lock()
	pod, gone := w.latest, w.gone
	w.mu.Unlock()
	if gone || pod.DeletionTimestamp != nil {
		w.teardown(gracePeriod(pod), true)
		if !gone {
			uid := pod.UID
			err := w.k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
				GracePeriodSeconds: new(int64),
				Preconditions:      &metav1.Preconditions{UID: &uid},
			})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				w.log.Error("delete pod", "err", err)
				return false // retried on the next tick
			}
		}
		w.k.forget(w)
		return true
	}
	if !w.ready && (pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed) {
		return false // finished before this node (re)started: never run it again
	}
	if !w.ready {
		if err := w.setup(ctx, pod); err != nil {
			w.mu.Lock()
			w.setupMsg = err.Error()
			w.mu.Unlock()
			w.log.Warn("set up pod", "err", err)
			for _, c := range append(append([]*container{}, w.init...), w.main...) {
				c.update(func(s *containerSnap) {
					if s.State.Waiting != nil {
						s.State.Waiting.Message = err.Error()
					}
				})
			}
			w.writeStatus(ctx)
			return false
		}
		w.ready = true
	}
	if err := w.vols.refresh(ctx, pod); err != nil {
		w.log.Warn("refresh volumes", "err", err)
	}
	initDone := true
	for _, c := range w.init {
		c.start()
		s := c.snapshot()
		if s.State.Terminated != nil && s.State.Terminated.ExitCode == 0 {
			continue
		}
		initDone = false
		break
	}
	if initDone {
		for _, c := range w.main {
			c.start()
		}
	}
	w.writeStatus(ctx)
	return false
}

// gracePeriod is how long containers get between SIGTERM and SIGKILL.
func gracePeriod(pod *corev1.Pod) time.Duration {
	switch {
	case pod.DeletionGracePeriodSeconds != nil:
		return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	case pod.Spec.TerminationGracePeriodSeconds != nil:
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return 30 * time.Second
}

// setup creates the pod's cgroup, netns and volumes.
func (w *podWorker) setup(ctx context.Context, pod *corev1.Pod) error {
	cfg := w.k.cfg
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return err
	}
	if w.netns == "" {
		// Processes a crashed run of this node left in the pod cgroup.
		if err := removeCgroupTree(w.cgroup); err != nil {
			return fmt.Errorf("remove stale pod cgroup: %w", err)
		}
	}
	if err := os.MkdirAll(w.cgroup, 0o755); err != nil {
		return fmt.Errorf("create pod cgroup: %w", err)
	}
	if w.netnsFile() == "" {
		if pod.Spec.HostNetwork {
			if sc := pod.Spec.SecurityContext; sc != nil && len(sc.Sysctls) > 0 {
				return fmt.Errorf("pod sysctls %v: a hostNetwork pod cannot set network sysctls (they would change the node's)", sc.Sysctls)
			}
			w.mu.Lock()
			w.podIP, w.netns = cfg.NodeIP, netnsPath(nodeNetns(cfg.Name))
			w.mu.Unlock()
		} else {
			sb, err := w.createNetwork(ctx, pod)
			if err != nil {
				return err
			}
			if err := applySysctls(netnsPath(sb.Netns), pod); err != nil {
				w.deleteNetwork(sb)
				return err
			}
			w.mu.Lock()
			w.sb, w.podIP, w.netns = &sb, sb.IP, netnsPath(sb.Netns)
			w.mu.Unlock()
		}
	}
	if content := resolvConf(pod, cfg.ClusterDNS, cfg.ClusterDomain); content != "" {
		w.resolv = filepath.Join(w.dir, "resolv.conf")
		if err := os.WriteFile(w.resolv, []byte(content), 0o644); err != nil {
			return err
		}
	}
	if err := w.writeEtcFiles(pod); err != nil {
		return err
	}
	if w.vols == nil {
		w.vols = newVolumes(w.k.client, filepath.Join(w.dir, "volumes"), w.podIP, cfg.NodeIP)
		w.vols.hostPath = func(p string) string { return hostPathOf(cfg, p) }
	}
	return w.vols.refresh(ctx, pod)
}

// createNetwork gives the pod its netns and network: through the node's
// CNI (cni.go), or wired directly when the node has no CNI plugins.
func (w *podWorker) createNetwork(ctx context.Context, pod *corev1.Pod) (sandbox, error) {
	if w.k.cfg.CNIPluginDir != "" {
		return w.k.cniAdd(ctx, pod)
	}
	ip, err := w.k.allocate(pod)
	if err != nil {
		return sandbox{}, err
	}
	sb, err := createSandbox(w.k.cfg.Name, string(pod.UID), ip)
	if err != nil {
		w.k.release(ip)
		return sb, fmt.Errorf("create pod network: %w", err)
	}
	return sb, nil
}

// deleteNetwork undoes createNetwork (CNI DEL, then the netns).
func (w *podWorker) deleteNetwork(sb sandbox) {
	if w.k.cfg.CNIPluginDir != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.k.cniDel(ctx, w.pod(), sb); err != nil {
			w.log.Error("remove pod network", "err", err)
		}
		return
	}
	if err := deleteSandbox(sb); err != nil {
		w.log.Error("remove pod netns", "err", err)
	}
	w.k.release(sb.IP)
}

// safeSysctls are the network sysctls a kubelet allows every pod (its
// "safe" set); the lab applies them in the pod's network namespace, as the
// runtime does. Others are refused, as a kubelet without
// --allowed-unsafe-sysctls refuses them.
var safeSysctls = map[string]bool{
	"net.ipv4.ip_local_port_range": true, "net.ipv4.tcp_syncookies": true, "net.ipv4.ping_group_range": true,
	"net.ipv4.ip_unprivileged_port_start": true, "net.ipv4.ip_local_reserved_ports": true,
	"net.ipv4.tcp_keepalive_time": true, "net.ipv4.tcp_fin_timeout": true, "net.ipv4.tcp_keepalive_intvl": true,
	"net.ipv4.tcp_keepalive_probes": true,
}

// applySysctls sets the pod's securityContext.sysctls in its netns.
func applySysctls(netns string, pod *corev1.Pod) error {
	sc := pod.Spec.SecurityContext
	if sc == nil {
		return nil
	}
	for _, s := range sc.Sysctls {
		if !safeSysctls[s.Name] {
			return fmt.Errorf("pod sysctl %s is forbidden: the lab's kubelet allows only the safe network sysctls", s.Name)
		}
		if err := writeSysctl(netns, s.Name, s.Value); err != nil {
			return err
		}
	}
	return nil
}

// writeEtcFiles writes the pod's /etc/hosts and /etc/hostname, as the
// kubelet and containerd do for every pod.
func (w *podWorker) writeEtcFiles(pod *corev1.Pod) error {
	hostname := w.hostname()
	var nodeHosts []byte
	if pod.Spec.HostNetwork {
		hostname, _ = os.Hostname()
		nodeHosts, _ = os.ReadFile("/etc/hosts")
	}
	w.hostsFile, w.hostnameFile = filepath.Join(w.dir, "hosts"), filepath.Join(w.dir, "hostname")
	hosts := hostsFile(pod, w.podIP, hostname, w.k.cfg.ClusterDomain, nodeHosts)
	if err := os.WriteFile(w.hostsFile, []byte(hosts), 0o644); err != nil {
		return err
	}
	return os.WriteFile(w.hostnameFile, []byte(hostname+"\n"), 0o644)
}

// netnsFile is the netns file of the pod ("" before setup).
func (w *podWorker) netnsFile() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.netns
}

// teardown stops the containers and removes the cgroup and netns. With
// remove the pod's state directory goes too.
func (w *podWorker) teardown(grace time.Duration, remove bool) {
	var wg sync.WaitGroup
	for _, c := range append(append([]*container{}, w.init...), w.main...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stop(grace)
		}()
	}
	wg.Wait()
	if err := removeCgroupTree(w.cgroup); err != nil {
		w.log.Error("remove pod cgroup", "err", err)
	}
	if w.sb != nil {
		w.deleteNetwork(*w.sb)
		w.sb = nil
	}
	// The containers' overlays went with their mount namespaces (their
	// last processes are gone); their upper and work dirs go now.
	if err := os.RemoveAll(filepath.Join(w.dir, "containers")); err != nil {
		w.log.Error("remove container filesystems", "err", err)
	}
	if remove {
		_ = os.RemoveAll(w.dir)
	}
}

// hostname is the hostname of the pod's containers: spec.hostname or the
// pod name, truncated to 63 bytes; "" (the host's) for hostNetwork pods.
func (w *podWorker) hostname() string {
	pod := w.pod()
	if pod.Spec.HostNetwork {
		return ""
	}
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// containerCommand computes argv and env of a container of img. A pulled
// image's ENV is merged in later (mergeImageEnv): $(VAR) references see
// only the pod's variables, as with the kubelet.
func (w *podWorker) containerCommand(c corev1.Container, img containerImage) ([]string, []string, error) {
	pod := w.pod()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	envList, env, err := containerEnv(pod, c, envFacts{
		PodIP:      w.podIP,
		HostIP:     w.k.cfg.NodeIP,
		APIService: w.k.apiService(ctx),
		PathDirs:   append(append([]string{}, img.Path...), w.k.cfg.PathDirs...),
		ImagePath:  img.pulled != nil,
		Lookup: func(kind, name, key string) (string, bool, error) {
			all, ok, err := w.k.objectData(ctx, pod.Namespace, kind, name)
			if err != nil || !ok {
				return "", ok, err
			}
			v, ok := all[key]
			return v, ok, nil
		},
		All: func(kind, name string) (map[string]string, bool, error) {
			return w.k.objectData(ctx, pod.Namespace, kind, name)
		},
	})
	if err != nil {
		return nil, nil, err
	}
	argv, err := containerArgv(c, img.Image, env)
	if err != nil {
		return nil, nil, err
	}
	return argv, envList, nil
}

// volumeMounts resolves a container's volumeMounts to their host sources.
// mountPropagation HostToContainer (and Bidirectional, which the lab does
// not support) become rslave mounts in image containers, None rprivate.
func (w *podWorker) volumeMounts(c corev1.Container) ([]bindMount, error) {
	var out []bindMount
	for _, m := range c.VolumeMounts {
		src, ok := w.vols.path(m.Name)
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: no volume %q in the pod", m.MountPath, m.Name)
		}
		if m.SubPath != "" {
			src = filepath.Join(src, m.SubPath)
		}
		prop := m.MountPropagation != nil && *m.MountPropagation != corev1.MountPropagationNone
		out = append(out, bindMount{Source: src, Target: m.MountPath, ReadOnly: m.ReadOnly, Propagate: prop})
	}
	return out, nil
}

// binds lists the bind mounts of a host-filesystem container's private
// mount namespace, creating missing mount points on the host.
func (w *podWorker) binds(c corev1.Container) ([]bindMount, error) {
	var out []bindMount
	if w.resolv != "" {
		out = append(out, bindMount{Source: w.resolv, Target: "/etc/resolv.conf", ReadOnly: true})
	}
	vols, err := w.volumeMounts(c)
	if err != nil {
		return nil, err
	}
	for _, m := range vols {
		if filepath.Clean(m.Source) == filepath.Clean(m.Target) && !m.ReadOnly {
			continue // a hostPath at its own path: already visible
		}
		st, err := os.Stat(m.Source)
		if err != nil {
			return nil, fmt.Errorf("volumeMount %s: %w", m.Target, err)
		}
		if err := ensureMountPoint(m.Target, st.IsDir()); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}

// ensureMountPoint creates a missing mount point (an empty directory or file)
// relative to the calling thread's root: the host's, or an image container's.
func ensureMountPoint(p string, dir bool) error {
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if dir {
		return os.MkdirAll(p, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("create mount point %s: %w", p, err)
	}
	return f.Close()
}

// writeStatus computes the pod status and writes it when it changed.
func (w *podWorker) writeStatus(ctx context.Context) {
	pod := w.pod()
	in := statusInput{
		Pod:          pod,
		PodIP:        w.podIP,
		HostIP:       w.k.cfg.NodeIP,
		SandboxReady: w.ready,
		StartTime:    w.startTime,
		Now:          metav1.Now().Rfc3339Copy(),
	}
	if pod.Status.StartTime != nil {
		in.StartTime = *pod.Status.StartTime
	}
	for _, c := range w.init {
		in.Init = append(in.Init, c.snapshot())
	}
	for _, c := range w.main {
		in.Main = append(in.Main, c.snapshot())
	}
	st := podStatus(in)
	if equality.Semantic.DeepEqual(st, pod.Status) || (w.written != nil && equality.Semantic.DeepEqual(st, *w.written)) {
		return
	}
	for attempt := 0; attempt < 3; attempt++ {
		upd := pod.DeepCopy()
		upd.Status = st
		_, err := w.k.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, upd, metav1.UpdateOptions{})
		if err == nil {
			w.written = &st
			return
		}
		if apierrors.IsNotFound(err) {
			return
		}
		if !apierrors.IsConflict(err) {
			w.log.Warn("write pod status", "err", err)
			return
		}
		fresh, gerr := w.k.client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if gerr != nil || fresh.UID != pod.UID {
			return
		}
		// Recompute from the fresh pod: conditions others set meanwhile
		// (readiness gates, weft.dev/Enrolled) must survive the retry.
		pod = fresh
		in.Pod = fresh
		if fresh.Status.StartTime != nil {
			in.StartTime = *fresh.Status.StartTime
		}
		st = podStatus(in)
	}
}

// errPodGone is returned for requests about a pod this node does not run.
var errPodGone = errors.New("pod not found on this node")
