package http1

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
)

// response is the http.ResponseWriter (and Flusher, Hijacker) of one
// request on a client connection.
type response struct {
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
	srv         *Server
}

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
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

func (w *response) writeStatus(code int) {
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
func (w *response) writeFields(final bool) {
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
func (w *response) commit(known bool) {
	if w.committed {
		return
	}
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.committed = true
	if vv := w.header["Connection"]; httpguts.HeaderValuesContainsToken(vv, "close") || w.srv.draining() {
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

func (w *response) Write(p []byte) (int, error) {
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

func (w *response) writeBody(p []byte) (int, error) {
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
func (w *response) FlushError() error {
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

func (w *response) Flush() { w.FlushError() }

// Hijack hands the connection to the caller (protocol upgrades).
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.committed {
		return nil, nil, errors.New("hijack after the response started")
	}
	w.hijacked = true
	return w.conn, bufio.NewReadWriter(w.br, w.bw), nil
}

// finish completes the response (chunked terminator and trailers) and
// sends it.
func (w *response) finish() error {
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

func (w *response) writeTrailer(k, v string) {
	if httpguts.ValidHeaderFieldName(k) {
		w.writeField(k, v)
	}
}

// writeField writes one "name: value" line; line breaks in a value become
// spaces (as net/http does), so a value can never start a new field.
func (w *response) writeField(k, v string) {
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
