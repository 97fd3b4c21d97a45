package lab

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// SuiteLockPath serializes whole test suites that need the lab's fixed ports
// (127.0.0.1:6443, etcd's 12379/12380, the kubelet ports) and node names: go test runs
// packages in parallel, and there is one lab per machine.
const SuiteLockPath = "/run/weft-lab-suite.lock"

// LockSuite blocks until it holds the machine-wide lab suite lock (or ctx ends).
func LockSuite(ctx context.Context) (unlock func(), err error) {
	f, err := os.OpenFile(SuiteLockPath, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lab suite lock: %w", err)
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
			return nil, fmt.Errorf("lock %s: %w", SuiteLockPath, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("wait for lab suite lock %s: %w", SuiteLockPath, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}
