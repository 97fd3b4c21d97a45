package limits

import (
	"sync"
)

// Budget accounts buffered bytes node-wide and per source pod, and counts
// each source pod's connections. Open a Lease per accepted connection.
//
// Invariant (checked by the fuzz test): the node's held bytes never exceed
// its budget, a pod's never exceed its share, and the node's are the sum
// of the pods'.
type Budget struct {
	max, podMax int64
	podConns    int

	mu   sync.Mutex
	held int64
	pods map[uint64]*pod
}

type pod struct {
	conns int
	held  int64
}

// NewBudget returns a Budget for l (defaults applied).
func NewBudget(l Limits) *Budget {
	l = l.WithDefaults()
	return &Budget{max: l.BufferBytes, podMax: l.PodBufferBytes, podConns: l.PodConns, pods: make(map[uint64]*pod)}
}

// Lease is one connection's share of a Budget: it holds a connection slot
// of its pod and the bytes it reserved. Close returns both.
type Lease struct {
	b      *Budget
	key    uint64
	mu     sync.Mutex
	held   int64
	closed bool
}

// Open takes a connection slot of the pod key (its netns cookie); false
// when the pod has PodConns connections open already.
func (b *Budget) Open(key uint64) (*Lease, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pods[key]
	if p == nil {
		p = &pod{}
		b.pods[key] = p
	}
	if p.conns >= b.podConns {
		if p.conns == 0 {
			delete(b.pods, key)
		}
		return nil, false
	}
	p.conns++
	return &Lease{b: b, key: key}, true
}

// Reserve takes n bytes of the pod's share and of the node budget; false
// (and nothing taken) when either has not enough left. A nil Lease
// reserves nothing and always succeeds.
func (l *Lease) Reserve(n int64) bool {
	if l == nil || n <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	b := l.b
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.pods[l.key]
	if b.held+n > b.max || p.held+n > b.podMax {
		return false
	}
	b.held += n
	p.held += n
	l.held += n
	return true
}

// Release returns n reserved bytes (at most what the lease holds).
func (l *Lease) Release(n int64) {
	if l == nil || n <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releaseLocked(n)
}

func (l *Lease) releaseLocked(n int64) {
	n = min(n, l.held)
	if n <= 0 {
		return
	}
	b := l.b
	b.mu.Lock()
	b.held -= n
	b.pods[l.key].held -= n
	b.mu.Unlock()
	l.held -= n
}

// Held is what the lease holds.
func (l *Lease) Held() int64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held
}

// Close returns the lease's bytes and its connection slot; later calls do
// nothing.
func (l *Lease) Close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.releaseLocked(l.held)
	l.closed = true
	b := l.b
	b.mu.Lock()
	p := b.pods[l.key]
	p.conns--
	if p.conns == 0 {
		delete(b.pods, l.key)
	}
	b.mu.Unlock()
}

// Usage is a Budget's state.
type Usage struct {
	// Held is the node's held bytes; Pods the pods with a connection open.
	Held int64
	Pods int
	// MaxPodHeld and MaxPodConns are the largest of any one pod.
	MaxPodHeld  int64
	MaxPodConns int
	// PodHeldSum is the sum of the pods' held bytes (equal to Held).
	PodHeldSum int64
}

// Usage reports the budget's state.
func (b *Budget) Usage() Usage {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := Usage{Held: b.held, Pods: len(b.pods)}
	for _, p := range b.pods {
		u.PodHeldSum += p.held
		u.MaxPodHeld = max(u.MaxPodHeld, p.held)
		u.MaxPodConns = max(u.MaxPodConns, p.conns)
	}
	return u
}

// Check reports whether the invariant holds.
func (b *Budget) Check() bool {
	u := b.Usage()
	return u.Held >= 0 && u.Held <= b.max && u.MaxPodHeld <= b.podMax && u.PodHeldSum == u.Held && u.MaxPodConns <= b.podConns
}
