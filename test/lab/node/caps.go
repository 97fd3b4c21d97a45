package node

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// capSet is a set of Linux capabilities, bit n for capability n.
type capSet uint64

func (s capSet) has(n int) bool { return n < 64 && s&(1<<n) != 0 }

// capNames maps capability names (without CAP_) to their numbers.
var capNames = map[string]int{
	"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"FOWNER": unix.CAP_FOWNER, "FSETID": unix.CAP_FSETID, "KILL": unix.CAP_KILL, "SETGID": unix.CAP_SETGID,
	"SETUID": unix.CAP_SETUID, "SETPCAP": unix.CAP_SETPCAP, "LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW, "IPC_LOCK": unix.CAP_IPC_LOCK,
	"IPC_OWNER": unix.CAP_IPC_OWNER, "SYS_MODULE": unix.CAP_SYS_MODULE, "SYS_RAWIO": unix.CAP_SYS_RAWIO,
	"SYS_CHROOT": unix.CAP_SYS_CHROOT, "SYS_PTRACE": unix.CAP_SYS_PTRACE, "SYS_PACCT": unix.CAP_SYS_PACCT,
	"SYS_ADMIN": unix.CAP_SYS_ADMIN, "SYS_BOOT": unix.CAP_SYS_BOOT, "SYS_NICE": unix.CAP_SYS_NICE,
	"SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "SYS_TIME": unix.CAP_SYS_TIME, "SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
	"MKNOD": unix.CAP_MKNOD, "LEASE": unix.CAP_LEASE, "AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "SETFCAP": unix.CAP_SETFCAP, "MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE,
	"MAC_ADMIN": unix.CAP_MAC_ADMIN, "SYSLOG": unix.CAP_SYSLOG, "WAKE_ALARM": unix.CAP_WAKE_ALARM,
	"BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "AUDIT_READ": unix.CAP_AUDIT_READ, "PERFMON": unix.CAP_PERFMON,
	"BPF": unix.CAP_BPF, "CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// defaultCaps is containerd's default capability set for a container.
var defaultCaps = capsOf("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")

// allCaps holds every capability this package knows.
var allCaps = capSet(1<<(unix.CAP_LAST_CAP+1) - 1)

func capsOf(names ...string) capSet {
	var s capSet
	for _, n := range names {
		if c, ok := capNames[n]; ok {
			s |= 1 << c
		}
	}
	return s
}

// capName normalizes a securityContext capability name: "net_admin" and
// "CAP_NET_ADMIN" both mean NET_ADMIN.
func capName(c corev1.Capability) string {
	return strings.TrimPrefix(strings.ToUpper(string(c)), "CAP_")
}

// containerCaps is the capability set of a container's root processes, as
// containerd computes it: the default set, all of them when add holds ALL,
// none when drop holds ALL, then the named additions and drops. Names the
// kernel does not know are ignored, as runc does. Privileged containers get
// every capability; non-root processes end up with none (no ambient
// capabilities) but keep the set as their bounding set.
func containerCaps(sc *corev1.SecurityContext) (set capSet, privileged bool) {
	if sc == nil {
		return defaultCaps, false
	}
	if sc.Privileged != nil && *sc.Privileged {
		return allCaps, true
	}
	set = defaultCaps
	c := sc.Capabilities
	if c == nil {
		return set, false
	}
	for _, a := range c.Add {
		if capName(a) == "ALL" {
			set = allCaps
		}
	}
	for _, d := range c.Drop {
		if capName(d) == "ALL" {
			set = 0
		}
	}
	for _, a := range c.Add {
		set |= capsOf(capName(a))
	}
	for _, d := range c.Drop {
		set &^= capsOf(capName(d))
	}
	return set, false
}

// lastCap is the highest capability number of the running kernel.
func lastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return unix.CAP_LAST_CAP
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return unix.CAP_LAST_CAP
	}
	return n
}

// applyCaps limits the calling thread, and every process it forks, to keep:
// it drops the rest of the bounding set (a root process execs with exactly
// the bounding set as its permitted and effective sets when its inheritable
// set is empty) and clears the inheritable and ambient sets. The thread's
// own effective set is untouched, so it can still set up the child. With
// noNewPrivs, nothing the thread forks can gain privileges through execve.
// The thread must be locked and never return to the Go scheduler's pool.
func applyCaps(keep capSet, all, noNewPrivs bool) error {
	if !all {
		for c := 0; c <= lastCap(); c++ {
			if !keep.has(c) {
				if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
					return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
				}
			}
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	if noNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("set no_new_privs: %w", err)
		}
	}
	return nil
}
