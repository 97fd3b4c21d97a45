package datapath

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// privateCgroup2 is where Open mounts a cgroup2 hierarchy when the host has
// none mounted.
const privateCgroup2 = "/run/weft/cgroup2"

// findCgroup2 picks the cgroup v2 mount point from /proc/self/mountinfo
// text: /sys/fs/cgroup (unified layout) first, then /sys/fs/cgroup/unified
// (hybrid layout), then the first other cgroup2 mount. Pure.
func findCgroup2(mountinfo string) (string, bool) {
	var found []string
	for line := range strings.Lines(mountinfo) {
		// "36 35 0:30 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw"
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fs := strings.Fields(post)
		f := strings.Fields(pre)
		if len(fs) < 1 || fs[0] != "cgroup2" || len(f) < 5 {
			continue
		}
		found = append(found, unescapeMount(f[4]))
	}
	for _, pref := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		for _, p := range found {
			if p == pref {
				return p, true
			}
		}
	}
	if len(found) > 0 {
		return found[0], true
	}
	return "", false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Cgroup2Root returns the host's cgroup v2 mount point, or ErrNoCgroup2.
func Cgroup2Root() (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	if p, ok := findCgroup2(string(data)); ok {
		return p, nil
	}
	return "", ErrNoCgroup2
}

// ensureCgroup2 returns the cgroup v2 mount, mounting a private one when the
// host has none.
func ensureCgroup2() (string, error) {
	p, err := Cgroup2Root()
	if err == nil || !errors.Is(err, ErrNoCgroup2) {
		return p, err
	}
	if err := os.MkdirAll(privateCgroup2, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", privateCgroup2, err)
	}
	if err := unix.Mount("cgroup2", privateCgroup2, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("mount cgroup2 at %s: %w", privateCgroup2, err)
	}
	return privateCgroup2, nil
}

// isFS reports whether path is on a filesystem with the given magic.
func isFS(path string, magic int64) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return int64(st.Type) == magic
}

// ensureBPFFS checks that dir is a bpffs. When it is not, it mounts one
// only if allowPrivate (mounted says it did): in a container's private mount
// namespace such a mount, and every pin in it, dies with the agent.
// Otherwise it fails closed with ErrNoBPFFS.
func ensureBPFFS(dir string, allowPrivate bool) (mounted bool, err error) {
	if isFS(dir, unix.BPF_FS_MAGIC) {
		return false, nil
	}
	if !allowPrivate {
		return false, fmt.Errorf("%w at %s: pins there would die with the agent and pods would bypass the mesh "+
			"until the next agent attaches; mount bpffs on the host (the DaemonSet's init container runs "+
			"`weft-agent mount-bpffs`), or allow a private mount for tests", ErrNoBPFFS, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	return true, nil
}

// cgroupID is the id the kernel reports for a cgroup: its inode number.
func cgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}

// firstPid returns the first pid listed in a cgroup.procs file.
func firstPid(procsFile string) (int, bool) {
	f, err := os.Open(procsFile)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var pid int
		if _, err := fmt.Sscanf(strings.TrimSpace(sc.Text()), "%d", &pid); err == nil && pid > 0 {
			return pid, true
		}
	}
	return 0, false
}
