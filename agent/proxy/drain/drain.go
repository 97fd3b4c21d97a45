// Package drain keeps what a proxy server must end when it stops: its
// listeners, the connections it serves and the goroutines serving them.
// Serve is the one accept loop (with backoff on temporary errors), Track
// and SetIdle the one table of live connections; Drain stops accepting and
// lets work finish, Close ends everything at once.
package drain

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is returned by Serve once a drain or Close began.
var ErrClosed = errors.New("server closed")

// Conn is a tracked connection.
type Conn interface {
	Close() error
}

// Drainer is a Conn that can be asked to finish what it carries and take
// nothing new (an HTTP/2 GOAWAY), instead of being closed.
type Drainer interface {
	Conn
	Drain()
}

// Group tracks listeners and connections. The zero Group is ready to use.
type Group struct {
	mu        sync.Mutex
	idle      *sync.Cond // signalled when live drops to zero
	listeners map[net.Listener]struct{}
	conns     map[Conn]bool // true: idle
	draining  atomic.Bool   // Drain or Close began
	closed    bool          // Close began
	live      int           // handlers running
}

func (g *Group) initLocked() {
	if g.conns == nil {
		g.idle = sync.NewCond(&g.mu)
		g.listeners = make(map[net.Listener]struct{})
		g.conns = make(map[Conn]bool)
	}
}

// Serve accepts connections on l and runs handle for each in its own
// goroutine, until a drain or Close closes l: then it returns ErrClosed.
// Temporary accept errors are retried after a pause (5ms, doubling up to
// 1s); any other is returned.
func (g *Group) Serve(l net.Listener, handle func(net.Conn)) error {
	g.mu.Lock()
	g.initLocked()
	if g.draining.Load() {
		g.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	g.listeners[l] = struct{}{}
	// The loop counts as live until it returns: a connection Accept
	// returned just as a drain closed l is counted before the loop can
	// return, so a drain waiting for Live to reach zero never ends (and
	// closes what it serves with) before that connection is served.
	g.live++
	g.mu.Unlock()
	defer g.done()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if g.draining.Load() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		g.mu.Lock()
		g.live++
		g.mu.Unlock()
		go func() {
			defer g.done()
			handle(c)
		}()
	}
}

func (g *Group) done() {
	g.mu.Lock()
	g.live--
	if g.live == 0 {
		g.idle.Broadcast()
	}
	g.mu.Unlock()
}

// Track adds c, busy. It returns false once Close began: the caller closes
// c itself. A connection tracked after a drain began is served (it was
// accepted before); a Drainer is asked to drain at once.
func (g *Group) Track(c Conn) bool {
	g.mu.Lock()
	g.initLocked()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	g.conns[c] = false
	g.mu.Unlock()
	if d, ok := c.(Drainer); ok && g.draining.Load() {
		d.Drain()
	}
	return true
}

// Hold counts one more live handler: work a handler handed on before it
// returned (a connection an event loop serves from then on). Drain is not
// quiet and Wait waits until Release. False once Close began: nothing is
// held.
func (g *Group) Hold() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	if g.closed {
		return false
	}
	g.live++
	return true
}

// Release ends what Hold counted.
func (g *Group) Release() { g.done() }

// Untrack forgets c (it ended).
func (g *Group) Untrack(c Conn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
}

// SetIdle marks c idle (waiting for work: a drain closes it) or busy. It
// returns false once a drain began: c must take no more work.
func (g *Group) SetIdle(c Conn, idle bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.draining.Load() {
		return false
	}
	if _, ok := g.conns[c]; ok {
		g.conns[c] = idle
	}
	return true
}

// Draining reports whether a drain or Close began.
func (g *Group) Draining() bool { return g.draining.Load() }

// Drain stops accepting (closes the listeners), closes idle connections,
// asks Drainers to drain, and waits until quiet reports true (checked
// every 20ms) or ctx ends, whose error it then returns. The caller closes
// what is left with Close.
func (g *Group) Drain(ctx context.Context, quiet func() bool) error {
	g.mu.Lock()
	g.initLocked()
	g.draining.Store(true)
	var drain []Drainer
	for l := range g.listeners {
		l.Close()
	}
	for c, idle := range g.conns {
		if idle {
			c.Close()
		} else if d, ok := c.(Drainer); ok {
			drain = append(drain, d)
		}
	}
	g.mu.Unlock()
	for _, d := range drain {
		d.Drain()
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !quiet() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// Close closes the listeners and every tracked connection at once; later
// Track calls fail.
func (g *Group) Close() {
	g.mu.Lock()
	g.initLocked()
	g.draining.Store(true)
	g.closed = true
	for l := range g.listeners {
		l.Close()
	}
	conns := make([]Conn, 0, len(g.conns))
	for c := range g.conns {
		conns = append(conns, c)
	}
	g.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// Live counts the handlers Serve started that have not returned, and the
// Serve loops themselves (a drain or Close ends them).
func (g *Group) Live() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.live
}

// Wait waits until no handler Serve started, and no Serve loop, runs.
func (g *Group) Wait() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.initLocked()
	for g.live > 0 {
		g.idle.Wait()
	}
}
