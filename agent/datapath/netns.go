package datapath

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// podCgroupMatches reports whether a cgroup directory name belongs to the pod
// with this UID. The kubelet's cgroupfs driver names it "pod<uid>"
// (kubepods/burstable/pod1234-...), the systemd driver
// "kubepods-burstable-pod<uid with _ for ->.slice". Pure.
func podCgroupMatches(name, uid string) bool {
	if uid == "" {
		return false
	}
	for _, u := range []string{uid, strings.ReplaceAll(uid, "-", "_")} {
		i := strings.Index(name, "pod"+u)
		if i < 0 {
			continue
		}
		rest := name[i+3+len(u):]
		if rest == "" || rest == ".slice" {
			return true
		}
	}
	return false
}

// podUIDFromCgroupName extracts the pod UID from a pod cgroup's name, with
// '_' turned back into '-': "pod<uid>" (cgroupfs) or
// "kubepods-<qos>-pod<uid_>.slice" (systemd). Static pods have a 32-hex
// config hash as UID; both forms are accepted. Pure.
func podUIDFromCgroupName(name string) (string, bool) {
	name = strings.TrimSuffix(name, ".slice")
	i := strings.LastIndex(name, "pod")
	if i < 0 || (i > 0 && name[i-1] != '-') {
		return "", false
	}
	uid := name[i+3:]
	if len(uid) < 32 {
		return "", false
	}
	for _, c := range uid {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '-' || c == '_') {
			return "", false
		}
	}
	return strings.ToLower(strings.ReplaceAll(uid, "_", "-")), true
}

// podCgroups walks parent once and returns pod UID -> pod cgroup directory.
func podCgroups(parent string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(parent, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == parent {
				return err
			}
			return nil // a cgroup removed while walking
		}
		if !d.IsDir() {
			return nil
		}
		if uid, ok := podUIDFromCgroupName(d.Name()); ok {
			out[uid] = path
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("search pod cgroups under %s: %w", parent, err)
	}
	return out, nil
}

// podNetns returns /proc/<pid>/ns/net of the first process found in the
// pod cgroup or its children.
func podNetns(podDir string) (string, error) {
	var pid int
	_ = filepath.WalkDir(podDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p, ok := firstPid(filepath.Join(path, "cgroup.procs")); ok {
			pid = p
			return fs.SkipAll
		}
		return nil
	})
	if pid == 0 {
		return "", fmt.Errorf("%w: %s", ErrNoProcess, podDir)
	}
	return filepath.Join("/proc", strconv.Itoa(pid), "ns", "net"), nil
}

// FindPodNetns returns /proc/<pid>/ns/net of a process in the pod's cgroup,
// searching the cgroup tree under parent (the node's pod parent cgroup,
// e.g. <cgroup2>/kubepods.slice). On a real node the pod cgroup holds one
// child cgroup per container (cri-containerd-<id>.scope, crio-<id>.scope,
// or <id> with cgroupfs), the sandbox's pause process among them; every
// non-hostNetwork container shares the sandbox netns, so any process will do.
func FindPodNetns(parent, uid string) (string, error) {
	var podDir string
	err := filepath.WalkDir(parent, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == parent {
				return err
			}
			return nil // a cgroup removed while walking
		}
		if d.IsDir() && podCgroupMatches(d.Name(), uid) {
			podDir = path
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("search pod cgroups under %s: %w", parent, err)
	}
	if podDir == "" {
		return "", fmt.Errorf("%w: pod %s under %s", ErrPodNotFound, uid, parent)
	}
	return podNetns(podDir)
}

// NetnsCookie returns the cookie the kernel gives the network namespace at
// path (a /proc/<pid>/ns/net or a bind mount such as /run/netns/<name>):
// the value bpf_get_netns_cookie returns for sockets in it. It creates a
// socket inside that netns on a locked OS thread and reads SO_NETNS_COOKIE
// (Linux 5.14).
func NetnsCookie(path string) (uint64, error) {
	target, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()

	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fd, restored, err := socketIn(int(target.Fd()))
		if restored {
			runtime.UnlockOSThread()
		} // else: the thread stays in the other netns and exits with this goroutine
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return 0, fmt.Errorf("socket in netns %s: %w", path, r.err)
	}
	defer unix.Close(r.fd)
	return socketNetnsCookie(r.fd)
}

// socketIn creates a UDP socket in the netns fd refers to, from the calling
// (locked) thread, and moves the thread back. restored is false when the
// thread could not return to its own netns.
func socketIn(netnsFd int) (fd int, restored bool, err error) {
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return -1, true, err
	}
	defer self.Close()
	if err := unix.Setns(netnsFd, unix.CLONE_NEWNET); err != nil {
		return -1, true, fmt.Errorf("setns: %w", err)
	}
	fd, serr := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		if serr == nil {
			unix.Close(fd)
		}
		return -1, false, fmt.Errorf("setns back: %w", err)
	}
	if serr != nil {
		return -1, true, serr
	}
	return fd, true, nil
}

// socketNetnsCookie reads SO_NETNS_COOKIE from a socket.
func socketNetnsCookie(fd int) (uint64, error) {
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		if errors.Is(err, unix.ENOPROTOOPT) {
			return 0, fmt.Errorf("SO_NETNS_COOKIE needs Linux 5.14: %w", err)
		}
		return 0, fmt.Errorf("getsockopt SO_NETNS_COOKIE: %w", err)
	}
	return v, nil
}
