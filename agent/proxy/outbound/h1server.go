package outbound

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// A captured client's HTTP/1.1 is served here, not by net/http's Server:
// one goroutine per connection reads a request, runs the proxy's handler
// and writes the response, with no other goroutine, context or response
// machinery per request. net/http's server keeps a background read going
// during each request (to notice a client that went away) and builds a
// cancelable context and a chunk writer per request; on the node proxy that
// was about a fifth of the CPU per request.
//
// What net/http's server refuses, this refuses the same way: a missing or
// malformed Host, invalid header names or values (400), headers
// over 1 MiB (431), versions other than HTTP/1.x (505), an Expect other
// than 100-continue (417); each answer closes the connection. Cleartext
// HTTP/2 (the prior-knowledge preface) goes to net/http's server.
//
// Given up: a client that closes its connection while its request waits
// for the backend is noticed when the answer is written, not at once (the
// route's timeouts still bound the wait), as nginx does for a closed
// keep-alive client.

const (
	maxHeaderBytes    = 1 << 20
	readHeaderTimeout = 30 * time.Second
	// maxDrainBody is how much unread request body is read past to keep a
	// connection for its next request (net/http reads 256 KiB too).
	maxDrainBody = 256 << 10
	// maxPending is how much body of unknown length is held back so that a
	// short answer still gets a Content-Length.
	maxPending = 4 << 10
)

var (
	clientReaderPool  = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8<<10) }}
	clientWriterPool  = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 8<<10) }}
	errHeaderTooLarge = errors.New("request header too large")
)

// limitedConn bounds what one request's header may read (n < 0: no bound).
type limitedConn struct {
	net.Conn
	n int64
}

func (l *limitedConn) Read(b []byte) (int, error) {
	if l.n < 0 {
		return l.Conn.Read(b)
	}
	if l.n == 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(b)) > l.n {
		b = b[:l.n]
	}
	n, err := l.Conn.Read(b)
	l.n -= int64(n)
	return n, err
}

// trackClient registers an HTTP/1.1 client connection, busy; cancel ends
// its requests' upstream work (Close). False when the proxy is closed; a
// connection accepted before a Shutdown began is served.
func (p *Proxy) trackClient(c net.Conn, cancel context.CancelFunc) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.clients[c] = &clientState{cancel: cancel}
	return true
}

// untrackClient forgets a client connection that ended.
func (p *Proxy) untrackClient(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.clients, c)
}

type clientState struct {
	idle   bool
	cancel context.CancelFunc
}

// setIdle marks c idle between requests (the drain closes idle ones) or
// busy; false when the proxy is closing and c must not take a request.
func (p *Proxy) setIdle(c net.Conn, idle bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing {
		return false
	}
	p.clients[c].idle = idle
	return true
}

// serveClient serves a captured L7 connection until it closes.
func (p *Proxy) serveClient(c net.Conn, info *connInfo) {
	lc := &limitedConn{Conn: c, n: -1}
	br := clientReaderPool.Get().(*bufio.Reader)
	br.Reset(lc)
	c.SetReadDeadline(time.Now().Add(readHeaderTimeout))
	if b, err := br.Peek(3); err != nil {
		c.Close()
		clientReaderPool.Put(br)
		return
	} else if string(b) == "PRI" {
		// cleartext HTTP/2: net/http's server reads the preface from br
		c.SetReadDeadline(time.Time{})
		if !p.l7.push(&capturedConn{Conn: c, info: info, r: br}) {
			c.Close()
		}
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if !p.trackClient(c, cancel) {
		c.Close()
		clientReaderPool.Put(br)
		return
	}
	bw := clientWriterPool.Get().(*bufio.Writer)
	bw.Reset(c)
	hijacked := false
	defer func() {
		p.untrackClient(c)
		if hijacked {
			return // the upgrade owns (and closed) the connection and buffers
		}
		c.Close()
		br.Reset(nil)
		clientReaderPool.Put(br)
		bw.Reset(nil)
		clientWriterPool.Put(bw)
	}()
	for first := true; ; first = false {
		if !first && br.Buffered() == 0 {
			if !p.setIdle(c, true) {
				return
			}
			c.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
			if _, err := br.Peek(1); err != nil {
				return
			}
			if !p.setIdle(c, false) {
				return
			}
			c.SetReadDeadline(time.Now().Add(readHeaderTimeout))
		}
		// what is already buffered counts against the header's bound
		lc.n = max(maxHeaderBytes+4096-int64(br.Buffered()), 1)
		req, err := http.ReadRequest(br)
		tooLarge := lc.n == 0
		lc.n = -1
		if err != nil {
			switch {
			case tooLarge:
				badRequest(bw, http.StatusRequestHeaderFieldsTooLarge, "")
			case errors.Is(err, io.EOF) && !first:
			case isTimeout(err):
			default:
				badRequest(bw, http.StatusBadRequest, "")
			}
			return
		}
		c.SetReadDeadline(time.Time{})
		if code, msg := checkRequest(req); code != 0 {
			badRequest(bw, code, msg)
			return
		}
		w := &h1response{bw: bw, br: br, conn: c, req: req, header: make(http.Header), status: 0, remaining: -1, draining: &p.draining}
		w.closeAfter = req.Close
		if req.ProtoMajor == 1 && req.ProtoMinor == 0 {
			// HTTP/1.0 keeps the connection only when it asked to
			w.keepAlive10 = !req.Close && httpguts.HeaderValuesContainsToken(req.Header["Connection"], "keep-alive")
			w.closeAfter = !w.keepAlive10
		}
		var ec *expectContinue
		if ex := req.Header["Expect"]; len(ex) > 0 {
			if len(ex) == 1 && strings.EqualFold(ex[0], "100-continue") && req.ProtoAtLeast(1, 1) && req.ContentLength != 0 {
				ec = &expectContinue{ReadCloser: req.Body, w: w}
				req.Body = ec
			} else {
				badRequest(bw, http.StatusExpectationFailed, "")
				return
			}
		}
		if !p.runHandler(w, req, ctx, info) {
			return
		}
		if w.hijacked {
			hijacked = true
			return
		}
		if p.draining.Load() {
			w.closeAfter = true
		}
		if err := w.finish(); err != nil {
			return
		}
		if w.closeAfter {
			return
		}
		// the next request starts after this one's body
		if ec != nil && !ec.sent {
			return // the client may be holding the body back: it cannot be skipped
		}
		if req.Body != nil && req.Body != http.NoBody {
			n, err := io.CopyN(io.Discard, req.Body, maxDrainBody+1)
			if n > maxDrainBody || err != io.EOF {
				return
			}
		}
	}
}

// runHandler runs the proxy's handler for one request; false when it
// aborted (panic): the connection is closed without completing the answer.
func (p *Proxy) runHandler(w *h1response, req *http.Request, ctx context.Context, info *connInfo) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				p.cfg.Logger.Error("panic serving a request", "panic", fmt.Sprint(v))
			}
			ok = false
		}
	}()
	p.serve(w, req, ctx, info)
	return true
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

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
	w    *h1response
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

// h1response is the http.ResponseWriter (and Flusher, Hijacker) of one
// request on a client connection.
type h1response struct {
	bw     *bufio.Writer
	br     *bufio.Reader
	conn   net.Conn
	req    *http.Request
	header http.Header
	status int

	committed   bool  // status line and header are in bw
	chunked     bool  // body framed as chunks
	noBody      bool  // HEAD, 1xx, 204, 304
	remaining   int64 // declared Content-Length left to write; -1 when none
	pending     []byte
	closeAfter  bool
	keepAlive10 bool
	hijacked    bool
	err         error
	draining    *atomic.Bool // the proxy's: answers close the connection
}

func (w *h1response) Header() http.Header { return w.header }

func (w *h1response) WriteHeader(code int) {
	if w.status != 0 || w.hijacked {
		return
	}
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// interim response: out at once, the final one follows
		w.writeStatus(code)
		w.writeFields(false)
		w.bw.WriteString("\r\n")
		w.bw.Flush()
		return
	}
	w.status = code
	w.noBody = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.remaining = n
		} else {
			delete(w.header, "Content-Length") // never pass on a bad one
		}
	}
}

func (w *h1response) writeStatus(code int) {
	w.bw.WriteString("HTTP/1.1 ")
	var b [3]byte
	w.bw.Write(strconv.AppendInt(b[:0], int64(code), 10))
	w.bw.WriteByte(' ')
	w.bw.WriteString(http.StatusText(code))
	w.bw.WriteString("\r\n")
}

var headerNewlines = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

// writeFields writes the header fields (trailers-to-be excluded); with
// final it adds the framing and connection fields this response needs.
func (w *h1response) writeFields(final bool) {
	for k, vv := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		if final && (k == "Transfer-Encoding" || k == "Connection") {
			continue
		}
		for _, v := range vv {
			w.writeField(k, v)
		}
	}
	if !final {
		return
	}
	if _, ok := w.header["Date"]; !ok {
		w.bw.WriteString("Date: ")
		w.bw.Write(httpDate())
		w.bw.WriteString("\r\n")
	}
	if w.chunked {
		w.bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter:
		w.bw.WriteString("Connection: close\r\n")
	case w.keepAlive10:
		w.bw.WriteString("Connection: keep-alive\r\n")
	}
}

// commit writes the status line and header. known is whether the body
// length is known (declared, none, or all pending at the handler's end).
func (w *h1response) commit(known bool) {
	if w.committed {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.committed = true
	if vv := w.header["Connection"]; httpguts.HeaderValuesContainsToken(vv, "close") || w.draining.Load() {
		w.closeAfter = true
	}
	if !w.noBody && w.remaining < 0 {
		switch {
		case known:
			w.header["Content-Length"] = []string{strconv.Itoa(len(w.pending))}
			w.remaining = int64(len(w.pending))
		case w.req.ProtoAtLeast(1, 1):
			w.chunked = true
		default:
			w.closeAfter = true // HTTP/1.0: the end of the body is the close
			w.keepAlive10 = false
		}
	}
	w.writeStatus(w.status)
	w.writeFields(true)
	w.bw.WriteString("\r\n")
	if len(w.pending) > 0 {
		p := w.pending
		w.pending = nil
		w.writeBody(p)
	}
}

func (w *h1response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if !w.committed {
		if w.remaining < 0 && len(w.pending)+len(p) <= maxPending {
			w.pending = append(w.pending, p...)
			return len(p), nil
		}
		w.commit(false)
	}
	return w.writeBody(p)
}

func (w *h1response) writeBody(p []byte) (int, error) {
	if w.remaining >= 0 {
		if int64(len(p)) > w.remaining {
			w.closeAfter = true
			return 0, http.ErrContentLength
		}
		w.remaining -= int64(len(p))
	}
	if w.chunked && len(p) > 0 {
		var b [16]byte
		w.bw.Write(strconv.AppendInt(b[:0], int64(len(p)), 16))
		w.bw.WriteString("\r\n")
	}
	n, err := w.bw.Write(p)
	if w.chunked && err == nil && len(p) > 0 {
		_, err = w.bw.WriteString("\r\n")
	}
	if err != nil {
		w.err = err
	}
	return n, err
}

// FlushError sends what was written so far (http.ResponseController).
func (w *h1response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	w.commit(false)
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
		return err
	}
	return nil
}

func (w *h1response) Flush() { w.FlushError() }

// Hijack hands the connection to the caller (protocol upgrades).
func (w *h1response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.committed {
		return nil, nil, errors.New("hijack after the response started")
	}
	w.hijacked = true
	return w.conn, bufio.NewReadWriter(w.br, w.bw), nil
}

// finish completes the response (chunked terminator and trailers) and
// sends it.
func (w *h1response) finish() error {
	w.commit(true)
	if w.err != nil {
		return w.err
	}
	if w.chunked {
		w.bw.WriteString("0\r\n")
		for _, k := range w.header.Values("Trailer") {
			for k := range strings.SplitSeq(k, ",") {
				k = http.CanonicalHeaderKey(strings.TrimSpace(k))
				for _, v := range w.header[k] {
					w.writeTrailer(k, v)
				}
			}
		}
		for k, vv := range w.header {
			if t, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
				for _, v := range vv {
					w.writeTrailer(t, v)
				}
			}
		}
		w.bw.WriteString("\r\n")
	}
	if w.remaining > 0 && !w.noBody {
		w.closeAfter = true // shorter than declared: the client cannot tell where it ends
	}
	if err := w.bw.Flush(); err != nil {
		w.err = err
	}
	return w.err
}

func (w *h1response) writeTrailer(k, v string) {
	if httpguts.ValidHeaderFieldName(k) {
		w.writeField(k, v)
	}
}

// writeField writes one "name: value" line; line breaks in a value become
// spaces (as net/http does), so a value can never start a new field.
func (w *h1response) writeField(k, v string) {
	if strings.ContainsAny(v, "\r\n") {
		v = headerNewlines.Replace(v)
	}
	w.bw.WriteString(k)
	w.bw.WriteString(": ")
	w.bw.WriteString(v)
	w.bw.WriteString("\r\n")
}

// httpDate is the current time in the Date header's format, formatted once
// a second.
func httpDate() []byte {
	now := time.Now().Unix()
	if d := dateCache.Load(); d != nil && d.sec == now {
		return d.b
	}
	d := &cachedDate{sec: now, b: time.Unix(now, 0).UTC().AppendFormat(nil, http.TimeFormat)}
	dateCache.Store(d)
	return d.b
}

type cachedDate struct {
	sec int64
	b   []byte
}

var dateCache atomic.Pointer[cachedDate]
