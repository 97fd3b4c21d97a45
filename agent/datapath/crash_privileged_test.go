package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// runMountNS runs in a mount namespace of its own (the test starts it with
// CLONE_NEWNS, / made private): it hides /sys/fs/bpf behind a tmpfs, as on
// a host where nothing mounted bpffs, prints "ready" and waits for stdin to
// close.
func runMountNS() int {
	if err := unix.Mount("tmpfs", DefaultBPFFS, "tmpfs", 0, "size=1m"); err != nil {
		fmt.Println("err", err)
		return 1
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// runPin enters the mount namespace of WEFT_PIN_PID, pins a new map at
// WEFT_PIN_PATH there, prints "pinned" and exits.
func runPin() int {
	runtime.LockOSThread()
	pid, _ := strconv.Atoi(os.Getenv("WEFT_PIN_PID"))
	ns, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
	if err == nil {
		err = unix.Unshare(unix.CLONE_FS)
	}
	if err == nil {
		err = unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS)
	}
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err == nil {
		err = m.Pin(os.Getenv("WEFT_PIN_PATH"))
	}
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	fmt.Println("pinned")
	return 0 // exits without unpinning: the pin must outlive this process
}

// mountsAt lists the filesystem types mounted at dir in mountinfo text, in
// mount order.
func mountsAt(mountinfo, dir string) []string {
	var fs []string
	for line := range strings.Lines(mountinfo) {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && unescapeMount(f[4]) == dir {
			fs = append(fs, g[0])
		}
	}
	return fs
}

// MountBPFFSIn (weft-agent mount-bpffs) mounts bpffs in another process's
// mount namespace, not its own; a second call changes nothing; a pin made
// there outlives the process that made it.
func TestPrivilegedMountBPFFSInAnotherNamespace(t *testing.T) {
	requirePrivileged(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	host := exec.Command(self, "-test.run=^$")
	host.Env = append(os.Environ(), helperEnv+"=mountns")
	host.Stderr = os.Stderr
	host.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // Go makes / rprivate
	in, _ := host.StdinPipe()
	out, _ := host.StdoutPipe()
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); _ = host.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		t.Fatalf("namespace helper: %q", line)
	}
	pid := host.Process.Pid
	root := fmt.Sprintf("/proc/%d/root", pid)
	if isFS(root+DefaultBPFFS, unix.BPF_FS_MAGIC) {
		t.Fatal("setup: /sys/fs/bpf is still a bpffs in the helper's namespace")
	}
	mountinfo := func() []string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if err != nil {
			t.Fatal(err)
		}
		return mountsAt(string(b), DefaultBPFFS)
	}
	before := mountinfo()

	mounted, err := MountBPFFSIn(pid, DefaultBPFFS)
	if err != nil || !mounted {
		t.Fatalf("MountBPFFSIn = %v, %v; want mounted", mounted, err)
	}
	if !isFS(root+DefaultBPFFS, unix.BPF_FS_MAGIC) {
		t.Fatal("/sys/fs/bpf is not a bpffs in the helper's namespace after the mount")
	}
	after := mountinfo()
	if want := append(slices.Clone(before), "bpf"); !slices.Equal(after, want) {
		t.Fatalf("mounts at /sys/fs/bpf: %v, want %v", after, want)
	}
	if !isFS(DefaultBPFFS, unix.BPF_FS_MAGIC) {
		t.Fatal("the test's own /sys/fs/bpf changed")
	}

	mounted, err = MountBPFFSIn(pid, DefaultBPFFS)
	if err != nil || mounted {
		t.Fatalf("second MountBPFFSIn = %v, %v; want nothing to do", mounted, err)
	}
	if again := mountinfo(); !slices.Equal(again, after) {
		t.Fatalf("mounts at /sys/fs/bpf after a second call: %v, want %v", again, after)
	}

	pinName := fmt.Sprintf("weft-mnttest-%d", os.Getpid())
	pinner := exec.Command(self, "-test.run=^$")
	pinner.Env = append(os.Environ(), helperEnv+"=pin", "WEFT_PIN_PID="+strconv.Itoa(pid),
		"WEFT_PIN_PATH="+filepath.Join(DefaultBPFFS, pinName))
	pinner.Stderr = os.Stderr
	if b, err := pinner.Output(); err != nil || string(b) != "pinned\n" {
		t.Fatalf("pin helper: %q, %v", b, err)
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(root+DefaultBPFFS, pinName), nil)
	if err != nil {
		t.Fatalf("pin gone after its process exited: %v", err)
	}
	m.Close()
	if _, err := os.Stat(filepath.Join(DefaultBPFFS, pinName)); !os.IsNotExist(err) {
		t.Errorf("pin visible in the test's own bpffs (%v): it was not made on the helper's mount", err)
		os.Remove(filepath.Join(DefaultBPFFS, pinName))
	}
	// The helper's namespace, its mounts and the pin go with the helper.
}

func TestMountBPFFSInRefusesBadInput(t *testing.T) {
	for _, c := range []struct {
		pid int
		dir string
	}{{0, DefaultBPFFS}, {-1, DefaultBPFFS}, {1, ""}, {1, "sys/fs/bpf"}} {
		if _, err := MountBPFFSIn(c.pid, c.dir); err == nil {
			t.Errorf("MountBPFFSIn(%d, %q) = nil error", c.pid, c.dir)
		}
	}
}

// linkIDs are the ids of the node's pinned links, by program.
func linkIDs(t *testing.T, pinDir string) map[string]link.ID {
	t.Helper()
	ids := map[string]link.ID{}
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(linkPin(pinDir, h.prog), nil)
		if err != nil {
			t.Fatalf("pinned link %s: %v", h.prog, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids[h.prog] = info.ID
	}
	return ids
}

// An agent killed without cleanup leaves its pods enrolled and its links
// attached; the next agent's Open adopts both, and until it has the
// controller's policy (KeepUnlisted) it removes nothing, even when the
// policy it has does not list the pod.
func TestPrivilegedCrashKeepsEnrollment(t *testing.T) {
	requirePrivileged(t)
	tp := newTopo(t, "a")
	tp.cgroup("n1/kubepods")
	const uid = "aaaaaaaa-0000-0000-0000-0000000000c1"
	spec := agentSpec{Node: tp.id + "-n1", CgroupPath: filepath.Join(tp.id, "n1/kubepods"), PinRoot: testPinRoot,
		Proxy: proxyAddr1, Pods: []string{uid}, Meshed: []string{vipMeshed}}
	cfg := Config{Node: spec.Node, CgroupPath: spec.CgroupPath, PinRoot: testPinRoot, ProxyAddr: netip.MustParseAddrPort(proxyAddr1)}
	t.Cleanup(func() {
		if err := Cleanup(cfg); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	pod := tp.startPod("a", "n1/kubepods/pod"+uid)
	tp.serveDirect(vipMeshed)
	cookie, err := NetnsCookie(filepath.Join("/run/netns", tp.podNS["a"]))
	if err != nil {
		t.Fatal(err)
	}
	agent := tp.startAgent(spec)
	pinDir := filepath.Join(testPinRoot, spec.Node)
	before := linkIDs(t, pinDir)
	agent.kill() // SIGKILL: no Close, no cleanup

	dp, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	vip := netip.MustParseAddrPort(vipMeshed)
	check := func(when string, wantEnrolled bool) {
		t.Helper()
		st, err := dp.State()
		if err != nil {
			t.Fatal(err)
		}
		enrolled := slices.Contains(st.Enrolled, cookie) && slices.Contains(st.Meshed, vip)
		if enrolled != wantEnrolled {
			t.Fatalf("%s: state %+v, want pod cookie %d and %s enrolled=%v", when, st, cookie, vip, wantEnrolled)
		}
	}
	check("after the crash and a second Open", true)
	if after := linkIDs(t, pinDir); !maps.Equal(after, before) {
		t.Errorf("links after the second Open %v, want the pinned ones %v", after, before)
	}
	tp.serveProxy("n1", proxyAddr1, dp.Lookup)
	if greet, _ := pod.dial("tcp4", vipMeshed); !strings.HasPrefix(greet, "proxy n1 "+vipMeshed) {
		t.Fatalf("before the new agent's first Sync, the pod's connection got %q; want the proxy", greet)
	}

	// A policy restored from disk that does not list the pod (stale).
	mustSync(t, dp, Desired{KeepUnlisted: true})
	check("after a keep-unlisted Sync without the pod", true)
	if greet, _ := pod.dial("tcp4", vipMeshed); !strings.HasPrefix(greet, "proxy n1 "+vipMeshed) {
		t.Fatalf("after a keep-unlisted Sync: %q; want the proxy", greet)
	}
	// The controller's policy, which no longer lists it: now it goes.
	mustSync(t, dp, Desired{})
	check("after the controller's policy without the pod", false)
}

// Open fails closed when the pin root is not on a bpffs: no private mount
// whose pins would die with the agent.
func TestOpenRefusesWithoutBPFFS(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(Config{Node: "n1", BPFFS: dir, PinRoot: filepath.Join(dir, "weft"), ProxyAddr: netip.MustParseAddrPort(proxyAddr1)})
	if !errors.Is(err, ErrNoBPFFS) {
		t.Fatalf("Open on %s (not a bpffs) = %v, want ErrNoBPFFS", dir, err)
	}
	if isFS(dir, unix.BPF_FS_MAGIC) {
		t.Fatal("Open mounted a bpffs anyway")
	}
}
