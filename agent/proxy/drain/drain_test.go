package drain

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

type fakeConn struct {
	closed, drained atomic.Bool
}

func (c *fakeConn) Close() error { c.closed.Store(true); return nil }

type fakeDrainer struct{ fakeConn }

func (c *fakeDrainer) Drain() { c.drained.Store(true) }

// timeoutListener fails Accept with a timeout n times, then closes.
type timeoutListener struct {
	net.Listener
	n      atomic.Int32
	closed chan struct{}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "accept timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func (l *timeoutListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, timeoutErr{}
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *timeoutListener) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func TestServeAndClose(t *testing.T) {
	var g Group
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	handled := make(chan struct{}, 1)
	served := make(chan error, 1)
	go func() {
		served <- g.Serve(l, func(c net.Conn) {
			defer c.Close()
			handled <- struct{}{}
			<-release
		})
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-handled
	if g.Live() != 2 {
		t.Fatalf("live %d, want 2 (the handler and the accept loop)", g.Live())
	}
	g.Close()
	if err := <-served; !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	waited := make(chan struct{})
	go func() { g.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Wait returned while a handler runs")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-waited
	// a listener served after Close is closed at once
	l2, _ := net.Listen("tcp", "127.0.0.1:0")
	if err := g.Serve(l2, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("late Serve: %v", err)
	}
	if _, err := l2.Accept(); err == nil {
		t.Fatal("late listener left open")
	}
}

func TestServeBacksOffTemporaryErrors(t *testing.T) {
	var g Group
	l := &timeoutListener{closed: make(chan struct{})}
	l.n.Store(3)
	served := make(chan error, 1)
	start := time.Now()
	go func() { served <- g.Serve(l, nil) }()
	for l.n.Load() >= 0 {
		time.Sleep(time.Millisecond)
	}
	// 5 + 10 + 20 ms of pauses
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("three timeouts retried in %v", d)
	}
	l.Close() // not through the group: a real failure
	if err := <-served; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve returned %v", err)
	}
}

func TestDrain(t *testing.T) {
	var g Group
	idle, busy, h2 := &fakeConn{}, &fakeConn{}, &fakeDrainer{}
	for _, c := range []Conn{idle, busy, h2} {
		if !g.Track(c) {
			t.Fatal("track refused")
		}
	}
	g.SetIdle(idle, true)
	var quiet atomic.Bool
	drained := make(chan error, 1)
	go func() { drained <- g.Drain(context.Background(), quiet.Load) }()
	deadline := time.Now().Add(5 * time.Second)
	for !g.Draining() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * time.Millisecond)
	if !idle.closed.Load() || busy.closed.Load() || !h2.drained.Load() || h2.closed.Load() {
		t.Fatalf("after drain began: idle closed %v, busy closed %v, drainer drained %v",
			idle.closed.Load(), busy.closed.Load(), h2.drained.Load())
	}
	if g.SetIdle(busy, true) {
		t.Fatal("a connection turned idle during a drain")
	}
	// accepted before the drain, tracked after: served, and drained
	late := &fakeDrainer{}
	if !g.Track(late) || !late.drained.Load() {
		t.Fatal("late connection not served and drained")
	}
	quiet.Store(true)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	g.Close()
	if !busy.closed.Load() || !late.closed.Load() {
		t.Fatal("Close left connections open")
	}
	if g.Track(&fakeConn{}) {
		t.Fatal("tracked after Close")
	}
}

func TestDrainTimeout(t *testing.T) {
	var g Group
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := g.Drain(ctx, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

// handListener's first Accept holds a connection until told to return it:
// a connection the kernel handed over just as a drain closed the listener.
type handListener struct {
	net.Listener
	accepting, give chan struct{}
	closed          chan struct{}
	once            atomic.Bool
}

func (l *handListener) Accept() (net.Conn, error) {
	if l.once.CompareAndSwap(false, true) {
		close(l.accepting)
		<-l.give
		a, _ := net.Pipe()
		return a, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *handListener) Close() error {
	if l.once.Load() {
		select {
		case <-l.closed:
		default:
			close(l.closed)
		}
	}
	return nil
}

// A drain that waits for Live to reach zero does not end while a
// connection accepted as it began has not been handed to its handler:
// ending then would close (reset) a connection the client already wrote
// its request on.
func TestDrainWaitsForAConnectionInAccept(t *testing.T) {
	var g Group
	l := &handListener{accepting: make(chan struct{}), give: make(chan struct{}), closed: make(chan struct{})}
	var handled atomic.Bool
	served := make(chan error, 1)
	go func() {
		served <- g.Serve(l, func(c net.Conn) {
			defer c.Close()
			time.Sleep(10 * time.Millisecond)
			handled.Store(true)
		})
	}()
	<-l.accepting
	drained := make(chan error, 1)
	go func() { drained <- g.Drain(context.Background(), func() bool { return g.Live() == 0 }) }()
	select {
	case err := <-drained:
		t.Fatalf("drain ended (%v) with a connection in Accept's hands", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(l.give)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if !handled.Load() {
		t.Fatal("drain ended before the accepted connection was served")
	}
	if err := <-served; !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve returned %v", err)
	}
}
