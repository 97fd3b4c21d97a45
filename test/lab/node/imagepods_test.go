package node

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// goodPodFiles are the files the good pod's probe reports.
var goodPodFiles = []string{"/srv/data/marker", "/work", "/cfg/greeting", "/sec/password",
	"/var/run/secrets/kubernetes.io/serviceaccount/token", "/weft-probe-host/marker",
	"/etc/resolv.conf", "/etc/hostname", "/etc/hosts", "/proc/sys/net/ipv4/ip_unprivileged_port_start"}

// TestPrivilegedImagePodsRunInTheirImage pulls a two-platform image from a
// registry and runs it on two nodes at once: inside its own root
// filesystem, as its image user, with the pod's volumes and files, the
// capabilities containerd gives, and exec (kubectl exec and exec probes)
// inside that root.
func TestPrivilegedImagePodsRunInTheirImage(t *testing.T) {
	lab := startImageLab(t)
	probe := buildProbe(t)
	ref := lab.reg + "/lab/app:v1"
	app := testImage(t, runtime.GOARCH, appConfig(), appLayer(t, probe))
	other := testImage(t, otherArch(), appConfig(), testLayer(t, tarFile{Name: "wrong-arch", Body: "x"}))
	pushIndex(t, ref, other, app)
	hostDir := filepath.Join(t.TempDir(), "host")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hostDir, "marker"), []byte("from-the-host"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, yes := int64(0), true
	lab.create(
		lab.pod("good", 0, ref, goodPodSpec(hostDir)),
		lab.pod("rootcaps", 1, ref, withSecurity(&corev1.SecurityContext{RunAsUser: &root,
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN"}}})),
		lab.pod("rootdefault", 0, ref, withSecurity(&corev1.SecurityContext{RunAsUser: &root})),
		lab.pod("privileged", 1, ref, withSecurity(&corev1.SecurityContext{RunAsUser: &root, Privileged: &yes})),
	)
	waitFor(t, "good Ready (exec readiness probe inside the image)", 60*time.Second, func() (bool, error) {
		for _, c := range lab.get("good").Status.Conditions {
			if c.Type == corev1.PodReady {
				return c.Status == corev1.ConditionTrue, fmt.Errorf("%+v", c)
			}
		}
		return false, nil
	})
	checkGoodReport(t, lab, lab.report("good", 0))
	checkCaps(t, "rootcaps", lab.report("rootcaps", 1), 0, capsOf("NET_ADMIN"), capsOf("NET_ADMIN"))
	checkCaps(t, "rootdefault", lab.report("rootdefault", 0), 0, defaultCaps, defaultCaps)
	priv := lab.report("privileged", 1)
	checkCaps(t, "privileged", priv, 0, allCaps, allCaps)
	if _, err := os.Stat("/dev/kmsg"); err == nil && !slices.Contains(priv.Dev, "kmsg") {
		t.Errorf("a privileged container lacks the host's devices: %v", priv.Dev)
	}
	if s := lab.get("good").Status.ContainerStatuses[0]; !strings.HasPrefix(s.ImageID, lab.reg+"/lab/app@sha256:") {
		t.Errorf("good imageID %q, want the repository digest", s.ImageID)
	}
	checkExec(t, lab)
	if _, err := os.Stat("/weft-probe-host"); err == nil {
		t.Error("a container's mount point was created on the host")
	}
	checkImageCleanup(t, lab)
}

// goodPodSpec: the image's user, a read-only root, no privilege
// escalation, supplemental groups and every kind of volume.
func goodPodSpec(hostDir string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		ro, no, fsGroup := true, false, int64(2000)
		expiry := int64(3600)
		p.Spec.ServiceAccountName = "default"
		p.Spec.SecurityContext = &corev1.PodSecurityContext{SupplementalGroups: []int64{1234}, FSGroup: &fsGroup,
			Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}}
		p.Spec.Volumes = []corev1.Volume{
			{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
			{Name: "sec", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "sec"}}},
			{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: hostDir}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &expiry}},
			}}}},
		}
		c := &p.Spec.Containers[0]
		c.SecurityContext = &corev1.SecurityContext{ReadOnlyRootFilesystem: &ro, AllowPrivilegeEscalation: &no}
		c.Env = []corev1.EnvVar{{Name: "POD_VAR", Value: "from-pod"},
			{Name: "PROBE_FILES", Value: strings.Join(goodPodFiles, ":")},
			{Name: "PROBE_WRITE", Value: "/probe-write:/scratch/x"}}
		c.VolumeMounts = []corev1.VolumeMount{
			{Name: "cfg", MountPath: "/cfg"}, {Name: "sec", MountPath: "/sec", ReadOnly: true},
			{Name: "host", MountPath: "/weft-probe-host"}, {Name: "scratch", MountPath: "/scratch"},
			{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
		}
		c.ReadinessProbe = &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
			Command: []string{"probe", "check", "/srv/data/marker"}, // a bare name: found through the image's PATH only
		}}}
	}
}

func withSecurity(sc *corev1.SecurityContext) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.Containers[0].SecurityContext = sc }
}

func checkGoodReport(t *testing.T, lab *imageLab, r probeReport) {
	t.Helper()
	pod := lab.get("good")
	if r.UID != 65532 || r.GID != 65532 || !slices.Equal(r.Groups, []int{1234, 2000, 65532}) || r.Cwd != "/srv" {
		t.Errorf("good runs as %d:%d groups %v in %s, want 65532:65532 [1234 2000 65532] in /srv", r.UID, r.GID, r.Groups, r.Cwd)
	}
	want := map[string]string{
		"/srv/data/marker":        "image-marker",
		"/work":                   "error: open /work: no such file or directory",
		"/cfg/greeting":           "hello",
		"/sec/password":           "s3cret",
		"/weft-probe-host/marker": "from-the-host",
		"/etc/resolv.conf":        "nameserver 10.96.0.10\nsearch " + lab.ns + ".svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
		"/etc/hostname":           "good\n",
		// the pod's sysctl, in its own netns (a non-root gateway binds :80 so)
		"/proc/sys/net/ipv4/ip_unprivileged_port_start": "0\n",
	}
	for f, w := range want {
		if r.Files[f] != w {
			t.Errorf("good reads %s = %q, want %q", f, r.Files[f], w)
		}
	}
	if tok := r.Files["/var/run/secrets/kubernetes.io/serviceaccount/token"]; len(tok) < 100 || strings.HasPrefix(tok, "error") {
		t.Errorf("good reads token %q", tok)
	}
	if !strings.Contains(r.Files["/etc/hosts"], pod.Status.PodIP+"\tgood\n") {
		t.Errorf("good /etc/hosts lacks its pod IP %s:\n%s", pod.Status.PodIP, r.Files["/etc/hosts"])
	}
	if !strings.Contains(r.Writes["/probe-write"], "read-only file system") || r.Writes["/scratch/x"] != "ok" {
		t.Errorf("writes: %v, want / read-only and the emptyDir writable", r.Writes)
	}
	for _, e := range []string{"IMAGE_VAR=from-image", "POD_VAR=from-pod", "PATH=/app:/usr/bin:/bin", "HOME=/home/nonroot", "HOSTNAME=good"} {
		if !slices.Contains(r.Env, e) {
			t.Errorf("good env lacks %s: %q", e, r.Env)
		}
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd"} {
		if !slices.Contains(r.Dev, d) {
			t.Errorf("good /dev lacks %s: %v", d, r.Dev)
		}
	}
	if !r.HostPID1 || r.Hostname != "good" {
		t.Errorf("good sees /proc/1: %v, hostname %q", r.HostPID1, r.Hostname)
	}
	checkCaps(t, "good", r, 0, 0, defaultCaps)
	if r.Status["NoNewPrivs"] != "1" {
		t.Errorf("good NoNewPrivs = %q", r.Status["NoNewPrivs"])
	}
}

// checkCaps compares a report's capability sets (inheritable must be empty).
func checkCaps(t *testing.T, pod string, r probeReport, inh, eff, bnd capSet) {
	t.Helper()
	for field, want := range map[string]capSet{"CapInh": inh, "CapEff": eff, "CapPrm": eff, "CapBnd": bnd & allHostCaps()} {
		got, err := strconv.ParseUint(r.Status[field], 16, 64)
		if err != nil || capSet(got) != want&allHostCaps() {
			t.Errorf("%s %s = %s, want %016x", pod, field, r.Status[field], uint64(want&allHostCaps()))
		}
	}
}

// allHostCaps is this process's bounding set: a container never gets more.
func allHostCaps() capSet {
	b, _ := os.ReadFile("/proc/self/status")
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return capSet(n)
		}
	}
	return allCaps
}

// checkExec runs kubectl-exec style commands in the good pod: inside its
// root, as its user, in its working directory, programs found there only.
func checkExec(t *testing.T, lab *imageLab) {
	t.Helper()
	out, err := lab.exec(0, "good", "probe", "report")
	if err != nil || !strings.Contains(out, `"UID":65532`) || !strings.Contains(out, `"Cwd":"/srv"`) ||
		!strings.Contains(out, `"/srv/data/marker":"image-marker"`) || !strings.Contains(out, `"/work":"error: open /work: no such file or directory"`) {
		t.Errorf("exec probe report: %v\n%s", err, out)
	}
	if out, err := lab.exec(0, "good", "sh", "-c", "true"); err == nil || !strings.Contains(err.Error(), `exec: "sh": executable file not found in $PATH`) {
		t.Errorf("exec of a program the image lacks (the host has it): %v %q", err, out)
	}
}

// checkImageCleanup deletes the good pod, stops the nodes and runs Cleanup:
// the container filesystems and their mounts go, the image store stays.
func checkImageCleanup(t *testing.T, lab *imageLab) {
	t.Helper()
	pod := lab.get("good")
	podDir := filepath.Join(lab.nodes[0].StateDir, "pods", fmt.Sprintf("%s_good_%s", lab.ns, pod.UID))
	if _, err := os.Stat(filepath.Join(podDir, "containers", "main", "upper")); err != nil {
		t.Errorf("good has no overlay upper dir: %v", err)
	}
	if err := lab.cs.CoreV1().Pods(lab.ns).Delete(t.Context(), "good", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "good deleted", 30*time.Second, func() (bool, error) {
		_, err := lab.cs.CoreV1().Pods(lab.ns).Get(t.Context(), "good", metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	if _, err := os.Stat(podDir); err == nil {
		t.Errorf("pod directory %s left after deletion", podDir)
	}
	lab.stop()
	if err := Cleanup(lab.root); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(lab.root, "nodes", "*", "pods", "*", "containers")); len(left) > 0 {
		t.Errorf("container filesystems left: %v", left)
	}
	if mounts, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(mounts), lab.root) {
		t.Errorf("mounts below %s left in the host namespace", lab.root)
	}
	if images, _ := filepath.Glob(filepath.Join(lab.store, "sha256-*", "rootfs")); len(images) != 1 {
		t.Errorf("image store holds %v, want the one pulled image (kept by Cleanup)", images)
	}
	assertNothingLeft(t, lab.nodes, nil)
	checkCleanupAfterCrash(t, lab)
}

// checkCleanupAfterCrash plants what a crashed node leaves of a container
// filesystem (overlay's work/work is mode 000) and runs Cleanup twice.
func checkCleanupAfterCrash(t *testing.T, lab *imageLab) {
	t.Helper()
	work := filepath.Join(lab.nodes[1].StateDir, "pods", "ns_crashed_uid", "containers", "main", "work", "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(work, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := Cleanup(lab.root); err != nil {
			t.Fatalf("Cleanup %d after a crash: %v", i+1, err)
		}
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(work))); err == nil {
		t.Error("Cleanup left a crashed node's container filesystem")
	}
}

// TestPrivilegedImagePodsFailLikeAKubelet runs images that cannot run and
// checks each pod's status is the one a kubelet with containerd reports.
func TestPrivilegedImagePodsFailLikeAKubelet(t *testing.T) {
	lab := startImageLab(t)
	probe := buildProbe(t)
	layer := appLayer(t, probe)
	push := func(tag string, mutate func(*v1.Config), layers ...v1.Layer) string {
		cfg := appConfig()
		mutate(&cfg)
		ref := lab.reg + "/lab/" + tag
		pushImage(t, ref, testImage(t, runtime.GOARCH, cfg, layers...))
		return ref
	}
	badEntry := push("bad-entry:v1", func(c *v1.Config) { c.Entrypoint, c.Cmd = []string{"/usr/local/bin/app"}, nil }, layer)
	noLoader := push("no-loader:v1", func(c *v1.Config) { c.Entrypoint, c.Cmd, c.User = []string{"/bin/true"}, nil, "" }, dynamicLayer(t, false))
	noLibc := push("no-libc:v1", func(c *v1.Config) { c.Entrypoint, c.Cmd, c.User = []string{"/bin/true"}, nil, "" }, dynamicLayer(t, true))
	ghost := push("ghost:v1", func(c *v1.Config) { c.User = "ghost" }, layer)
	rootUser := push("root:v1", func(c *v1.Config) { c.User = "" }, layer)
	named := push("named:v1", func(c *v1.Config) { c.User = "nonroot" }, layer)
	never := push("never:v1", func(*v1.Config) {}, layer)
	yes := true
	nonRoot := func(p *corev1.Pod) { p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: &yes} }
	lab.create(
		lab.pod("bad-entry", 0, badEntry), lab.pod("no-loader", 0, noLoader), lab.pod("no-libc", 1, noLibc),
		lab.pod("ghost", 1, ghost), lab.pod("nonroot", 0, rootUser, nonRoot), lab.pod("named", 1, named, nonRoot),
		lab.pod("missing", 0, lab.reg+"/lab/missing:v1"),
		lab.pod("not-exec", 1, badEntry, func(p *corev1.Pod) { p.Spec.Containers[0].Command = []string{"/srv/data/marker"} }),
		lab.pod("never", 1, never, func(p *corev1.Pod) { p.Spec.Containers[0].ImagePullPolicy = corev1.PullNever }),
	)
	checkStartError(t, lab, "bad-entry", `unable to start container process: exec: "/usr/local/bin/app": stat /usr/local/bin/app: no such file or directory`)
	checkStartError(t, lab, "no-loader", `exec: "/bin/true": no such file or directory (its ELF interpreter /`)
	checkStartError(t, lab, "not-exec", `exec: "/srv/data/marker": permission denied`)
	s := lab.waitStatus("no-libc", "exit 127 in CrashLoopBackOff", func(s corev1.ContainerStatus) bool {
		l := s.LastTerminationState.Terminated
		return waitingFor("CrashLoopBackOff", "back-off")(s) && l != nil && l.ExitCode == 127 && l.Reason == "Error"
	})
	if log, _ := os.ReadFile(filepath.Join(lab.nodes[1].StateDir, "pods", fmt.Sprintf("%s_no-libc_%s", lab.ns, lab.get("no-libc").UID), "logs", "main", "0.log")); !strings.Contains(string(log), "error while loading shared libraries: libc.so.6") {
		t.Errorf("no-libc log %q (status %+v)", log, s)
	}
	lab.waitStatus("ghost", "CreateContainerError", waitingFor("CreateContainerError", "unable to find user ghost: no matching entries in passwd file"))
	uid := lab.get("nonroot").UID
	lab.waitStatus("nonroot", "CreateContainerConfigError", waitingFor("CreateContainerConfigError",
		fmt.Sprintf(`container has runAsNonRoot and image will run as root (pod: "nonroot_%s(%s)", container: main)`, lab.ns, uid)))
	lab.waitStatus("named", "CreateContainerConfigError", waitingFor("CreateContainerConfigError",
		"container has runAsNonRoot and image has non-numeric user (nonroot), cannot verify user is non-root"))
	missing := lab.reg + "/lab/missing:v1"
	lab.waitStatus("missing", "ErrImagePull", waitingFor("ErrImagePull", fmt.Sprintf("failed to pull image %q: ", missing)))
	lab.waitStatus("missing", "ImagePullBackOff", waitingFor("ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q", missing)))
	lab.waitStatus("never", "ErrImageNeverPull", waitingFor("ErrImageNeverPull", fmt.Sprintf("Container image %q is not present with pull policy of Never", never)))
	for _, name := range []string{"ghost", "nonroot", "missing", "never"} {
		if p := lab.get(name); p.Status.Phase != corev1.PodPending || p.Status.ContainerStatuses[0].RestartCount != 0 {
			t.Errorf("%s: phase %s, restarts %d; want Pending without restarts", name, p.Status.Phase, p.Status.ContainerStatuses[0].RestartCount)
		}
	}
	lab.stop()
	if err := Cleanup(lab.root); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, lab.nodes, nil)
}

// checkStartError waits for a container that cannot start: Waiting
// RunContainerError with lastState terminated StartError (exit code 128),
// then CrashLoopBackOff, restarted.
func checkStartError(t *testing.T, lab *imageLab, pod, msg string) {
	t.Helper()
	startErr := func(s corev1.ContainerStatus) bool {
		l := s.LastTerminationState.Terminated
		return l != nil && l.Reason == "StartError" && l.ExitCode == 128 && strings.Contains(l.Message, msg)
	}
	lab.waitStatus(pod, "RunContainerError", func(s corev1.ContainerStatus) bool { return waitingFor("RunContainerError", msg)(s) && startErr(s) })
	lab.waitStatus(pod, "CrashLoopBackOff", func(s corev1.ContainerStatus) bool {
		return waitingFor("CrashLoopBackOff", "back-off")(s) && startErr(s) && s.RestartCount >= 1
	})
	if p := lab.get(pod); p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
		t.Errorf("%s phase %s", pod, p.Status.Phase)
	}
}
