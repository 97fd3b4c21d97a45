package h2c

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ClientConfig configures the client end of connections.
type ClientConfig struct {
	// StreamWindow and ConnWindow are the receive windows for response
	// bodies; 1 MiB and 4 MiB when zero.
	StreamWindow, ConnWindow int32
	// MaxHeaderListSize bounds a response's header block; 16 KiB when zero.
	MaxHeaderListSize uint32
	// IdleTimeout closes a connection that carried no stream for this
	// long; never when zero.
	IdleTimeout time.Duration
}

// ClientConn is the client end of one connection. RoundTrip may be called
// from many goroutines at once.
type ClientConn struct {
	c *conn
}

// NewClientConn starts the client end of a connection over nc: it sends
// the preface and our settings, and starts the goroutine reading the
// server's frames. On error nc is closed.
func NewClientConn(nc net.Conn, cfg ClientConfig) (*ClientConn, error) {
	c := newConn(nc, nil, false, connConfig{
		streamWindow:  cmp.Or(cfg.StreamWindow, defaultStreamWindow),
		connWindow:    cmp.Or(cfg.ConnWindow, defaultConnWindow),
		maxHeaderList: cmp.Or(cfg.MaxHeaderListSize, defaultMaxHeaderList),
		idleTimeout:   cfg.IdleTimeout,
	})
	if err := c.start(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("http2 client start: %w", err)
	}
	c.noteIdle()
	go c.serve()
	if ga, ok := nc.(goingAwayConn); ok {
		go c.leaveWhenAway(ga.GoingAway())
	}
	return &ClientConn{c: c}, nil
}

// goingAwayConn is a transport that learns when its own peer drains (a
// tunnel stream, whose destination node's proxy sent GOAWAY).
type goingAwayConn interface{ GoingAway() <-chan struct{} }

// leaveWhenAway takes the connection out of use once away is closed: the
// streams open on it finish, none is opened, and it closes when the last
// ends (else the draining peer would hold it until its grace period ends
// and cut the streams then open).
func (c *conn) leaveWhenAway(away <-chan struct{}) {
	select {
	case <-away:
	case <-c.done:
		return
	}
	c.mu.Lock()
	c.goingAway = true
	c.mu.Unlock()
	c.noteIdle()
}

// Usable reports whether the connection can take another stream.
func (cc *ClientConn) Usable() bool {
	c := cc.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goingAway && uint32(len(c.streams)) < c.peerMaxStreams && c.nextID < maxWindow
}

// Streams counts open streams.
func (cc *ClientConn) Streams() int {
	cc.c.mu.Lock()
	defer cc.c.mu.Unlock()
	return len(cc.c.streams)
}

// Close closes the connection and its streams at once.
func (cc *ClientConn) Close() error {
	cc.c.fail(ErrConnClosed)
	return nil
}

// Done is closed when the connection is closed.
func (cc *ClientConn) Done() <-chan struct{} { return cc.c.done }

// clientStream is one request and its response.
type clientStream struct {
	s     *stream
	req   *http.Request
	ready chan struct{} // closed when the response arrived or the stream failed
	once  sync.Once
	resp  *http.Response
	stop  func() bool // stops the context watch
}

func (cs *clientStream) wake() { cs.once.Do(func() { close(cs.ready) }) }

// syncBodyMax bounds the body RoundTrip reads before sending when it can
// read it without waiting.
const syncBodyMax = 64 << 10

// completer is a body whose every byte is already buffered (this
// package's request bodies once their END_STREAM arrived).
type completer interface{ complete() bool }

// RoundTrip sends req and returns its response once the header arrives.
// The request's header and, when it is at hand (a replayable body, or a
// body already received whole), its body are written from the caller's
// goroutine, in one flush; a streaming body is copied by a goroutine. The
// response's Body reads straight from the stream; its Trailer is filled at
// EOF. The request's context ending before the response is complete
// resets the stream. An error wrapping ErrGoingAway means the server
// never processed the request.
func (cc *ClientConn) RoundTrip(req *http.Request) (*http.Response, error) {
	c := cc.c
	ctx := req.Context()
	hasBody := req.Body != nil && req.Body != http.NoBody
	body, bodyDone, bp, err := readBodyAtHand(req, hasBody)
	if err != nil {
		return nil, err
	}
	defer func() {
		if bp != nil { // nil once a body-writing goroutine owns the buffer
			*bp = body[:0]
			syncPool.Put(bp)
		}
	}()
	cs := &clientStream{req: req, ready: make(chan struct{})}
	trailers := hasTrailers(req.Trailer)
	op, err := cc.open(cs, body, bodyDone, !hasBody, trailers)
	if err != nil {
		if err == ErrGoingAway && hasBody && !bodyDone { // open returns it bare
			req.Body.Close()
		}
		return nil, err
	}
	s := cs.s
	// the request's context ending resets the stream, before the response
	// (waking this wait) or after it (failing the body's reads); no Done
	// channel or select per request
	stop := context.AfterFunc(ctx, func() { c.cancelStream(s, ctx.Err()) })
	switch {
	case !hasBody:
	case bodyDone:
		if !op.ended {
			if err := s.send(cs, false, body[op.sent:], trailers, true); err != nil {
				stop()
				c.resetStream(s.id, http2.ErrCodeCancel, err)
				return nil, err
			}
		}
		req.Body.Close()
	default:
		go cs.writeBody(body)
		body = nil // the goroutine owns what was read
		bp = nil
	}
	<-cs.ready
	if cs.resp == nil {
		stop()
		s.rmu.Lock()
		err := s.rErr
		s.rmu.Unlock()
		return nil, err
	}
	if cs.resp.Body == http.NoBody {
		stop()
	} else {
		cs.stop = stop
	}
	return cs.resp, nil
}

// readBodyAtHand reads a request body that is at hand (replayable and
// small, or received whole) into a pooled buffer, so that it can leave
// with the header; done reports it was read to its end. bp is nil when
// the body is left to stream.
func readBodyAtHand(req *http.Request, hasBody bool) (body []byte, done bool, bp *[]byte, err error) {
	if !hasBody {
		return nil, false, nil, nil
	}
	cp, ok := req.Body.(completer)
	if !(req.GetBody != nil && req.ContentLength >= 0 && req.ContentLength <= syncBodyMax || ok && cp.complete()) {
		return nil, false, nil, nil
	}
	bp = syncPool.Get().(*[]byte)
	body, done, err = readUpTo(req.Body, (*bp)[:0], syncBodyMax)
	if err != nil {
		syncPool.Put(bp)
		req.Body.Close()
		return nil, false, nil, fmt.Errorf("read request body: %w", err)
	}
	return body, done, bp, nil
}

// opened is what open wrote: sent bytes of the body left with the header,
// and ended says the stream's sending side is done (END_STREAM sent).
type opened struct {
	sent  int
	ended bool
}

// open starts cs's stream: under the write lock it takes a stream id and
// writes the header and as much of a body read to its end (bodyDone) as
// the flow-control windows allow, ending the stream when nothing is left
// to send. It fails with ErrGoingAway when the connection takes no new
// stream.
func (cc *ClientConn) open(cs *clientStream, body []byte, bodyDone, noBody, trailers bool) (opened, error) {
	c := cc.c
	c.lockW()
	c.mu.Lock()
	if c.closed || c.goingAway || uint32(len(c.streams)) >= c.peerMaxStreams || c.nextID >= maxWindow {
		c.mu.Unlock()
		c.unlockW(nil)
		return opened{}, ErrGoingAway
	}
	id := c.nextID
	c.nextID += 2
	s := c.newStreamLocked(id)
	s.client, s.onAbort, cs.s = cs, cs.wake, s
	// the body that fits the windows leaves with the header
	n := 0
	if bodyDone {
		n = int(min(int64(len(body)), s.sendWindow, c.sendWindow))
		s.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
	}
	maxFrm := int(min(c.peerMaxFrm, maxWriteFrame))
	c.mu.Unlock()
	c.hbuf.Reset()
	cs.encodeFields(c.henc, false)
	endNow := noBody || bodyDone && len(body) == 0 && !trailers
	err := c.writeHeaderBlock(id, endNow)
	allSent := bodyDone && n == len(body) && !trailers
	for chunk := body[:n]; err == nil && len(chunk) > 0; {
		m := min(len(chunk), maxFrm)
		err = c.fr.WriteData(id, allSent && m == len(chunk), chunk[:m])
		chunk = chunk[m:]
	}
	if endNow || allSent {
		s.sentEnd = true
	}
	if err := c.unlockW(err); err != nil {
		return opened{}, err
	}
	return opened{sent: n, ended: endNow || allSent}, nil
}

var syncPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// readUpTo reads r into buf until EOF or max bytes; done reports EOF.
func readUpTo(r io.Reader, buf []byte, max int) (b []byte, done bool, err error) {
	for len(buf) <= max {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, true, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
	return buf, false, nil
}

func hasTrailers(t http.Header) bool {
	for _, v := range t {
		if len(v) > 0 {
			return true
		}
	}
	return len(t) > 0
}

// writeBody copies the rest of a streaming request body, first what was
// already read of it.
func (cs *clientStream) writeBody(first []byte) {
	s, req := cs.s, cs.req
	defer req.Body.Close()
	if len(first) > 0 {
		if err := s.send(cs, false, first, false, false); err != nil {
			return
		}
	}
	bp := bufPool.Get().(*[]byte)
	buf := (*bp)[:cap(*bp)]
	defer bufPool.Put(bp)
	for {
		n, err := req.Body.Read(buf)
		if n > 0 {
			if serr := s.send(cs, false, buf[:n], false, false); serr != nil {
				return
			}
		}
		if err == io.EOF {
			s.send(cs, false, nil, hasTrailers(req.Trailer), true)
			return
		}
		if err != nil {
			s.c.cancelStream(s, fmt.Errorf("read request body: %w", err))
			return
		}
	}
}

// encodeFields writes the request header block, or its trailers.
func (cs *clientStream) encodeFields(e *hpack.Encoder, trailers bool) {
	req := cs.req
	if trailers {
		for k, vs := range req.Trailer {
			for _, v := range vs {
				e.WriteField(hpack.HeaderField{Name: lower(k), Value: v})
			}
		}
		return
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	e.WriteField(hpack.HeaderField{Name: ":method", Value: req.Method})
	if req.Method != http.MethodConnect {
		scheme := req.URL.Scheme
		if scheme == "" {
			scheme = "http"
		}
		path := req.URL.Opaque
		if path == "" || req.URL.RawQuery != "" {
			path = req.URL.RequestURI()
		}
		e.WriteField(hpack.HeaderField{Name: ":scheme", Value: scheme})
		e.WriteField(hpack.HeaderField{Name: ":path", Value: path})
	}
	e.WriteField(hpack.HeaderField{Name: ":authority", Value: host})
	encodeHeader(e, req.Header, nil)
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			keys = append(keys, lower(k))
		}
		e.WriteField(hpack.HeaderField{Name: "trailer", Value: strings.Join(keys, ", ")})
	}
	if _, ok := req.Header["Content-Length"]; !ok && req.ContentLength > 0 {
		e.WriteField(hpack.HeaderField{Name: "content-length", Value: strconv.FormatInt(req.ContentLength, 10)})
	}
}

// cancelStream resets a stream that is still open (CANCEL) and fails it
// locally with err.
func (c *conn) cancelStream(s *stream, err error) {
	c.mu.Lock()
	_, open := c.streams[s.id]
	c.mu.Unlock()
	if open {
		c.resetStream(s.id, http2.ErrCodeCancel, err)
	} else {
		s.abort(err)
	}
}

// onResponseHeaders: a response's header block or its trailers.
func (c *conn) onResponseHeaders(f *http2.MetaHeadersFrame) error {
	c.mu.Lock()
	s, ok := c.streams[f.StreamID]
	idle := !ok && c.idleStreamLocked(f.StreamID)
	c.mu.Unlock()
	if idle {
		return fmt.Errorf("%w: HEADERS on idle stream %d", ErrProtocol, f.StreamID)
	}
	if !ok || s.client == nil {
		return nil
	}
	cs := s.client
	s.rmu.Lock()
	got, done := s.gotHeaders, s.rEOF
	s.rmu.Unlock()
	if done {
		c.resetStream(s.id, http2.ErrCodeStreamClosed, fmt.Errorf("%w: HEADERS after END_STREAM", ErrProtocol))
		return nil
	}
	if got {
		t, ok := trailerOf(f.Fields)
		if !ok || !f.StreamEnded() || f.Truncated {
			c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: malformed trailers", ErrProtocol))
			return nil
		}
		s.endOfHeaders(t)
		return nil
	}
	status := f.PseudoValue("status")
	code, err := strconv.Atoi(status)
	if err != nil || code < 100 || code > 999 || len(status) != 3 {
		c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: bad :status %q", ErrProtocol, status))
		return nil
	}
	if code < 200 { // informational: the final answer follows
		if f.StreamEnded() {
			c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: END_STREAM on a 1xx", ErrProtocol))
		}
		return nil
	}
	if f.Truncated {
		c.resetStream(s.id, http2.ErrCodeCancel, errors.New("response header list too large"))
		return nil
	}
	h, ok := headerOf(f.Fields)
	if !ok {
		c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: malformed response header", ErrProtocol))
		return nil
	}
	declLen := int64(-1)
	if vs := h["Content-Length"]; len(vs) > 0 {
		n, err := strconv.ParseUint(vs[0], 10, 63)
		if err != nil || len(vs) > 1 {
			c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: bad content-length", ErrProtocol))
			return nil
		}
		declLen = int64(n)
	}
	resp := &http.Response{
		Status: status + " " + http.StatusText(code), StatusCode: code,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: h, ContentLength: declLen,
		Trailer: declaredTrailers(h), Request: cs.req,
	}
	ended := f.StreamEnded()
	head := cs.req.Method == http.MethodHead
	if ended && declLen < 0 && !head {
		resp.ContentLength = 0 // as net/http: trailers-only gRPC answers stay whole
	}
	if ended || head {
		resp.Body = http.NoBody
	} else {
		resp.Body = &responseBody{cs: cs}
	}
	s.rmu.Lock()
	s.gotHeaders = true
	if !head {
		s.declLen = declLen
	}
	s.rEOF = ended
	s.rmu.Unlock()
	cs.resp = resp
	cs.wake()
	if ended {
		s.onEOF()
	}
	return nil
}

// responseBody reads a response's body from its stream.
type responseBody struct {
	cs *clientStream
}

func (b *responseBody) Read(p []byte) (int, error) {
	s := b.cs.s
	n, err := s.read(p)
	if err == io.EOF {
		s.rmu.Lock()
		t := s.trailer
		s.trailer = nil
		s.rmu.Unlock()
		if len(t) > 0 {
			resp := b.cs.resp
			if resp.Trailer == nil {
				resp.Trailer = make(http.Header, len(t))
			}
			for k, v := range t {
				resp.Trailer[k] = v
			}
		}
		b.unwatch()
	}
	return n, err
}

func (b *responseBody) unwatch() {
	if b.cs.stop != nil {
		b.cs.stop()
	}
}

// Close stops reading: a response not read to its end resets the stream.
func (b *responseBody) Close() error {
	b.unwatch()
	s := b.cs.s
	s.rmu.Lock()
	done := s.rEOF
	s.rmu.Unlock()
	s.discard()
	if !done {
		s.c.cancelStream(s, ErrStreamClosed)
	} else {
		s.abort(ErrStreamClosed)
	}
	return nil
}
