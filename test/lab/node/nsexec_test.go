package node

import (
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// The thread startProc forks from keeps the container's namespaces and
// root: it must never be the main thread, which cannot end and is what
// /proc/self shows.
func TestOnDisposableThreadNeverUsesTheMainThread(t *testing.T) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	tids := map[int]bool{}
	for range 8 {
		wg.Go(func() {
			for range 25 {
				onDisposableThread(func() {
					mu.Lock()
					tids[unix.Gettid()] = true
					mu.Unlock()
				})
			}
		})
	}
	wg.Wait()
	if tids[unix.Getpid()] {
		t.Fatal("fn ran on the main thread")
	}
	if len(tids) != 200 {
		t.Errorf("fn ran on %d threads for 200 calls: a thread was reused", len(tids))
	}
}
