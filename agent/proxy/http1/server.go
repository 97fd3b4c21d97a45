// Package http1 is the node proxy's own HTTP/1.1 server and client.
//
// The server serves one client connection in one goroutine: it reads a
// request, runs the handler and writes the response, with no other
// goroutine, context or response machinery per request. net/http's server
// keeps a background read going during each request (to notice a client
// that went away) and builds a cancelable context and a chunk writer per
// request; on the node proxy that was about a fifth of the CPU per request.
//
// What net/http's server refuses, this refuses the same way: a missing or
// malformed Host, invalid header names or values (400), a header over
// Config.MaxHeaderBytes (431), versions other than HTTP/1.x (505), an Expect
// other than 100-continue (417); each answer closes the connection. With a
// Config.Budget, the header bytes a connection reads are reserved from it
// as they arrive and held until its request is done; a header the budget
// cannot hold is answered 503.
// Cleartext HTTP/2 (the prior-knowledge preface) goes to Config.H2C.
//
// Given up: a client that closes its connection while its request waits
// for the handler is noticed when the answer is written, not at once (the
// handler's own timeouts bound the wait), as nginx does for a closed
// keep-alive client.
//
// The client (Client) writes a request and reads its response in the
// caller's goroutine over kept-alive connections pooled per key.
package http1

import (
	"bufio"
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

	"golang.org/x/net/http/httpguts"
)

// Handler serves one request. ctx is the one given to ServeConn.
type Handler func(ctx context.Context, w http.ResponseWriter, r *http.Request)

// Config configures a Server.
type Config struct {
	// Handler serves each request. A panic in it aborts the connection
	// without completing the answer (panic with http.ErrAbortHandler to do
	// so on purpose); the server does not log it.
	Handler Handler
	// H2C, when set, takes a connection that opens with the HTTP/2
	// prior-knowledge preface: r reads the bytes already read from c, then
	// c. When nil such a connection is answered 505.
	H2C func(ctx context.Context, c net.Conn, r io.Reader)
	// MaxHeaderBytes bounds a request's header (request line included);
	// a larger one is answered 431. 1 MiB when zero.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds reading a request's header; 30s when zero.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request on a kept-alive
	// connection; 5m when zero.
	IdleTimeout time.Duration
	// Idle, when set, is told when a connection waits for its next request
	// (true) and when that request starts (false). When it returns false
	// the connection is closed: a drain closes idle connections this way.
	Idle func(c net.Conn, idle bool) bool
	// Draining, when set and true, makes every answer close its connection.
	Draining func() bool
	// Budget, when set, returns the budget that c's request headers are
	// reserved from (nil: none).
	Budget func(c net.Conn) Budget
	// Refused, when set, is told of each answer the server produces
	// itself (400, 417, 431, 503, 505) before it closes c.
	Refused func(c net.Conn, status int, reason string)
}

// Budget accounts the bytes a connection's request headers hold
// (limits.Lease implements it).
type Budget interface {
	// Reserve takes n bytes; false when they are not available.
	Reserve(n int64) bool
	// Release returns n bytes.
	Release(n int64)
}

const (
	// maxDrainBody is how much unread request body is read past to keep a
	// connection for its next request (net/http reads 256 KiB too).
	maxDrainBody = 256 << 10
	// maxPending is how much body of unknown length is held back so that a
	// short answer still gets a Content-Length.
	maxPending = 4 << 10
)

// Server serves HTTP/1.x on connections handed to ServeConn.
type Server struct{ cfg Config }

// NewServer returns a Server with cfg's zero fields set to their defaults.
func NewServer(cfg Config) *Server {
	cfg.MaxHeaderBytes = cmp.Or(cfg.MaxHeaderBytes, 1<<20)
	cfg.ReadHeaderTimeout = cmp.Or(cfg.ReadHeaderTimeout, 30*time.Second)
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, 5*time.Minute)
	return &Server{cfg: cfg}
}

func (s *Server) draining() bool { return s.cfg.Draining != nil && s.cfg.Draining() }

func (s *Server) idle(c net.Conn, idle bool) bool { return s.cfg.Idle == nil || s.cfg.Idle(c, idle) }

var (
	readerPool        = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}
	writerPool        = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 8<<10) }}
	errHeaderTooLarge = errors.New("request header too large")
	errOverBudget     = errors.New("request header over the buffer budget")
)

// limitedConn bounds what one request's header may read (n < 0: no bound)
// and reserves what it reads from the budget.
type limitedConn struct {
	net.Conn
	n int64
	// budget, when set, holds held bytes read while reading a header;
	// over is set when it could not take more.
	budget Budget
	held   int64
	over   bool
}

func (l *limitedConn) Read(b []byte) (int, error) {
	if l.n < 0 {
		return l.Conn.Read(b)
	}
	if l.n == 0 || l.over {
		return 0, errHeaderTooLarge
	}
	if int64(len(b)) > l.n {
		b = b[:l.n]
	}
	n, err := l.Conn.Read(b)
	if !l.charge(n) {
		return 0, errOverBudget
	}
	l.n -= int64(n)
	return n, err
}

// charge reserves n bytes read for a header; false (over set) when the
// budget cannot take them.
func (l *limitedConn) charge(n int) bool {
	if l.budget == nil || n <= 0 {
		return true
	}
	if !l.budget.Reserve(int64(n)) {
		l.over = true
		return false
	}
	l.held += int64(n)
	return true
}

// release returns the bytes held for the last header.
func (l *limitedConn) release() {
	if l.budget != nil && l.held > 0 {
		l.budget.Release(l.held)
	}
	l.held = 0
}

// conn is one client connection being served.
type conn struct {
	srv *Server
	ctx context.Context
	c   net.Conn
	lc  *limitedConn
	br  *bufio.Reader
	bw  *bufio.Writer
	// refused: the server answered a request itself and closes
	refused bool
	// unread: it closes with request body it did not read past
	unread bool
	// w and header are the response of each request in turn: a handler
	// does not keep its ResponseWriter past its return
	w      response
	header http.Header
}

// lingerMax and lingerTime bound what is read past, and for how long,
// after a refusal or a request body too large to skip, so that the client
// reads the answer instead of a reset (closing with unread input sends RST),
// as net/http does.
const (
	lingerMax  = 256 << 10
	lingerTime = 500 * time.Millisecond
)

// lingerClose half-closes c and reads past what the client still sends,
// within lingerMax and lingerTime; the caller closes c.
func lingerClose(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	c.SetReadDeadline(time.Now().Add(lingerTime))
	io.CopyN(io.Discard, c, lingerMax)
}

// ServeConn serves requests on c until it closes, and closes it (unless a
// handler hijacked it or H2C took it).
func (s *Server) ServeConn(ctx context.Context, c net.Conn) {
	lc := &limitedConn{Conn: c, n: -1}
	if s.cfg.Budget != nil {
		if b := s.cfg.Budget(c); b != nil {
			lc.budget = b
		}
	}
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(lc)
	c.SetReadDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
	b, err := br.Peek(3)
	if err != nil {
		c.Close()
		readerPool.Put(br)
		return
	}
	if string(b) == "PRI" && s.cfg.H2C != nil {
		c.SetReadDeadline(time.Time{})
		s.cfg.H2C(ctx, c, br) // br now belongs to the HTTP/2 server
		return
	}
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(c)
	cn := &conn{srv: s, ctx: ctx, c: c, lc: lc, br: br, bw: bw}
	hijacked := cn.serve()
	lc.release()
	if hijacked {
		return // the upgrade owns (and closes) the connection and buffers
	}
	if cn.refused || cn.unread {
		lingerClose(c)
	}
	c.Close()
	br.Reset(nil)
	readerPool.Put(br)
	bw.Reset(nil)
	writerPool.Put(bw)
}

// serve serves requests until the connection is done; true when a handler
// hijacked it.
func (cn *conn) serve() (hijacked bool) {
	for first := true; ; first = false {
		if !first && !cn.waitNext() {
			return false
		}
		req, ok := cn.readRequest(first)
		if !ok {
			return false
		}
		var body *reqBody
		if req.Body != nil && req.Body != http.NoBody {
			body = &reqBody{src: req.Body}
			req.Body = body
		}
		w := cn.newResponse(req)
		ec, ok := cn.expect(req, w)
		if !ok {
			return false
		}
		if !cn.run(w, req) {
			return false
		}
		if w.hijacked {
			return true
		}
		if cn.srv.draining() {
			w.closeAfter = true
		}
		if err := w.finish(); err != nil || w.closeAfter {
			return false
		}
		if !skipBody(body, ec) {
			cn.unread = true
			return false
		}
		cn.lc.release() // the request is done: its header is no longer held
	}
}

// waitNext waits, idle, for the next request; false when the connection
// is to close.
func (cn *conn) waitNext() bool {
	if cn.br.Buffered() > 0 { // pipelined: the next request is here
		return true
	}
	if !cn.srv.idle(cn.c, true) {
		return false
	}
	cn.c.SetReadDeadline(time.Now().Add(cn.srv.cfg.IdleTimeout))
	if _, err := cn.br.Peek(1); err != nil {
		return false
	}
	if !cn.srv.idle(cn.c, false) {
		return false
	}
	cn.c.SetReadDeadline(time.Now().Add(cn.srv.cfg.ReadHeaderTimeout))
	return true
}

// readRequest reads and checks one request header; when it fails the
// client got its answer (if any) and the connection is to close.
func (cn *conn) readRequest(first bool) (*http.Request, bool) {
	// what is already buffered counts against the header's bound and the
	// budget (read ahead: when the connection was classified, or with the
	// previous request)
	cn.lc.n = max(int64(cn.srv.cfg.MaxHeaderBytes)+4096-int64(cn.br.Buffered()), 1)
	var req *http.Request
	var err error
	if !cn.lc.charge(cn.br.Buffered()) {
		err = errOverBudget
	} else {
		req, err = http.ReadRequest(cn.br)
	}
	tooLarge, over := cn.lc.n == 0, cn.lc.over
	cn.lc.n = -1
	if err != nil {
		switch {
		case over:
			cn.refuse(http.StatusServiceUnavailable, "request header buffer budget exhausted")
		case tooLarge:
			cn.refuse(http.StatusRequestHeaderFieldsTooLarge, "")
		case errors.Is(err, io.EOF) && !first:
		case isTimeout(err):
		default:
			cn.refuse(http.StatusBadRequest, "")
		}
		return nil, false
	}
	// what the reader holds past the header is body (or the next request):
	// not header bytes, and the buffer is the connection's own anyway
	if n := min(int64(cn.br.Buffered()), cn.lc.held); n > 0 {
		cn.lc.budget.Release(n)
		cn.lc.held -= n
	}
	cn.c.SetReadDeadline(time.Time{})
	if code, msg := checkRequest(req); code != 0 {
		cn.refuse(code, msg)
		return nil, false
	}
	return req, true
}

// refuse answers a request the server itself refuses; the connection is
// to close.
func (cn *conn) refuse(code int, msg string) {
	cn.refused = true
	if cn.srv.cfg.Refused != nil {
		cn.srv.cfg.Refused(cn.c, code, cmp.Or(msg, http.StatusText(code)))
	}
	badRequest(cn.bw, code, msg)
}

func (cn *conn) newResponse(req *http.Request) *response {
	if cn.header == nil {
		cn.header = make(http.Header)
	}
	clear(cn.header)
	w := &cn.w
	w.init(cn.srv, cn.bw, req, cn.header)
	w.br, w.conn = cn.br, cn.c
	return w
}

// init readies w for req's answer, written to bw.
func (w *response) init(srv *Server, bw *bufio.Writer, req *http.Request, h http.Header) {
	*w = response{bw: bw, req: req, header: h, remaining: -1, srv: srv}
	w.closeAfter = req.Close
	if req.ProtoMajor == 1 && req.ProtoMinor == 0 {
		// HTTP/1.0 keeps the connection only when it asked to
		w.keepAlive10 = !req.Close && httpguts.HeaderValuesContainsToken(req.Header["Connection"], "keep-alive")
		w.closeAfter = !w.keepAlive10
	}
}

// Response is the server's answer to one request, for a caller that reads
// requests itself (an event loop): the same framing, connection handling
// and header writing as the answers ServeConn's handlers write, to a
// bufio.Writer the caller flushes. It cannot be hijacked.
type Response struct{ w response }

// NewResponse returns the answer to req, written to bw; the server's
// Draining hook applies to it.
func (s *Server) NewResponse(bw *bufio.Writer, req *http.Request) *Response {
	r := &Response{}
	r.w.init(s, bw, req, make(http.Header))
	return r
}

// ResetResponse readies r, done with its last answer, for req's, written
// to bw. It keeps r's header map (cleared), as the server keeps one per
// connection: a connection answering its requests in turn needs one
// Response, not one per request.
func (s *Server) ResetResponse(r *Response, bw *bufio.Writer, req *http.Request) {
	h := r.w.header
	if h == nil {
		h = make(http.Header)
	}
	clear(h)
	r.w.init(s, bw, req, h)
}

// Header is the answer's header (http.ResponseWriter).
func (r *Response) Header() http.Header { return r.w.Header() }

// WriteHeader sends the status (http.ResponseWriter).
func (r *Response) WriteHeader(code int) { r.w.WriteHeader(code) }

// Write writes body bytes (http.ResponseWriter).
func (r *Response) Write(p []byte) (int, error) { return r.w.Write(p) }

// FlushError puts what was written so far in the bufio.Writer and flushes it
// (http.ResponseController).
func (r *Response) FlushError() error { return r.w.FlushError() }

// Finish completes the answer (chunked terminator and trailers) and flushes.
func (r *Response) Finish() error { return r.w.finish() }

// Committed reports whether the status line went out.
func (r *Response) Committed() bool { return r.w.committed }

// CloseAfter reports whether the connection must close after this answer
// (the request or the answer asked, a drain began, or the body's end was
// unclear).
func (r *Response) CloseAfter() bool { return r.w.closeAfter || r.w.srv.draining() }

// expect handles an Expect header: 100-continue is sent when the handler
// first reads the body; anything else is answered 417 (false).
func (cn *conn) expect(req *http.Request, w *response) (*expectContinue, bool) {
	ex := req.Header["Expect"]
	if len(ex) == 0 {
		return nil, true
	}
	if len(ex) == 1 && strings.EqualFold(ex[0], "100-continue") && req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
		ec := &expectContinue{ReadCloser: req.Body, w: w}
		req.Body = ec
		return ec, true
	}
	cn.refuse(http.StatusExpectationFailed, "")
	return nil, false
}

// run runs the handler for one request; false when it aborted (panic):
// the connection is closed without completing the answer.
func (cn *conn) run(w *response, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
		}
	}()
	cn.srv.cfg.Handler(cn.ctx, w, req)
	return true
}

// skipBody reads past what the handler left of the request body so the
// next request can be read; false when that is not possible.
func skipBody(body *reqBody, ec *expectContinue) bool {
	if ec != nil && !ec.sent {
		return false // the client may be holding the body back: it cannot be skipped
	}
	return body == nil || body.skip(maxDrainBody)
}

// reqBody is a request's body as the handler sees it. Closing it (as
// Request.Write does with a body it forwarded) ends the handler's reads, not
// the connection's: the server reads past what is left afterwards, so a body
// read to its end keeps the connection, as with net/http. The lock orders a
// forwarder still reading (an HTTP/2 transport writes bodies on its own
// goroutine) before the server's skip.
type reqBody struct {
	mu     sync.Mutex
	src    io.Reader
	eof    bool
	closed bool
}

func (b *reqBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.src.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

func (b *reqBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// skip closes the body for the handler and reads past up to max bytes of
// what is left of it; false when more is left, or it did not end well.
func (b *reqBody) skip(max int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.eof {
		return true
	}
	n, err := io.CopyN(io.Discard, b.src, max+1)
	b.eof = err == io.EOF
	return n <= max && b.eof
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// CheckRequest applies the server's checks to a request read elsewhere
// (http.ReadRequest): 0 when it passes, else the status it is answered
// with and why.
func CheckRequest(req *http.Request) (int, string) { return checkRequest(req) }

// checkRequest applies net/http's server checks to a parsed request.
func checkRequest(req *http.Request) (int, string) {
	if req.ProtoMajor != 1 {
		return http.StatusHTTPVersionNotSupported, "unsupported protocol version"
	}
	// http.ReadRequest moved the Host header to req.Host
	if req.ProtoAtLeast(1, 1) && req.Host == "" && req.Method != http.MethodConnect {
		return http.StatusBadRequest, "missing required Host header"
	}
	if req.Host != "" && !httpguts.ValidHostHeader(req.Host) {
		return http.StatusBadRequest, "malformed Host header"
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			return http.StatusBadRequest, "invalid header name"
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return http.StatusBadRequest, "invalid header value"
			}
		}
	}
	return 0, ""
}

// badRequest answers a request that could not be served and is the last
// on its connection.
func badRequest(bw *bufio.Writer, code int, msg string) {
	body := strconv.Itoa(code) + " " + http.StatusText(code)
	if msg != "" {
		body += ": " + msg
	}
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, http.StatusText(code), len(body), body)
	bw.Flush()
}

// expectContinue sends "100 Continue" when the handler first reads the body.
type expectContinue struct {
	io.ReadCloser
	w    *response
	sent bool
}

func (e *expectContinue) Read(b []byte) (int, error) {
	if !e.sent {
		e.sent = true
		if !e.w.committed {
			e.w.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := e.w.bw.Flush(); err != nil {
				return 0, err
			}
		}
	}
	return e.ReadCloser.Read(b)
}
