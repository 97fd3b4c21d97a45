package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// SuiteLockPath serializes whole test suites that need the lab's fixed ports
// (127.0.0.1:6443, etcd's 12379/12380, the kubelet ports) and node names: go test runs
// packages in parallel, and there is one lab per machine.
const SuiteLockPath = "/run/weft-lab-suite.lock"

// machineLockPath is held by a running supervisor: one lab per machine.
const machineLockPath = "/run/weft-lab.lock"

// ErrLocked means another process holds a lab lock.
var ErrLocked = errors.New("lab lock held by another process")

// LockSuite blocks until it holds the machine-wide lab suite lock (or ctx ends).
func LockSuite(ctx context.Context) (unlock func(), err error) {
	return lockFile(ctx, SuiteLockPath, true)
}

// lockFile takes an exclusive flock on path, waiting for it when wait is set. The
// descriptor is close-on-exec, so children never inherit the lock.
func lockFile(ctx context.Context, path string, wait bool) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !wait {
			f.Close()
			return nil, fmt.Errorf("%w: %s", ErrLocked, path)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
