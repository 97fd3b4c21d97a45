package outbound

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/proxy/evloop"
	"github.com/weft-mesh/weft/agent/proxy/forward"
	"github.com/weft-mesh/weft/agent/proxy/h2"
	"github.com/weft-mesh/weft/agent/proxy/http1"
	"github.com/weft-mesh/weft/agent/proxy/sock"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/logkey"
)

// Captured HTTP/1.1 clients in event loops (Config.Loops).
//
// A goroutine per client connection costs a hand-off per request: the
// tunnel's reader wakes the goroutine waiting for its answer, and each
// wake-up is a thread's. In the loops every client socket and every tunnel
// connection of the loop (h2.LoopConn) is served by one goroutine, which
// reads what is ready, routes and forwards what it read, and writes back
// what came, parking only when nothing is ready (agent/proxy/evloop).
//
// A loop serves the requests it can finish without waiting on anything but
// sockets: HTTP/1.x with no body or a body of known length up to
// maxLoopBody, to a tunnelled HTTP/1 backend, on routes without retries or
// timeouts. A connection whose request is anything else (an upgrade, Expect,
// a chunked or larger body, HTTP/2 prior knowledge, a retry policy or a
// timeout, an h2c or gRPC backend, a plaintext endpoint) is handed back,
// from that request on, to the goroutine server, which answers it as it
// answers every connection when the loops are off. Answers are written by
// the server's own writer (http1.Response) and the handler's own pieces
// (pickRoute, pick, writeResponseHeader): the loops answer as the server
// does.

// maxLoopBody is the largest request body a loop serves (it waits until
// the body is all here).
const maxLoopBody = 64 << 10

// loopHeaderTimeout bounds reading a request's header (the server's
// ReadHeaderTimeout default).
const loopHeaderTimeout = 30 * time.Second

// loopIdleUpstream bounds how long an idle upstream stream is kept.
const loopIdleUpstream = 90 * time.Second

// loops are the outbound's event loops.
type loops struct {
	p    *Proxy
	all  []*eloop
	next atomic.Uint32
	wg   sync.WaitGroup
}

func newLoops(p *Proxy, n int) (*loops, error) {
	ls := &loops{p: p}
	for range n {
		l, err := evloop.New()
		if err != nil {
			ls.close()
			return nil, fmt.Errorf("outbound event loop: %w", err)
		}
		el := &eloop{p: p, l: l, tunnels: map[tunnelKey]*loopTunnel{}, idle: map[upstreamKey][]*upstream{},
			clients: map[*loopClient]struct{}{}, buf: make([]byte, 32<<10), head: bufio.NewReaderSize(nil, 4<<10)}
		// a panic ends the connection whose code panicked, not the loop
		// (the server's handlers recover theirs the same way)
		l.SetOnPanic(func(v any) { p.cfg.Logger.Error("panic serving a request", "panic", fmt.Sprint(v)) })
		ls.all = append(ls.all, el)
		ls.wg.Add(1)
		go func() {
			defer ls.wg.Done()
			if err := l.Run(context.Background()); err != nil {
				p.cfg.Logger.Error("outbound event loop stopped", logkey.Error, err)
			}
		}()
	}
	return ls, nil
}

// close ends every loop with what it serves, and waits for them.
func (ls *loops) close() {
	for _, el := range ls.all {
		el.l.Post(func() {
			el.closeAll()
			el.l.Close()
		})
	}
	ls.wg.Wait()
}

// serve hands an accepted L7 connection to a loop. False when it could not
// be (it is then the caller's, untouched).
func (ls *loops) serve(c *leasedConn, info *connInfo) bool {
	if _, ok := c.Conn.(syscall.Conn); !ok {
		return false // not a socket a loop can take
	}
	el := ls.all[int(ls.next.Add(1))%len(ls.all)]
	if !ls.p.conns.Hold() {
		return false
	}
	s, err := evloop.Take(c.Conn)
	if err != nil {
		ls.p.conns.Release()
		c.lease.Close()
		return true // Take closed it
	}
	lc := &loopClient{el: el, s: s, info: info, peer: c.RemoteAddr()}
	lc.timer = evloop.NewTimer(lc.timedOut)
	lc.resume = func() {
		defer lc.guard()
		if !lc.closed && lc.cur == nil {
			lc.serve()
		}
	}
	lc.handle = &loopHandle{c: lc}
	if !el.l.Post(func() { el.add(lc) }) {
		s.Close()
		c.lease.Close()
		ls.p.conns.Release()
	}
	return true
}

// eloop is one loop and what it serves: its client connections, its tunnel
// connections and their idle upstream streams.
type eloop struct {
	p       *Proxy
	l       *evloop.Loop
	tunnels map[tunnelKey]*loopTunnel
	idle    map[upstreamKey][]*upstream
	clients map[*loopClient]struct{}
	buf     []byte
	head    *bufio.Reader // parses request and response heads
	hr      bytes.Reader
}

type tunnelKey struct {
	pairKey
	node string
}

// loopTunnel is the loop's tunnel connection to one node proxy for one pair
// of identities, or its dial under way (waiting: the streams to open).
type loopTunnel struct {
	conn    *h2.LoopConn
	dialing bool
	waiting []*upstream
}

func (el *eloop) add(c *loopClient) {
	defer c.guard()
	if !el.p.conns.Track(c.handle) {
		c.s.Close()
		c.info.lease.Close()
		el.p.conns.Release()
		return
	}
	if err := el.l.Add(c.s.FD(), c); err != nil {
		el.p.cfg.Logger.Warn("outbound event loop: add client", logkey.Error, err)
		c.s.Close()
		c.info.lease.Close()
		el.p.conns.Untrack(c.handle)
		el.p.conns.Release()
		return
	}
	el.clients[c] = struct{}{}
	c.headerTimer() // the first request has ReadHeaderTimeout, as with the server
	c.serve()
}

func (el *eloop) closeAll() {
	for c := range el.clients {
		c.close()
	}
	for _, t := range el.tunnels {
		if t.conn != nil {
			t.conn.Close()
		}
	}
}

// Close closes the connection (the loop closes what it still serves when
// it stops).
func (c *loopClient) Close() error {
	c.close()
	return nil
}

// loopHandle is a loop's client connection in the drain table: closing it
// asks the loop to.
type loopHandle struct{ c *loopClient }

func (h *loopHandle) Close() error {
	c := h.c
	c.el.l.Post(c.close)
	return nil
}

// loopClient is one captured HTTP/1.1 connection served by a loop.
type loopClient struct {
	el     *eloop
	s      *evloop.Socket
	bw     *bufio.Writer
	info   *connInfo
	peer   net.Addr
	handle *loopHandle
	in     []byte // read, not yet served
	held   int64  // bytes of in reserved from the lease
	cur    *exchange
	// x, w and out are the storage of the exchange under way, kept from
	// one request to the next (cur is &x while one is)
	x      exchange
	w      http1.Response
	out    []byte
	resume func() // serves what waits once an answer is done
	timer  *evloop.Timer
	// inHeader: timer bounds the rest of a header, not the idle wait
	inHeader bool
	served   int  // requests started (the first is served even in a drain)
	eof      bool // the client closed its side
	closed   bool
	// closing: close once what waits for the socket is written
	closing bool
}

// exchange is the request a client connection is being answered.
type exchange struct {
	req    *http.Request
	w      *http1.Response
	rw     http.ResponseWriter // w, or the metrics' recorder over it
	ex     *metrics.Recorder
	rq     request
	rt     *routed // &route once routed
	route  routed
	out    []byte // the request as sent upstream (sent again after a stale stream)
	key    upstreamKey
	up     *upstream
	tries  int
	resp   *http.Response
	keys   []string
	left   int64 // body bytes to come (-1: until the stream ends)
	chunks *chunkDecoder
	noBody bool
}

func (c *loopClient) Ready(ev evloop.Events) {
	if c.closed {
		return
	}
	defer c.guard()
	if err := c.s.Notify(ev); err != nil {
		c.close()
		return
	}
	if c.s.Pending() == 0 {
		if c.closing {
			c.close()
			return
		}
		if x := c.cur; x != nil && x.up != nil {
			x.up.settle()
		}
	}
	if ev&evloop.Readable != 0 {
		c.serve()
	}
}

// read reads what the socket holds into c.in; false when nothing more is
// there now, or the connection closed.
func (c *loopClient) read() bool {
	if c.eof {
		return false
	}
	n, err := c.s.Read(c.el.buf)
	if n > 0 {
		c.in = append(c.in, c.el.buf[:n]...)
		return true
	}
	switch {
	case errors.Is(err, evloop.ErrWouldBlock):
	case err == io.EOF:
		c.eof = true
		if c.cur == nil && len(c.in) == 0 {
			c.close()
		}
	default:
		c.close()
	}
	return false
}

// consume drops n served bytes from c.in and returns the budget its
// header held.
func (c *loopClient) consume(n int) {
	c.in = c.in[:copy(c.in, c.in[n:])]
	if cap(c.in) > maxLoopBody && len(c.in) < 4<<10 {
		c.in = append([]byte(nil), c.in...) // a big request went: do not keep its buffer
	}
	c.info.lease.Release(c.held)
	c.held = 0
}

// reserve holds the first n bytes of c.in (a request's header, or as much
// of it as came) from the pod's buffer budget, as the server does; false
// when the budget cannot.
func (c *loopClient) reserve(n int) bool {
	if more := int64(n) - c.held; more > 0 {
		if !c.info.lease.Reserve(more) {
			return false
		}
		c.held += more
	}
	return true
}

// serve reads and starts requests while none is being answered.
func (c *loopClient) serve() {
	for !c.closed && !c.closing {
		if c.cur != nil {
			// read ahead (a pipelined request, or the client's close)
			// only while little waits
			if len(c.in) < maxLoopBody && c.read() {
				continue
			}
			return
		}
		if len(c.in) > 0 {
			if done := c.next(); done {
				continue
			}
		}
		if !c.read() {
			if c.eof && c.cur == nil && !c.closed {
				if len(c.in) > 0 { // a request cut short
					c.close()
				}
			}
			return
		}
	}
}

// next starts the request at the head of c.in when it is all here; false
// when more bytes are needed.
func (c *loopClient) next() bool {
	p := c.el.p
	if c.in[0] < 'A' || c.in[0] > 'Z' || len(c.in) >= 3 && string(c.in[:3]) == "PRI" {
		c.handOff(metrics.HandoffProtocol) // HTTP/2 prior knowledge, or not a request line the loop reads: the server's
		return false
	}
	end := bytes.Index(c.in, crlf2)
	if end < 0 {
		if len(c.in) > p.cfg.Limits.HeaderBytes+4096 || !c.reserve(len(c.in)) {
			c.handOff(metrics.HandoffRefused) // the server answers 431, or 503 for the budget, as it always does
			return false
		}
		c.headerTimer()
		return false
	}
	end += 4
	if !c.reserve(end) {
		c.handOff(metrics.HandoffRefused)
		return false
	}
	el := c.el
	el.hr.Reset(c.in[:end])
	el.head.Reset(&el.hr)
	req, err := http.ReadRequest(el.head)
	el.head.Reset(nil)
	if err != nil || end > p.cfg.Limits.HeaderBytes+4096 {
		c.handOff(metrics.HandoffRefused) // 400 or 431, from the server
		return false
	}
	if code, _ := http1.CheckRequest(req); code != 0 {
		c.handOff(metrics.HandoffRefused)
		return false
	}
	if why := unloopable(req); why != "" {
		c.handOff(why)
		return false
	}
	n := end + int(req.ContentLength)
	if len(c.in) < n {
		return false // the body is still coming
	}
	var body []byte
	if req.ContentLength > 0 {
		body = bytes.Clone(c.in[end:n])
		req.Body = io.NopCloser(bytes.NewReader(body))
	} else {
		req.Body = http.NoBody
	}
	if c.served > 0 && !c.el.p.conns.SetIdle(c.handle, false) {
		c.close() // a drain began while it waited: the server closes too
		return false
	}
	c.served++
	c.stopTimer()
	if why := c.start(req, body); why != "" {
		c.handOff(why)
		return false
	}
	c.consume(n)
	return true
}

// unloopable says why a loop does not serve req (a Handoff* reason), or
// "" when it does.
func unloopable(req *http.Request) string {
	switch {
	case req.ProtoMajor != 1 || req.Method == http.MethodConnect:
		return metrics.HandoffProtocol
	case len(req.Header["Expect"]) > 0 || upgradeType(req.Header) != "":
		return metrics.HandoffUpgrade
	case req.ContentLength < 0 || req.ContentLength > maxLoopBody || len(req.TransferEncoding) > 0:
		return metrics.HandoffBody
	}
	return ""
}

// start serves req as the handler does, up to sending it. When the
// request's route or backend is one the loop does not serve it says why
// (a Handoff* reason): nothing was answered yet, the server takes it.
func (c *loopClient) start(req *http.Request, body []byte) string {
	p := c.el.p
	c.bw = loopWriters.Get().(*bufio.Writer) // an idle connection holds none
	c.bw.Reset(c.s)
	p.h1srv.ResetResponse(&c.w, c.bw, req)
	c.x = exchange{req: req, w: &c.w}
	x := &c.x
	x.rw, x.ex = p.observe(x.w, c.info)
	x.rq = request{info: c.info, snap: p.snap.Load(), hasBody: len(body) > 0, body: body}
	x.rq.svc = x.rq.snap.Services[c.info.orig.Dst]
	destination(x.ex, x.rq.svc)
	p.requests.Add(1)
	c.cur = x
	if x.rq.svc == nil {
		httpError(x.rw, http.StatusServiceUnavailable, "service is no longer meshed")
		c.finish()
		return ""
	}
	if !p.pickRoute(context.Background(), x.rw, req, &x.rq, x.ex, &x.route) {
		c.finish() // answered here: a redirect, a direct response, no route
		return ""
	}
	rt := &x.route
	if r := rt.rule; r != nil && (r.Retry != nil && r.Retry.Attempts > 0 || r.RequestTimeout > 0 || r.BackendRequestTimeout > 0) {
		c.drop()
		return metrics.HandoffRoute
	}
	x.rt = rt
	prepareRequestHeaders(req.Header)
	if len(rt.plan.Mirrors) > 0 {
		for _, m := range rt.plan.Mirrors {
			p.mirror(x.rq, m, req, rt.target)
		}
	}
	return c.send()
}

// drop forgets the exchange begun: the server serves the request instead.
func (c *loopClient) drop() {
	c.cur = nil
	c.el.p.requests.Add(-1)
	c.releaseWriter()
}

// loopWriters are the answer buffers of the exchanges under way.
var loopWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// flush writes what the answer buffer holds to the socket.
func (c *loopClient) flush() {
	if c.bw != nil {
		c.bw.Flush()
	}
}

// releaseWriter gives the answer buffer back (what it held is dropped:
// flush first to keep it).
func (c *loopClient) releaseWriter() {
	if c.bw != nil {
		c.bw.Reset(nil)
		loopWriters.Put(c.bw)
		c.bw = nil
	}
}

// send sends the exchange's request on an upstream stream. When its
// backend is one the loop does not serve (known before the first try) it
// says why, as start does.
func (c *loopClient) send() string {
	x := c.cur
	p := c.el.p
	if x.out == nil { // a second try goes to the same endpoint, as http1.Client's
		ep, node, h2, err := p.pick(&x.rq, x.rt.cluster, x.req, "")
		if err != nil {
			c.failed(err)
			return ""
		}
		if h2 || ep.Plaintext {
			c.drop()
			return metrics.HandoffBackend
		}
		x.key = upstreamKey{src: c.info.src, dst: ep.Identity, node: node, addr: ep.Addr}
		out, ok := appendRequest(slices.Grow(c.out[:0], 512+len(x.rq.body)), x.req.Method, x.req.Host, x.rt.target, x.req.Header, x.rq.body)
		if !ok {
			var b bytes.Buffer
			req := outRequest(&x.rq, x.req, ep, x.rt.target)
			if err := req.Write(&b); err != nil {
				c.failed(err)
				return ""
			}
			out = b.Bytes()
		}
		x.out = out
	}
	u, err := c.el.upstream(x.key, x.tries > 0)
	if err != nil {
		c.failed(err)
		return ""
	}
	x.up, u.c = u, c
	u.sent = true
	if u.st != nil {
		u.write(x.out)
	}
	return ""
}

// failed answers an exchange whose request got no answer from upstream.
func (c *loopClient) failed(err error) {
	x := c.cur
	code, msg := forward.Answer(err, context.Background(), context.Background())
	if code == http.StatusBadGateway && c.el.p.upstreamLog.Allow() {
		cluster := ""
		if x.rt != nil {
			cluster = x.rt.cluster
		}
		c.el.p.cfg.Logger.Warn("answered 502: upstream failed", logkey.Cluster, cluster, logkey.Error, err)
	}
	httpError(x.rw, code, msg)
	c.finish()
}

// onUpstream handles what the exchange's upstream stream brought.
func (c *loopClient) onUpstream() {
	x := c.cur
	if x == nil || x.up == nil {
		return
	}
	u := x.up
	for x.resp == nil {
		end := bytes.Index(u.in, crlf2)
		if end < 0 {
			switch {
			case u.ended && x.tries == 0 && (len(u.in) == 0 && retryable(u, x.req) || len(u.in) > 0 && http1.Idempotent(x.req)):
				// once more, on a new stream, as http1.Client does (a head
				// cut short: the client saw nothing of it)
				c.resend()
			case u.ended:
				c.upstreamLost(fmt.Errorf("upstream closed before answering: %w", cmpErr(u.err, io.ErrUnexpectedEOF)))
			case len(u.in) > c.el.p.cfg.Limits.HeaderBytes+4096:
				c.upstreamLost(errors.New("upstream answer header too large"))
			}
			return
		}
		end += 4
		el := c.el
		el.hr.Reset(u.in[:end])
		el.head.Reset(&el.hr)
		resp, err := http.ReadResponse(el.head, x.req)
		el.head.Reset(nil)
		if err != nil {
			c.upstreamLost(fmt.Errorf("reading the upstream answer: %w", err))
			return
		}
		u.take(end)
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				c.upstreamLost(errors.New("upstream switched protocols unasked"))
				return
			}
			continue // interim answers are not forwarded
		}
		x.resp = resp
		x.keys = writeResponseHeader(x.rw, x.req, resp, &x.rt.plan, &x.rq.result)
		x.noBody = x.req.Method == http.MethodHead || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified
		switch {
		case x.noBody:
		case len(resp.TransferEncoding) > 0:
			x.chunks = &chunkDecoder{}
		default:
			x.left = resp.ContentLength // -1: until the stream ends
		}
		if x.left < 0 || x.chunks != nil {
			x.w.FlushError() // a stream: its header goes at once
		}
	}
	done, err := c.body()
	if err == nil && !done && u.ended && c.retryCut() {
		return
	}
	if err != nil || (!done && u.ended) {
		c.abort()
		return
	}
	if done {
		if x.chunks != nil {
			writeTrailers(x.rw.Header(), x.chunks.trailer, x.keys)
		}
		c.finish()
		return
	}
	if x.left < 0 || x.chunks != nil {
		x.w.FlushError()
	}
	c.flush()
}

// body writes what the upstream brought of the answer's body; true once it
// is all written.
func (c *loopClient) body() (bool, error) {
	x := c.cur
	u := x.up
	switch {
	case x.noBody:
		return true, nil
	case x.chunks != nil:
		n, done, err := x.chunks.feed(u.in, func(p []byte) error { _, err := x.rw.Write(p); return err })
		u.take(n)
		return done, err
	case x.left < 0:
		if len(u.in) > 0 {
			if _, err := x.rw.Write(u.in); err != nil {
				return false, err
			}
			u.take(len(u.in))
		}
		return u.ended && u.err == nil, nil
	default:
		n := int(min(int64(len(u.in)), x.left))
		if n > 0 {
			if _, err := x.rw.Write(u.in[:n]); err != nil {
				return false, err
			}
			u.take(n)
			x.left -= int64(n)
		}
		return x.left == 0, nil
	}
}

// retryable reports whether a request whose stream ended before any answer
// may be sent again. Whatever the request, when the stream ended before
// the destination answered its CONNECT (reset, its tunnel connection
// closed, or a GOAWAY that did not take it: the destination's agent went
// away): nothing reached the pod. Then a kept stream that turned out
// closed (the server timed it out), or a stream broken after an idempotent
// request went (the destination cut the streams it had spliced when a
// policy change made it decide per request). Not when the tunnel refused
// the stream: that answer would not change.
func retryable(u *upstream, req *http.Request) bool {
	if !u.opened {
		return errors.Is(u.err, h2.ErrStreamReset) || errors.Is(u.err, h2.ErrConnClosed) || errors.Is(u.err, h2.ErrGoingAway)
	}
	return u.reused && u.err == nil || http1.Idempotent(req)
}

// retryCut sends an idempotent request once more when its answer was cut
// after its head, before any of it reached the client (a pod that crashed
// or closed, a policy change that cut a spliced stream): the answer begun
// is dropped, the client gets the next one whole. True when it was sent.
func (c *loopClient) retryCut() bool {
	x := c.cur
	if x.tries > 0 || x.w.Committed() || !http1.Idempotent(x.req) {
		return false
	}
	c.resend()
	return true
}

// resend sends the exchange's request once more, on a new stream: what its
// last stream brought, which never reached the client, is dropped.
func (c *loopClient) resend() {
	x := c.cur
	x.up.discard()
	x.up = nil
	x.resp, x.keys, x.chunks, x.left, x.noBody = nil, nil, nil, 0, false
	c.el.p.h1srv.ResetResponse(x.w, c.bw, x.req)
	x.ex.Retried()
	x.tries++
	c.send()
}

// upstreamLost answers 502 when nothing was answered yet, else aborts.
func (c *loopClient) upstreamLost(err error) {
	x := c.cur
	if x.up != nil {
		x.up.discard()
		x.up = nil
	}
	if x.resp != nil || x.w.Committed() {
		c.abort()
		return
	}
	c.failed(err)
}

// abort ends an answer that cannot be completed: the client sees the
// connection close, not a truncated success.
func (c *loopClient) abort() {
	c.flush()
	c.close()
}

// finish completes the exchange's answer and readies the connection for
// the next request.
func (c *loopClient) finish() {
	x := c.cur
	p := c.el.p
	// counted before the answer's end goes out, as the server's handler
	// does: a client that reads the metrics once answered sees its request
	p.done(x.ex, x.req)
	err := x.w.Finish() // flushes the answer buffer
	c.releaseWriter()
	closeAfter := x.w.CloseAfter() || err != nil
	p.requests.Add(-1)
	c.cur = nil
	c.keepOut(x.out)
	if u := x.up; u != nil {
		x.up = nil
		keep := x.resp != nil && !x.resp.Close && len(u.in) == 0 && !u.ended
		if keep {
			c.el.putIdle(u)
		} else {
			u.discard()
		}
	}
	if closeAfter || c.eof {
		c.closeWhenWritten()
		return
	}
	if !p.conns.SetIdle(c.handle, true) {
		c.closeWhenWritten()
		return
	}
	c.waitNext()
	// the next request may be read already (pipelined), or wait unread
	// in the socket: no event will come for it
	c.el.l.Later(c.resume)
}

// keepOut keeps a request's serialisation buffer for the connection's
// next request, unless it grew for a large body.
func (c *loopClient) keepOut(out []byte) {
	if cap(out) <= maxKeptOut {
		c.out = out[:0]
	}
}

// maxKeptOut is the largest serialisation buffer a connection keeps
// between requests.
const maxKeptOut = 4 << 10

// waitNext arms the timer of a connection waiting for its next request.
func (c *loopClient) waitNext() {
	c.inHeader = false
	c.el.l.Reset(c.timer, c.el.p.cfg.IdleTimeout)
}

// timedOut closes a connection whose client was silent too long, between
// requests or in the middle of a header.
func (c *loopClient) timedOut() {
	if c.cur == nil {
		c.close()
	}
}

// headerTimer bounds the wait for the rest of a request's header, as the
// server's ReadHeaderTimeout does.
func (c *loopClient) headerTimer() {
	if c.inHeader && c.timer.Scheduled() {
		return
	}
	c.inHeader = true
	c.el.l.Reset(c.timer, loopHeaderTimeout)
}

func (c *loopClient) stopTimer() {
	c.el.l.Stop(c.timer)
	c.inHeader = false
}

func (c *loopClient) closeWhenWritten() {
	c.flush()
	if c.s.Pending() == 0 {
		c.close()
		return
	}
	c.closing = true
}

// guard closes the connection when the code serving it panicked, and
// passes the panic on to the loop, which reports it.
func (c *loopClient) guard() {
	if v := recover(); v != nil {
		c.close()
		panic(v)
	}
}

// close ends the connection and what it was doing.
func (c *loopClient) close() {
	if c.closed {
		return
	}
	c.closed = true
	c.stopTimer()
	p := c.el.p
	if x := c.cur; x != nil {
		if x.up != nil {
			x.up.discard()
		}
		p.done(x.ex, x.req)
		p.requests.Add(-1)
		c.cur = nil
	}
	c.releaseWriter()
	c.el.l.Remove(c.s.FD())
	c.s.Close()
	c.info.lease.Release(c.held)
	c.held = 0
	c.info.lease.Close()
	delete(c.el.clients, c)
	p.conns.Untrack(c.handle)
	p.conns.Release()
}

// handOff gives the connection, from the request at the head of c.in on,
// to the goroutine server, counting why (a Handoff* reason).
func (c *loopClient) handOff(why string) {
	if c.closed {
		return
	}
	p := c.el.p
	p.cfg.Metrics.HandedOff(why)
	c.closed = true
	c.stopTimer()
	c.flush()
	c.releaseWriter()
	c.el.l.Remove(c.s.FD())
	delete(c.el.clients, c)
	p.conns.Untrack(c.handle)
	nc, err := fileConn(c.s)
	c.s.Close()
	c.info.lease.Release(c.held) // the server reserves what it reads, again
	c.held = 0
	if err != nil {
		p.cfg.Logger.Warn("outbound event loop: hand a connection to the server", logkey.Error, err)
		c.info.lease.Close()
		p.conns.Release()
		return
	}
	pc := &prefixConn{Conn: nc, prefix: c.in} // the loop is done with it
	c.in = nil
	info := c.info
	go func() {
		defer p.conns.Release()
		p.serveClient(&leasedConn{Conn: pc, lease: info.lease}, info)
	}()
}

// fileConn is a Go connection on a duplicate of s's socket.
func fileConn(s *evloop.Socket) (net.Conn, error) {
	fd, err := dupFD(s.FD())
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "client")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, err
	}
	return sock.Wrap(c), nil
}

// prefixConn reads prefix, then the connection.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite half-closes the TCP connection.
func (c *prefixConn) CloseWrite() error {
	return closeWrite(c.Conn)
}

var crlf2 = []byte("\r\n\r\n")

func cmpErr(err, or error) error {
	if err != nil {
		return err
	}
	return or
}

// upstream is an HTTP/1.1 connection to an endpoint over a tunnel stream,
// served by a loop; kept between exchanges like http1.Client's.
type upstream struct {
	el     *eloop
	key    upstreamKey
	st     *h2.LoopStream
	conn   *h2.LoopConn // the tunnel connection st is a stream of
	in     []byte
	c      *loopClient // the exchange's client; nil while idle
	owed   int         // received, not yet returned to the stream's window
	reused bool
	sent   bool
	opened bool // the destination answered the CONNECT
	ended  bool
	err    error
	timer  *evloop.Timer
}

// upstream returns an idle upstream of key, or opens one (always, when
// fresh: a second try does not take a kept stream that may be going the
// way the first one went).
func (el *eloop) upstream(key upstreamKey, fresh bool) (*upstream, error) {
	l := el.idle[key]
	for len(l) > 0 && !fresh {
		u := l[len(l)-1]
		l = l[:len(l)-1]
		el.idle[key] = l
		if u.timer != nil {
			el.l.Stop(u.timer)
		}
		if !u.ended && u.conn.Usable() {
			u.reused = true
			return u, nil
		}
		// its tunnel connection is going away (the destination's agent
		// drains): a request sent on it now would likely be cut
		u.discard()
	}
	u := &upstream{el: el, key: key}
	tk := tunnelKey{pairKey{key.src, key.dst}, key.node}
	t := el.tunnels[tk]
	if t == nil {
		t = &loopTunnel{}
		el.tunnels[tk] = t
	}
	if t.conn != nil && t.conn.Usable() {
		return u, u.open(t.conn)
	}
	t.waiting = append(t.waiting, u)
	if !t.dialing {
		t.dialing = true
		el.dial(tk, t)
	}
	return u, nil
}

// dial connects a tunnel connection outside the loop, then opens the
// streams that wait for it.
func (el *eloop) dial(tk tunnelKey, t *loopTunnel) {
	d := el.p.cfg.Tunnel
	cfg := d.ClientTLS(tk.src, tk.dst)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d.DialTimeout())
		defer cancel()
		var conn *h2.LoopConn
		nc, err := (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext(ctx, "tcp", tk.node)
		if err == nil {
			conn, err = h2.NewLoopConn(ctx, el.l, nc, cfg, func(error) {
				if t.conn != nil && t.conn.Err() != nil { // the one closed (the loop's own state only)
					t.conn = nil
				}
			})
		}
		el.l.Post(func() {
			t.dialing = false
			waiting := t.waiting
			t.waiting = nil
			if err == nil {
				t.conn = conn
			}
			for _, u := range waiting {
				oerr := err
				if oerr == nil {
					oerr = u.open(conn)
				}
				if oerr != nil {
					u.failed(fmt.Errorf("%w: tunnel via %s: %w", forward.ErrConnect, tk.node, oerr))
				}
			}
		})
	}()
}

// open opens the upstream's stream and sends what waits for it.
func (u *upstream) open(conn *h2.LoopConn) error {
	st, err := conn.Open(u.key.addr.String(), http.Header{tunnel.HeaderDestinationIdentity: {u.key.dst.String()}}, u)
	if err != nil {
		return err
	}
	u.st, u.conn = st, conn
	if u.c != nil && u.c.cur != nil && u.c.cur.up == u && u.sent {
		u.write(u.c.cur.out)
	}
	return nil
}

func (u *upstream) write(p []byte) {
	if _, err := u.st.Write(p); err != nil {
		u.failed(err)
	}
}

// failed ends an upstream that never carried its exchange.
func (u *upstream) failed(err error) {
	u.ended, u.err = true, err
	if c := u.c; c != nil && c.cur != nil && c.cur.up == u {
		c.upstreamLost(err)
	}
}

// take drops n bytes the exchange used.
func (u *upstream) take(n int) { u.in = u.in[:copy(u.in, u.in[n:])] }

// settle returns what was received to the stream's window once the client
// took what was written to it.
func (u *upstream) settle() {
	if u.owed > 0 && u.st != nil && (u.c == nil || u.c.s.Pending() == 0) {
		u.st.Consumed(u.owed)
		u.owed = 0
	}
}

// discard closes the upstream's stream.
func (u *upstream) discard() {
	u.c = nil
	if u.timer != nil {
		u.el.l.Stop(u.timer)
	}
	if u.st != nil && !u.ended {
		u.ended = true
		u.st.Close()
	}
}

// putIdle keeps u for the next exchange to its endpoint.
func (el *eloop) putIdle(u *upstream) {
	u.c = nil
	u.settle()
	if len(el.idle[u.key]) >= maxIdlePerKey || u.conn != nil && !u.conn.Usable() {
		u.discard()
		return
	}
	el.idle[u.key] = append(el.idle[u.key], u)
	if u.timer == nil {
		u.timer = evloop.NewTimer(func() {
			el.forgetIdle(u)
			u.discard()
		})
	}
	el.l.Reset(u.timer, loopIdleUpstream)
}

func (el *eloop) forgetIdle(u *upstream) {
	l := el.idle[u.key]
	for i, v := range l {
		if v == u {
			el.idle[u.key] = append(l[:i], l[i+1:]...)
			return
		}
	}
}

// Opened: the stream is open (h2.StreamHandler).
func (u *upstream) Opened(*h2.LoopStream) { u.opened = true }

// guard ends the exchange whose code panicked and reports it: its client
// and stream close; the tunnel connection, which called it, and the loop
// go on.
func (u *upstream) guard() {
	if v := recover(); v != nil {
		u.el.p.cfg.Logger.Error("panic serving a request", "panic", fmt.Sprint(v))
		c := u.c
		u.discard()
		if c != nil {
			c.close()
		}
	}
}

// Data: answer bytes came (h2.StreamHandler).
func (u *upstream) Data(_ *h2.LoopStream, p []byte) {
	defer u.guard()
	u.in = append(u.in, p...)
	u.owed += len(p)
	if u.c == nil { // an idle stream has nothing to say
		u.el.forgetIdle(u)
		u.discard()
		return
	}
	u.c.onUpstream()
	u.settle()
}

// Drained: the request went (h2.StreamHandler).
func (u *upstream) Drained(*h2.LoopStream) {}

// GoingAway: the destination's agent drains (h2.StreamHandler). A kept
// stream closes now: the drain would last as long as it does, and it
// would not be reused. One in use is not kept once its exchange ends.
func (u *upstream) GoingAway(*h2.LoopStream) {
	defer u.guard()
	if u.c == nil && !u.ended {
		u.el.forgetIdle(u)
		u.discard()
	}
}

// Ended: the destination ended its side (its pod closed the connection):
// nothing more comes, so the stream ends here too (h2.StreamHandler). An
// answer whose body runs to the close is then complete; one cut short is
// not, and is never left waiting.
func (u *upstream) Ended(st *h2.LoopStream) {
	defer u.guard()
	if u.ended {
		return
	}
	u.ended = true
	st.Close() // ours ends too; Closed is not called
	if u.c == nil {
		u.el.forgetIdle(u)
		return
	}
	u.c.onUpstream()
}

// Closed: the stream ended (h2.StreamHandler).
func (u *upstream) Closed(_ *h2.LoopStream, err error) {
	defer u.guard()
	wasEnded := u.ended
	u.ended, u.err = true, err
	if u.c == nil {
		u.el.forgetIdle(u)
		return
	}
	if wasEnded {
		return
	}
	if err != nil && !u.opened {
		err = fmt.Errorf("%w: %w", forward.ErrConnect, err) // it never reached the backend
		u.err = err
	}
	u.c.onUpstream()
}

// dupFD duplicates fd (close-on-exec).
func dupFD(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

// chunkDecoder reads a chunked body as it arrives (RFC 9112 7.1): the
// chunks' data, then the trailer fields.
type chunkDecoder struct {
	state   int   // chunkSize, chunkData, chunkDataEnd, chunkTrailer, chunkDone
	left    int64 // data left in the chunk
	trailer http.Header
}

const (
	chunkSize = iota
	chunkData
	chunkDataEnd
	chunkTrailer
	chunkDone
)

// maxChunkLine bounds a chunk-size or trailer line.
const maxChunkLine = 4 << 10

var errChunked = errors.New("malformed chunked body")

// feed decodes what b holds, giving data to emit; it returns how many
// bytes of b it used and whether the body ended.
func (d *chunkDecoder) feed(b []byte, emit func([]byte) error) (int, bool, error) {
	used := 0
	for d.state != chunkDone {
		rest := b[used:]
		switch d.state {
		case chunkSize, chunkTrailer:
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				if len(rest) > maxChunkLine {
					return used, false, errChunked
				}
				return used, false, nil
			}
			line := bytes.TrimRight(rest[:i], "\r")
			used += i + 1
			if d.state == chunkTrailer {
				if len(line) == 0 {
					d.state = chunkDone
					break
				}
				k, v, ok := bytes.Cut(line, []byte(":"))
				if !ok {
					return used, false, errChunked
				}
				if d.trailer == nil {
					d.trailer = http.Header{}
				}
				d.trailer.Add(string(bytes.TrimSpace(k)), string(bytes.TrimSpace(v)))
				break
			}
			if j := bytes.IndexByte(line, ';'); j >= 0 {
				line = line[:j] // chunk extensions are not passed on
			}
			n, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
			if err != nil || n < 0 {
				return used, false, errChunked
			}
			if n == 0 {
				d.state = chunkTrailer
			} else {
				d.state, d.left = chunkData, n
			}
		case chunkData:
			if len(rest) == 0 {
				return used, false, nil
			}
			n := int(min(int64(len(rest)), d.left))
			if err := emit(rest[:n]); err != nil {
				return used, false, err
			}
			used += n
			d.left -= int64(n)
			if d.left == 0 {
				d.state = chunkDataEnd
			}
		case chunkDataEnd:
			switch {
			case len(rest) >= 2 && rest[0] == '\r' && rest[1] == '\n':
				used += 2
			case len(rest) >= 1 && rest[0] == '\n':
				used++
			case len(rest) == 0 || len(rest) == 1 && rest[0] == '\r':
				return used, false, nil
			default:
				return used, false, errChunked
			}
			d.state = chunkSize
		}
	}
	return used, true, nil
}
