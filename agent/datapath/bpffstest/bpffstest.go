// Package bpffstest lets the privileged tests of several packages share
// the host's bpffs (/sys/fs/bpf) while go test runs them in parallel. A
// fresh host may have none: the first test process to Hold mounts one, as
// the agent DaemonSet's init container would, and the last to release
// unmounts it, so the host is left as it was found. Without this, one
// package's tests unmounted the bpffs another package's tests were using.
//
// The holders are recorded by PID in a file under /run, guarded by flock:
// a test process that died without releasing is dropped at the next Hold
// or release, so a crash does not keep the mount forever.
package bpffstest

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// statePath records "mounted <0|1>" and a line per holder's PID.
const statePath = "/run/weft-test-bpffs"

type state struct {
	mounted bool // the tests mounted the bpffs (the host had none)
	holders []int
}

// Hold makes sure a bpffs is mounted at dir until the returned release
// runs (call it once, when the tests are done). mount mounts one when
// none is (datapath.MountBPFFSIn, which this package cannot import: the
// datapath's own tests use it) and says whether it did.
func Hold(dir string, mount func() (mounted bool, err error)) (release func(), err error) {
	pid := os.Getpid()
	err = withState(func(st *state) error {
		if len(st.holders) == 0 {
			mounted, err := mount()
			if err != nil {
				return err
			}
			// a stale "mounted" of holders that died is still ours
			st.mounted = st.mounted || mounted
		}
		st.holders = append(st.holders, pid)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return func() {
		if err := withState(func(st *state) error {
			st.holders = slices.DeleteFunc(st.holders, func(p int) bool { return p == pid })
			if len(st.holders) == 0 && st.mounted {
				st.mounted = false
				return unix.Unmount(dir, 0)
			}
			return nil
		}); err != nil {
			fmt.Fprintln(os.Stderr, "bpffstest: release:", err)
		}
	}, nil
}

// withState runs f on the state file's content under an exclusive flock,
// dead holders dropped, and writes the result back.
func withState(f func(*state) error) error {
	file, err := os.OpenFile(statePath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer file.Close()
	if err := unix.Flock(int(file.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", statePath, err)
	}
	defer unix.Flock(int(file.Fd()), unix.LOCK_UN)
	b, err := io.ReadAll(file)
	if err != nil {
		return err
	}
	st := parse(string(b))
	ferr := f(&st)
	if err := file.Truncate(0); err != nil {
		return errors.Join(ferr, err)
	}
	_, err = file.WriteAt([]byte(st.String()), 0)
	return errors.Join(ferr, err)
}

func parse(s string) state {
	var st state
	for _, line := range strings.Split(s, "\n") {
		switch {
		case line == "mounted 1":
			st.mounted = true
		case strings.HasPrefix(line, "holder "):
			pid, err := strconv.Atoi(strings.TrimPrefix(line, "holder "))
			if err == nil && alive(pid) {
				st.holders = append(st.holders, pid)
			}
		}
	}
	return st
}

func (st state) String() string {
	var b strings.Builder
	if st.mounted {
		b.WriteString("mounted 1\n")
	}
	for _, pid := range st.holders {
		fmt.Fprintf(&b, "holder %d\n", pid)
	}
	return b.String()
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
