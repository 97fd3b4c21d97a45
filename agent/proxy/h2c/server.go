package h2c

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// ServerConfig configures the server end of connections.
type ServerConfig struct {
	// Handler serves each request in its own goroutine. A panic in it
	// resets the stream (panic with http.ErrAbortHandler to do so on
	// purpose); it is not logged.
	Handler http.Handler
	// MaxHeaderListSize bounds a request's header block (announced as
	// SETTINGS_MAX_HEADER_LIST_SIZE, counted as RFC 9113 6.5.2 says); a
	// larger one is answered 431. 16 KiB when zero.
	MaxHeaderListSize uint32
	// StreamWindow and ConnWindow are the receive windows for request
	// bodies (a stream's, the connection's): at most ConnWindow bytes of
	// a connection's request bodies are buffered. 1 MiB and 4 MiB when
	// zero.
	StreamWindow, ConnWindow int32
	// MaxConcurrentStreams bounds the streams a client may open at once
	// (more are refused); 1000 when zero.
	MaxConcurrentStreams uint32
	// IdleTimeout sends GOAWAY and closes a connection that carried no
	// stream for this long; never when zero.
	IdleTimeout time.Duration
	// Refused, when set, is told of each request the connection answered
	// itself (431).
	Refused func(status int)
}

// ServerConn is the server end of one connection.
type ServerConn struct {
	c          *conn
	cfg        *ServerConfig
	ctx        context.Context
	cancel     context.CancelFunc
	remoteAddr string
	// tasks hands a request to an idle worker (unbuffered: a send
	// succeeds only when one waits)
	tasks chan task
	// running counts the handlers not returned yet
	running atomic.Int32
}

// NewServerConn starts serving a client connection nc: r reads what was
// read of it already, then nc (nil: nc). It reads the client preface and
// sends our settings; on error nc is closed. Serve then reads the
// client's frames.
func NewServerConn(nc net.Conn, r io.Reader, cfg *ServerConfig) (*ServerConn, error) {
	c := newConn(nc, r, true, connConfig{
		streamWindow:  cmp.Or(cfg.StreamWindow, defaultStreamWindow),
		connWindow:    cmp.Or(cfg.ConnWindow, defaultConnWindow),
		maxStreams:    cmp.Or(cfg.MaxConcurrentStreams, defaultMaxStreams),
		maxHeaderList: cmp.Or(cfg.MaxHeaderListSize, defaultMaxHeaderList),
		idleTimeout:   cfg.IdleTimeout,
	})
	sc := &ServerConn{c: c, cfg: cfg, remoteAddr: nc.RemoteAddr().String(), tasks: make(chan task)}
	c.srv = sc
	if r == nil {
		r = nc
	}
	buf := make([]byte, len(clientPreface))
	if _, err := io.ReadFull(r, buf); err != nil {
		nc.Close()
		return nil, fmt.Errorf("read http2 preface: %w", err)
	}
	if !bytes.Equal(buf, clientPreface) {
		nc.Close()
		return nil, fmt.Errorf("%w: bad client preface", ErrProtocol)
	}
	if err := c.start(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("http2 server settings: %w", err)
	}
	return sc, nil
}

// Serve reads and serves the client's requests until the connection ends;
// each request's context derives from ctx. It closes the connection.
func (sc *ServerConn) Serve(ctx context.Context) {
	sc.ctx, sc.cancel = context.WithCancel(ctx)
	defer sc.cancel()
	sc.c.noteIdle()
	sc.c.serve()
}

// GoAway tells the client to open no new stream; the connection closes
// once its streams are done.
func (sc *ServerConn) GoAway() { sc.c.goAway(http2.ErrCodeNo) }

// Close closes the connection and its streams at once.
func (sc *ServerConn) Close() error {
	sc.c.fail(ErrConnClosed)
	return nil
}

// Done is closed when the connection is closed.
func (sc *ServerConn) Done() <-chan struct{} { return sc.c.done }

// onHeaders: a new request stream, or a request's trailers.
func (sc *ServerConn) onHeaders(f *http2.MetaHeadersFrame) error {
	c := sc.c
	id := f.StreamID
	c.mu.Lock()
	if s, ok := c.streams[id]; ok {
		c.mu.Unlock()
		return sc.onTrailers(s, f)
	}
	if id%2 == 0 || id <= c.lastPeerID {
		c.mu.Unlock()
		return fmt.Errorf("%w: HEADERS on stream %d", ErrProtocol, id)
	}
	c.lastPeerID = id
	// handlers of streams the client already reset still count: a client
	// opening and resetting streams at once ("rapid reset") gets no more
	// handlers running than streams it may open
	if c.goingAway || uint32(len(c.streams)) >= c.cfg.maxStreams || uint32(sc.running.Load()) >= c.cfg.maxStreams {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream, nil)
		return nil
	}
	c.mu.Unlock()
	if f.Truncated { // over the header list size: fields were dropped
		sc.respondAndEnd(id, http.StatusRequestHeaderFieldsTooLarge)
		return nil
	}
	r, declLen, ok := sc.newRequest(f)
	if !ok {
		c.resetStream(id, http2.ErrCodeProtocol, nil)
		return nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	if c.goingAway { // GOAWAY went while its header block was read: not taken
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream, nil)
		return nil
	}
	c.lastTaken = id
	ctx, cancel := context.WithCancel(sc.ctx)
	s := c.newStreamLocked(id)
	s.gotHeaders = true
	s.declLen = declLen
	s.rEOF = f.StreamEnded()
	s.onAbort = cancel
	c.mu.Unlock()
	req := r.WithContext(ctx) // r stays on the stack: one Request per request
	if !f.StreamEnded() {
		req.Body = &requestBody{s: s, req: req}
	}
	sc.running.Add(1)
	sc.dispatch(task{s, req, cancel})
	return nil
}

func (sc *ServerConn) onTrailers(s *stream, f *http2.MetaHeadersFrame) error {
	if !f.StreamEnded() {
		sc.c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: trailers without END_STREAM", ErrProtocol))
		return nil
	}
	s.rmu.Lock()
	done := s.rEOF
	s.rmu.Unlock()
	if done {
		sc.c.resetStream(s.id, http2.ErrCodeStreamClosed, fmt.Errorf("%w: HEADERS after END_STREAM", ErrProtocol))
		return nil
	}
	t, ok := trailerOf(f.Fields)
	if !ok || f.Truncated {
		sc.c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: malformed trailers", ErrProtocol))
		return nil
	}
	s.endOfHeaders(t)
	return nil
}

// newRequest builds the request of a header block; ok is false when the
// block is malformed (RFC 9113 8.3.1). declLen is its content-length, -1
// when none.
func (sc *ServerConn) newRequest(f *http2.MetaHeadersFrame) (req http.Request, declLen int64, ok bool) {
	method, path := f.PseudoValue("method"), f.PseudoValue("path")
	scheme, authority := f.PseudoValue("scheme"), f.PseudoValue("authority")
	if method == "" || f.PseudoValue("protocol") != "" {
		return req, 0, false
	}
	h, ok := headerOf(f.Fields)
	if !ok {
		return req, 0, false
	}
	if authority == "" {
		authority = h.Get("Host")
	}
	delete(h, "Host")
	var u *url.URL
	uri := path
	if method == http.MethodConnect {
		if path != "" || scheme != "" || authority == "" {
			return req, 0, false
		}
		u, uri = &url.URL{Host: authority}, authority
	} else {
		if path == "" || scheme == "" {
			return req, 0, false
		}
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return req, 0, false
		}
	}
	declLen = -1
	if vs := h["Content-Length"]; len(vs) > 0 {
		for _, v := range vs[1:] {
			if v != vs[0] {
				return req, 0, false
			}
		}
		n, err := strconv.ParseUint(vs[0], 10, 63)
		if err != nil {
			return req, 0, false
		}
		declLen = int64(n)
		h["Content-Length"] = vs[:1]
	}
	req = http.Request{
		Method: method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: h, Host: authority,
		RequestURI: uri, RemoteAddr: sc.remoteAddr, Body: http.NoBody, ContentLength: declLen,
		Trailer: declaredTrailers(h),
	}
	if f.StreamEnded() {
		if declLen > 0 {
			return req, 0, false
		}
		req.ContentLength = 0
	}
	return req, declLen, true
}

// respondAndEnd answers a stream the connection refused itself.
func (sc *ServerConn) respondAndEnd(id uint32, status int) {
	if sc.cfg.Refused != nil {
		sc.cfg.Refused(status)
	}
	c := sc.c
	c.lockW()
	c.hbuf.Reset()
	c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	c.unlockW(c.writeHeaderBlock(id, true))
}

// run serves one request and ends its stream.
func (sc *ServerConn) run(s *stream, req *http.Request, cancel context.CancelFunc) {
	w := &responseWriter{s: s, req: req}
	defer func() {
		sc.running.Add(-1)
		cancel()
		if w.buf != nil {
			b := w.buf[:0]
			bufPool.Put(&b)
			w.buf = nil
		}
	}()
	defer func() {
		if v := recover(); v != nil {
			sc.c.resetStream(s.id, http2.ErrCodeInternal, fmt.Errorf("handler: %v", v))
		}
	}()
	sc.cfg.Handler.ServeHTTP(w, req)
	if err := w.finish(); err != nil {
		sc.c.resetStream(s.id, http2.ErrCodeInternal, err)
		return
	}
	// the answer is complete: a request body still coming is not wanted
	// (the stream leaves the table only once both ends ended)
	s.rmu.Lock()
	peerEnded := s.rEOF
	s.rmu.Unlock()
	if !peerEnded {
		sc.c.resetStream(s.id, http2.ErrCodeNo, ErrStreamClosed)
	}
}

// requestBody reads a request's body from its stream; at EOF the
// request's trailers are set.
type requestBody struct {
	s   *stream
	req *http.Request
}

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.s.read(p)
	if err == io.EOF {
		b.s.rmu.Lock()
		t := b.s.trailer
		b.s.rmu.Unlock()
		if len(t) > 0 && b.req.Trailer == nil {
			b.req.Trailer = make(http.Header, len(t))
		}
		if len(t) > 0 {
			for k, v := range t {
				b.req.Trailer[k] = v
			}
		}
	}
	return n, err
}

// Close stops reading: what is still buffered is dropped, its window
// returned.
func (b *requestBody) Close() error {
	b.s.discard()
	return nil
}

// complete reports whether the whole body is buffered: a client of this
// package writes it without a goroutine.
func (b *requestBody) complete() bool { return b.s.complete() }

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, maxWriteFrame); return &b }}

// responseWriter writes a response on a stream from the handler's
// goroutine. The body is buffered up to one frame; the headers leave with
// the first flush, and a short answer leaves whole in one write.
type responseWriter struct {
	s   *stream
	req *http.Request

	header      http.Header
	status      int
	wroteHeader bool
	sentHeader  bool
	noBody      bool
	declLen     int64 // the Content-Length the handler set, -1 when none
	written     int64
	trailers    []string // keys declared by the Trailer header
	buf         []byte
	err         error
}

// Header returns the response header; set trailers after the body by
// declaring them in "Trailer" before WriteHeader, or with
// http.TrailerPrefix.
func (w *responseWriter) Header() http.Header {
	if w.header == nil {
		w.header = make(http.Header)
	}
	return w.header
}

// WriteHeader records the status; informational ones are ignored.
func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 200 {
		return
	}
	w.wroteHeader, w.status = true, code
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	w.declLen = -1
	h := w.Header()
	if vs := h["Content-Length"]; len(vs) == 1 {
		if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil && n >= 0 {
			w.declLen = n
		} else {
			delete(h, "Content-Length")
		}
	}
	for _, v := range h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = strings.TrimSpace(k); k != "" {
				w.trailers = append(w.trailers, http.CanonicalHeaderKey(k))
			}
		}
	}
}

// Write buffers p, sending full frames as they fill.
func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.noBody {
		return 0, http.ErrBodyNotAllowed
	}
	if w.declLen >= 0 && w.written+int64(len(p)) > w.declLen {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	n := len(p)
	if w.buf == nil {
		w.buf = (*bufPool.Get().(*[]byte))[:0]
	}
	for len(p) > 0 {
		if len(w.buf) == cap(w.buf) {
			if err := w.flushData(false); err != nil {
				return n - len(p), err
			}
		}
		m := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:m]...)
		p = p[m:]
	}
	return n, nil
}

// flushData sends the headers (if not sent yet) and the buffered body.
func (w *responseWriter) flushData(end bool) error {
	if w.err != nil {
		return w.err
	}
	headers := !w.sentHeader
	w.sentHeader = true
	trailers := end && w.hasTrailers()
	w.err = w.s.send(w, headers, w.buf, trailers, end)
	w.buf = w.buf[:0]
	return w.err
}

// Flush sends what is buffered.
func (w *responseWriter) Flush() { w.FlushError() }

// FlushError sends what is buffered (http.ResponseController uses it).
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.sentHeader && len(w.buf) == 0 {
		return w.err
	}
	return w.flushData(false)
}

// finish ends the response: headers if not sent, the buffered body and
// the trailers, with END_STREAM.
func (w *responseWriter) finish() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if w.declLen >= 0 && w.written != w.declLen && !w.noBody {
		return fmt.Errorf("handler wrote %d bytes of a %d-byte body", w.written, w.declLen)
	}
	return w.flushData(true)
}

func (w *responseWriter) hasTrailers() bool {
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	for _, k := range w.trailers {
		if len(w.header[k]) > 0 {
			return true
		}
	}
	return false
}

// encodeFields writes the response header block or the trailers. Called
// under the connection's write lock.
func (w *responseWriter) encodeFields(e *hpack.Encoder, trailers bool) {
	if trailers {
		for _, k := range w.trailers {
			for _, v := range w.header[k] {
				e.WriteField(hpack.HeaderField{Name: lower(k), Value: v})
			}
		}
		for k, vs := range w.header {
			if t, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vs {
					e.WriteField(hpack.HeaderField{Name: strings.ToLower(t), Value: v})
				}
			}
		}
		return
	}
	e.WriteField(hpack.HeaderField{Name: ":status", Value: statusText(w.status)})
	// declared trailers set before the body are sent as trailers only
	encodeHeader(e, w.header, w.trailers)
}

var statusTexts = func() (m [600]string) {
	for i := 100; i < 600; i++ {
		m[i] = strconv.Itoa(i)
	}
	return m
}()

func statusText(code int) string {
	if code >= 100 && code < 600 {
		return statusTexts[code]
	}
	return strconv.Itoa(code)
}
