package datapath

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNoBPFFS: the pin root's filesystem is not a bpffs. Open refuses to
// start rather than pin on a mount that dies with the agent (see doc.go,
// "bpffs").
var ErrNoBPFFS = errors.New("no bpffs mounted")

// MountBPFFSIn makes dir a bpffs in the mount namespace of process pid
// (1 with hostPID: the host's) unless it is one there already; mounted says
// it had to. It is what the agent DaemonSet's init container runs
// (weft-agent mount-bpffs), so that the pins live on the host and outlive
// every agent.
//
// It enters that namespace on a dedicated, locked OS thread that is never
// given back to the Go scheduler (the goroutine exits locked, so the runtime
// ends the thread): no other goroutine ever runs in the host's mount
// namespace. It needs CAP_SYS_PTRACE to open the namespace of a process
// that holds capabilities it lacks (pid 1 holds every one), CAP_SYS_ADMIN
// and CAP_SYS_CHROOT for setns(CLONE_NEWNS) and the mount, and a thread
// that does not share its filesystem attributes (unshare CLONE_FS first:
// Go's threads share them).
//
// Why not a Bidirectional hostPath, as Cilium's init container does:
// Bidirectional propagation is allowed only for privileged containers, and
// works only where the host's mount is shared; entering the host's mount
// namespace needs three capabilities, no privileged container, and does
// not depend on the host's propagation settings (the mount is made in the
// host's namespace itself; containers created afterwards see it through
// their hostPath).
func MountBPFFSIn(pid int, dir string) (mounted bool, err error) {
	if pid <= 0 || dir == "" || dir[0] != '/' {
		return false, fmt.Errorf("%w: mount bpffs in pid %d at %q: need a pid and an absolute path", ErrInvalidConfig, pid, dir)
	}
	ns, err := os.Open("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
	if err != nil {
		return false, fmt.Errorf("open mount namespace of pid %d (needs CAP_SYS_PTRACE): %w", pid, err)
	}
	defer ns.Close()
	type result struct {
		mounted bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		// Never UnlockOSThread: this thread may have left our namespace.
		m, err := mountBPFFSInNS(int(ns.Fd()), dir)
		done <- result{m, err}
	}()
	r := <-done
	return r.mounted, r.err
}

// mountBPFFSInNS runs on a locked thread that it may move to the mount
// namespace nsFD: the thread must not be reused.
func mountBPFFSInNS(nsFD int, dir string) (bool, error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return false, fmt.Errorf("unshare filesystem attributes: %w", err)
	}
	if err := unix.Setns(nsFD, unix.CLONE_NEWNS); err != nil {
		return false, fmt.Errorf("enter mount namespace (needs CAP_SYS_ADMIN and CAP_SYS_CHROOT): %w", err)
	}
	// setns(CLONE_NEWNS) puts the thread at the namespace's root; the
	// paths below resolve in the target namespace.
	if isFS(dir, unix.BPF_FS_MAGIC) {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	if !isFS(dir, unix.BPF_FS_MAGIC) {
		return true, fmt.Errorf("mounted bpffs at %s, but it is not visible there", dir)
	}
	return true, nil
}
