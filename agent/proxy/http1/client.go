package http1

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Client sends HTTP/1.1 requests without net/http's Transport: the request
// is written and the response read in the caller's own goroutine, over a
// kept-alive connection pooled per key K (whatever names an endpoint). The
// Transport would hand each request to a writer goroutine and each
// response to a reader goroutine; on a proxy those two hand-offs are a large
// share of the CPU per request. A body over 16 KiB or of unknown length is
// still written by a goroutine of its own (see inlineBody). It does not do
// protocol upgrades.
type Client[K comparable] struct {
	dial func(ctx context.Context, k K) (net.Conn, error)
	cfg  ClientConfig
	mu   sync.Mutex
	idle map[K][]*clientConn[K] // each list oldest first
	done bool
	// reaper closes the connections idle for longer than IdleTimeout; it
	// is armed while one is idle (armed)
	reaper *time.Timer
	armed  bool
	// watched: the going-away signals (one per tunnel connection) a
	// goroutine waits on to close the idle connections they concern
	watched map[<-chan struct{}]struct{}
}

// ClientConfig bounds what a Client keeps.
type ClientConfig struct {
	// MaxIdlePerKey bounds the idle connections kept per key; 64 when
	// zero.
	MaxIdlePerKey int
	// IdleTimeout closes a connection idle for longer; 90 s when zero
	// (net/http's Transport default). It also bounds how long one whose
	// server closed it while idle, or whose endpoint went away, is held.
	IdleTimeout time.Duration
}

// NewClient returns a Client that connects with dial.
func NewClient[K comparable](dial func(ctx context.Context, k K) (net.Conn, error), cfg ClientConfig) *Client[K] {
	cfg.MaxIdlePerKey = cmp.Or(cfg.MaxIdlePerKey, 64)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 90*time.Second)
	return &Client[K]{dial: dial, cfg: cfg, idle: make(map[K][]*clientConn[K]),
		watched: make(map[<-chan struct{}]struct{})}
}

type clientConn[K comparable] struct {
	key K
	c   net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	// away, when the transport has one, is closed once its peer drains
	// (a tunnel stream whose destination node's proxy sent GOAWAY) or its
	// tunnel connection closed: the connection is then not kept for
	// another request
	away <-chan struct{}
	// idleAt: when it was last put in the pool
	idleAt time.Time
}

// goingAway reports whether the connection's transport is draining.
func (c *clientConn[K]) goingAway() bool {
	select {
	case <-c.away:
		return true
	default:
		return false
	}
}

var (
	clientReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
	clientWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}
)

// get returns an idle connection (reused=true) or dials a new one (always,
// when fresh).
func (p *Client[K]) get(ctx context.Context, k K, fresh bool) (*clientConn[K], bool, error) {
	var gone []*clientConn[K] // its tunnel went away (before its watch saw it)
	defer func() {
		for _, c := range gone {
			c.close()
		}
	}()
	p.mu.Lock()
	for l := p.idle[k]; len(l) > 0 && !fresh; l = p.idle[k] {
		c := l[len(l)-1]
		p.idle[k] = l[:len(l)-1]
		if !c.goingAway() {
			p.mu.Unlock()
			return c, true, nil
		}
		gone = append(gone, c)
	}
	p.mu.Unlock()
	tc, err := p.dial(ctx, k)
	if err != nil {
		return nil, false, err
	}
	br := clientReaderPool.Get().(*bufio.Reader)
	br.Reset(tc)
	bw := clientWriterPool.Get().(*bufio.Writer)
	bw.Reset(tc)
	c := &clientConn[K]{key: k, c: tc, br: br, bw: bw}
	if ga, ok := tc.(interface{ GoingAway() <-chan struct{} }); ok {
		c.away = ga.GoingAway()
		p.watch(c.away)
	}
	return c, false, nil
}

// watch closes the idle connections of a tunnel connection once it goes
// away: kept, they would hold the draining proxy until its grace period
// ends.
func (p *Client[K]) watch(away <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.watched[away]; ok {
		return
	}
	p.watched[away] = struct{}{}
	go func() {
		<-away
		var gone []*clientConn[K]
		p.mu.Lock()
		delete(p.watched, away)
		for k, l := range p.idle {
			kept := l[:0]
			for _, c := range l {
				if c.away == away {
					gone = append(gone, c)
				} else {
					kept = append(kept, c)
				}
			}
			clear(l[len(kept):])
			if len(kept) == 0 {
				delete(p.idle, k)
			} else {
				p.idle[k] = kept
			}
		}
		p.mu.Unlock()
		for _, c := range gone {
			c.close()
		}
	}()
}

func (p *Client[K]) put(c *clientConn[K]) {
	p.mu.Lock()
	if !p.done && len(p.idle[c.key]) < p.cfg.MaxIdlePerKey && c.br.Buffered() == 0 && !c.goingAway() {
		c.idleAt = time.Now()
		p.idle[c.key] = append(p.idle[c.key], c)
		if !p.armed {
			p.armed = true
			if p.reaper == nil {
				p.reaper = time.AfterFunc(p.cfg.IdleTimeout, p.reap)
			} else {
				p.reaper.Reset(p.cfg.IdleTimeout)
			}
		}
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	c.close()
}

// reap closes the connections idle for IdleTimeout or longer, and is armed
// again for the oldest one left.
func (p *Client[K]) reap() {
	var gone []*clientConn[K]
	p.mu.Lock()
	now := time.Now()
	var oldest time.Time
	for k, l := range p.idle {
		n := 0 // the expired ones are a prefix: a list is oldest first
		for n < len(l) && now.Sub(l[n].idleAt) >= p.cfg.IdleTimeout {
			n++
		}
		gone = append(gone, l[:n]...)
		if n == len(l) {
			delete(p.idle, k)
			continue
		}
		kept := append(l[:0], l[n:]...)
		clear(l[len(kept):])
		p.idle[k] = kept
		if oldest.IsZero() || kept[0].idleAt.Before(oldest) {
			oldest = kept[0].idleAt
		}
	}
	p.armed = !oldest.IsZero() && !p.done
	if p.armed {
		p.reaper.Reset(p.cfg.IdleTimeout - now.Sub(oldest))
	}
	p.mu.Unlock()
	for _, c := range gone {
		c.close()
	}
}

func (c *clientConn[K]) close() {
	c.c.Close()
	c.br.Reset(nil)
	clientReaderPool.Put(c.br)
	c.bw.Reset(nil)
	clientWriterPool.Put(c.bw)
}

// Close closes the idle connections; connections in use close when their
// response body is closed.
func (p *Client[K]) Close() {
	p.mu.Lock()
	p.done = true
	if p.reaper != nil {
		p.reaper.Stop()
	}
	var all []*clientConn[K]
	for k, l := range p.idle {
		all = append(all, l...)
		delete(p.idle, k)
	}
	p.mu.Unlock()
	for _, c := range all {
		c.close()
	}
}

// errStale: a reused connection was closed by the server before it
// answered (it timed out idle), or could not take the request, so the
// request can be sent again.
var errStale = errors.New("reused upstream connection closed before answering")

// errLost: a reused connection broke (reset, or the tunnel stream under it
// closed as its node proxy finished draining) after the request was sent and
// before any answer. The server may have seen the request: only an idempotent
// one is sent again, as Go's http.Transport does.
var errLost = errors.New("reused upstream connection failed before answering")

// Idempotent reports whether a request may be sent again after it may have
// reached the server: the methods Go's http.Transport replays, or a request
// that carries an idempotency key.
func Idempotent(r *http.Request) bool { return idempotent(r) }

func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// RoundTrip sends out on a pooled connection to k and reads the response;
// interim (1xx) responses other than 101 are skipped. The response body
// returns the connection to the pool when read to the end and closed. A
// reused connection that turns out closed (errStale), or any connection that
// breaks before any answer to an idempotent request (errLost: a tunnel stream
// the destination cut as a policy change made it decide per request), is
// retried once on a newly dialled one (the other idle ones may be going the
// same way) when the body can be replayed (out.GetBody, or no body). ctx
// ending closes the connection.
func (p *Client[K]) RoundTrip(ctx context.Context, k K, out *http.Request) (*http.Response, error) {
	for try := 0; ; try++ {
		c, reused, err := p.get(ctx, k, try > 0)
		if err != nil {
			return nil, err
		}
		resp, err := c.exchange(ctx, out)
		if err == nil {
			resp.Body.(*clientBody[K]).pool = p
			return resp, nil
		}
		lost := errors.Is(err, errLost) && idempotent(out)
		again := reused && errors.Is(err, errStale) || lost
		if try == 0 && again && (out.GetBody != nil || out.Body == nil || out.Body == http.NoBody) {
			if out.GetBody != nil {
				if out.Body, err = out.GetBody(); err != nil {
					return nil, err
				}
			}
			continue
		}
		return nil, err
	}
}

// bodyLength is the length of the request body Request.Write sends: -1
// when unknown (chunked).
func bodyLength(r *http.Request) int64 {
	switch {
	case r.Body == nil || r.Body == http.NoBody:
		return 0
	case r.ContentLength == 0:
		return -1
	}
	return r.ContentLength
}

// inlineBody: a request body up to this size is written with the head,
// in the caller's goroutine, before the answer is read; it fits in what the
// connection takes without the server reading it. A larger one is written
// by a goroutine of its own while the caller reads the answer, as Go's
// Transport does: a server may answer before it read the body (413, 401),
// then close the connection or stop reading, and that answer is the one to
// give. Such a connection is kept only if its body was written in full.
const inlineBody = 16 << 10

func (c *clientConn[K]) exchange(ctx context.Context, out *http.Request) (*http.Response, error) {
	var aborted atomic.Bool
	stop := context.AfterFunc(ctx, func() { aborted.Store(true); c.c.Close() })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.close()
		if aborted.Load() {
			return nil, context.Cause(ctx)
		}
		return nil, err
	}
	// wrote reports the end of a body written by its own goroutine (nil:
	// written inline). A writer still reading the body when the exchange
	// ends stops at its next write, on the closed connection.
	var wrote chan error
	if n := bodyLength(out); n < 0 || n > inlineBody {
		wrote = make(chan error, 1)
		go func() {
			body := &bodyReadErr{ReadCloser: out.Body}
			o := *out
			o.Body = body
			err := o.Write(c.c) // its own buffer: c.bw goes back to a pool with c
			wrote <- err
			if body.err != nil {
				// the body failed: the server has no whole request and
				// waits for the rest; end the read. A failed write to the
				// connection needs no close: the read gets what the server
				// answered before it closed (an early 413), then its end.
				c.c.Close()
			}
		}()
	} else {
		if err := out.Write(c.bw); err != nil {
			return fail(errors.Join(errStale, err))
		}
		if err := c.bw.Flush(); err != nil {
			return fail(errors.Join(errStale, err))
		}
	}
	for first := true; ; first = false {
		resp, err := http.ReadResponse(c.br, out)
		if err != nil {
			var werr error
			if wrote != nil {
				select {
				case werr = <-wrote:
				default:
				}
			}
			switch {
			case !first: // an interim response came: the server has the request
			case werr != nil: // the write failed first, and ended the read
				err = errors.Join(errStale, werr)
			case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
				err = errors.Join(errStale, err)
			default:
				err = errors.Join(errLost, err)
			}
			return fail(err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue // interim responses are not forwarded
		}
		resp.Body = &clientBody[K]{ReadCloser: resp.Body, c: c, stop: stop, keep: !resp.Close && !out.Close, wrote: wrote}
		return resp, nil
	}
}

// bodyReadErr notes a request body's read error (its end is not one).
type bodyReadErr struct {
	io.ReadCloser
	err error
}

func (b *bodyReadErr) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// clientBody gives the connection back once the body was read to its end
// (and the request's, when written apart, was written in full).
type clientBody[K comparable] struct {
	io.ReadCloser
	c     *clientConn[K]
	stop  func() bool
	keep  bool
	eof   bool
	done  bool
	pool  *Client[K]
	wrote chan error
}

func (b *clientBody[K]) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *clientBody[K]) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	err := b.ReadCloser.Close()
	if b.wrote != nil {
		select {
		case werr := <-b.wrote:
			b.keep = b.keep && werr == nil
		default: // still writing: the server answered without the whole body
			b.keep = false
		}
	}
	if b.stop() && b.eof && b.keep && err == nil && b.pool != nil {
		b.pool.put(b.c)
		return nil
	}
	b.c.close()
	return err
}
