// Package evloop runs sockets in the event loop's shape, the way nginx's
// worker does, instead of a goroutine per connection.
//
// A Loop is one goroutine that owns an epoll instance holding its sockets,
// edge-triggered. It calls the Handler of each ready socket in turn, runs
// the functions other goroutines Post to it and the timers that are due, and
// parks in Go's poller, on the epoll descriptor, only when none of that is
// left. A request then costs no goroutine hand-off and no thread wake-up of
// its own: one wake-up serves a batch of ready sockets. On the two-process
// HTTP/1.1 benchmark a floor built this way reached 1.28x nginx's maximum
// throughput at 0.76x its CPU per request, where a goroutine per connection
// stayed at 0.86-0.96x (README, "The event loop's shape, in Go").
//
// Everything a Loop owns (its handlers, sockets and timers) is used from the
// loop's goroutine only; Post is the way in from elsewhere. Handlers must not
// block: a Socket's reads and writes never do (see Socket), and TLS runs over
// one with Handshake's connection.
package evloop

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/agent/proxy/sock"
)

// Events are what epoll reported for a socket.
type Events uint32

const (
	// Readable: data (or the peer's FIN) arrived.
	Readable Events = 1 << iota
	// Writable: the socket takes writes again.
	Writable
	// Hangup: the connection was closed or failed; a read says how.
	Hangup
	// PeerClosed: the peer closed its side (with Readable): reads go on
	// until they say so, even after a short one.
	PeerClosed
)

// Handler serves one socket's events, in the loop's goroutine.
type Handler interface {
	Ready(ev Events)
}

// HandlerFunc is a Handler of a function.
type HandlerFunc func(ev Events)

// Ready calls f.
func (f HandlerFunc) Ready(ev Events) { f(ev) }

// Loop is one event loop. Make it with New, run it with Run.
type Loop struct {
	epfd   int
	ep     *os.File
	rc     syscall.RawConn
	wake   int // eventfd: Post wakes the loop through it
	events []unix.EpollEvent
	h      map[int32]Handler
	timers timerHeap
	// later runs at the end of each batch (spare: its last backing array)
	later, spare []func()
	onPanic      func(v any)
	// deadline is the poller deadline set for the earliest timer (zero:
	// none). A passed one stays in force until set again, and is: its
	// timer ran, so the earliest is another.
	deadline time.Time

	mu     sync.Mutex
	posted []func()
	woken  bool
	closed bool
}

// ErrClosed: the loop was closed.
var ErrClosed = errors.New("event loop closed")

// New returns a loop ready to Run.
func New() (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("epoll descriptor non-blocking: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	l := &Loop{epfd: epfd, wake: wake, events: make([]unix.EpollEvent, 256), h: map[int32]Handler{}}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	// the epoll descriptor in Go's poller: Run parks on its readiness
	l.ep = os.NewFile(uintptr(epfd), "epoll")
	if l.rc, err = l.ep.SyscallConn(); err != nil {
		l.ep.Close()
		unix.Close(wake)
		return nil, fmt.Errorf("epoll descriptor: %w", err)
	}
	return l, nil
}

// Add puts fd in the loop, edge-triggered for reads, writes and hang-ups:
// h is called for each. Loop goroutine only (or before Run).
func (l *Loop) Add(fd int, h Handler) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add %d: %w", fd, err)
	}
	l.h[int32(fd)] = h
	return nil
}

// Remove takes fd out of the loop; its handler is not called again, not
// even for events of the batch being served. Loop goroutine only.
func (l *Loop) Remove(fd int) {
	if _, ok := l.h[int32(fd)]; !ok {
		return
	}
	delete(l.h, int32(fd))
	unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// Post runs fn in the loop's goroutine, after what the loop is doing now;
// false when the loop is closed (fn will not run). Any goroutine.
func (l *Loop) Post(fn func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return false
	}
	l.posted = append(l.posted, fn)
	if !l.woken {
		l.woken = true
		l.signal()
	}
	l.mu.Unlock()
	return true
}

// Run serves the loop until ctx ends or Close is called. Then it runs the
// functions posted before (they may hand it sockets), and closes the
// sockets still in it whose Handler is an io.Closer; the others stay open
// for their owners to close.
func (l *Loop) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, l.Close)
	defer stop()
	defer l.close()
	var posted []func()
	for {
		if l.isClosed() {
			return nil
		}
		l.runTimers()
		n, err := l.wait()
		if err != nil {
			if l.isClosed() {
				return nil
			}
			return err
		}
		for _, ev := range l.events[:n] {
			if int(ev.Fd) == l.wake {
				var b [8]byte
				unix.Read(l.wake, b[:]) // reset the counter
				continue
			}
			h, ok := l.h[ev.Fd]
			if !ok {
				continue // removed earlier in this batch
			}
			l.ready(h, events(ev.Events))
		}
		l.mu.Lock()
		posted, l.posted = l.posted, posted[:0]
		l.woken = false
		l.mu.Unlock()
		for i, fn := range posted {
			l.run(fn)
			posted[i] = nil
		}
		l.runLater()
	}
}

// SetOnPanic, when fn is set (before Run), has it told of a panic in a Handler, a
// posted function, a timer or a Later function: the loop recovers it, so
// that one bad request does not end every connection the loop serves. A
// Handler that panicked and is an io.Closer is closed.
func (l *Loop) SetOnPanic(fn func(v any)) { l.onPanic = fn }

func (l *Loop) ready(h Handler, ev Events) {
	defer func() {
		if v := recover(); v != nil {
			l.panicked(v)
			if c, ok := h.(io.Closer); ok {
				l.run(func() { c.Close() })
			}
		}
	}()
	h.Ready(ev)
}

// run runs fn, recovering a panic.
func (l *Loop) run(fn func()) {
	defer func() {
		if v := recover(); v != nil {
			l.panicked(v)
		}
	}()
	fn()
}

func (l *Loop) panicked(v any) {
	if l.onPanic != nil {
		l.onPanic(v)
	}
}

// Later runs fn once the loop has served the events and posted functions
// at hand, before it waits again: a connection that many streams wrote to
// in one batch flushes once. Loop goroutine only.
func (l *Loop) Later(fn func()) { l.later = append(l.later, fn) }

func (l *Loop) runLater() {
	for len(l.later) > 0 {
		fns := l.later
		l.later = l.spare[:0]
		for i, fn := range fns {
			l.run(fn)
			fns[i] = nil
		}
		l.spare = fns
	}
}

func events(e uint32) Events {
	var ev Events
	if e&(unix.EPOLLIN|unix.EPOLLRDHUP) != 0 {
		ev |= Readable
	}
	if e&unix.EPOLLRDHUP != 0 {
		ev |= PeerClosed
	}
	if e&unix.EPOLLOUT != 0 {
		ev |= Writable
	}
	if e&(unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		ev |= Hangup | Readable | PeerClosed
	}
	return ev
}

// wait returns the number of ready events, parking in Go's poller while
// there are none, and running the timers that come due meanwhile.
func (l *Loop) wait() (int, error) {
	for {
		l.mu.Lock()
		busy := len(l.posted) > 0 || l.closed
		l.mu.Unlock()
		if busy { // look, do not wait
			n, err := sock.Poll(l.epfd, l.events)
			if err == unix.EINTR {
				continue
			}
			return n, err
		}
		l.setDeadline()
		var n int
		var werr error
		err := l.rc.Read(func(uintptr) bool {
			n, werr = sock.Poll(l.epfd, l.events)
			return werr != nil || n > 0
		})
		if werr == unix.EINTR {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			l.runTimers()
			l.runLater()
			continue
		}
		if err != nil {
			return 0, err
		}
		return n, werr
	}
}

// setDeadline makes the poller's deadline the earliest timer's (none
// without timers).
func (l *Loop) setDeadline() {
	next, _ := l.timers.next()
	if !next.Equal(l.deadline) {
		l.ep.SetReadDeadline(next)
		l.deadline = next
	}
}

func (l *Loop) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Close makes Run return; Post refuses from then on. Any goroutine.
func (l *Loop) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	l.signal()
}

// signal makes the eventfd readable: a parked Run wakes up. mu held.
func (l *Loop) signal() {
	one := [8]byte{1} // the eventfd counter is a native-endian uint64
	unix.Write(l.wake, one[:])
}

func (l *Loop) close() {
	l.mu.Lock()
	l.closed = true
	posted := l.posted
	l.posted = nil
	unix.Close(l.wake) // under mu: no signal can race with its reuse
	l.mu.Unlock()
	for _, fn := range posted {
		l.run(fn)
	}
	l.runLater()
	for fd, h := range l.h {
		if c, ok := h.(io.Closer); ok {
			c.Close()
		}
		delete(l.h, fd)
	}
	l.ep.Close()
}

// Timer is a function the loop runs once, after a delay.
type Timer struct {
	at    time.Time
	fn    func()
	index int // in the heap; -1 when not scheduled
}

// AfterFunc runs fn in the loop after d. Loop goroutine only.
func (l *Loop) AfterFunc(d time.Duration, fn func()) *Timer {
	t := NewTimer(fn)
	l.Reset(t, d)
	return t
}

// NewTimer returns a timer that runs fn once Reset schedules it: one timer
// a connection re-arms instead of a new one per wait.
func NewTimer(fn func()) *Timer { return &Timer{fn: fn, index: -1} }

// Reset schedules t to run d from now, whether it was scheduled, ran or
// was stopped. Loop goroutine only.
func (l *Loop) Reset(t *Timer, d time.Duration) {
	t.at = time.Now().Add(d)
	if t.index >= 0 {
		heap.Fix(&l.timers, t.index)
		return
	}
	heap.Push(&l.timers, t)
}

// Scheduled reports whether t is to run.
func (t *Timer) Scheduled() bool { return t.index >= 0 }

// Stop keeps t from running; false when it already ran or was stopped.
// Loop goroutine only.
func (l *Loop) Stop(t *Timer) bool {
	if t == nil || t.index < 0 {
		return false
	}
	heap.Remove(&l.timers, t.index)
	return true
}

// runTimers runs the timers that are due, in the order they were due.
func (l *Loop) runTimers() {
	if len(l.timers) == 0 {
		return
	}
	now := time.Now()
	for len(l.timers) > 0 && !l.timers[0].at.After(now) {
		t := heap.Pop(&l.timers).(*Timer)
		l.run(t.fn)
	}
}

type timerHeap []*Timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *timerHeap) Push(x any) {
	t := x.(*Timer)
	t.index = len(*h)
	*h = append(*h, t)
}
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	t.index = -1
	return t
}

func (h timerHeap) next() (time.Time, bool) {
	if len(h) == 0 {
		return time.Time{}, false
	}
	return h[0].at, true
}
