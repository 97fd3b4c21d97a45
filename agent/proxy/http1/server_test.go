package http1

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// echo answers with the method and target, and the request body.
func echo(_ context.Context, w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Target", r.Method+" "+r.RequestURI)
	fmt.Fprintf(w, "%s", b)
}

// serve starts ServeConn on one end of a loopback TCP connection and
// returns the other (TCP, so half-closes work).
func serve(t *testing.T, cfg Config) (*net.TCPConn, *bufio.Reader) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Handler == nil {
		cfg.Handler = echo
	}
	srv := NewServer(cfg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// the listener closes after the accept: closed before it, it would
		// drop the connection the test dialed (a hang under load)
		c, err := l.Accept()
		l.Close()
		if err != nil {
			return
		}
		srv.ServeConn(context.Background(), c)
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close(); l.Close(); <-done })
	return c.(*net.TCPConn), bufio.NewReader(c)
}

func read(t *testing.T, br *bufio.Reader, method string) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp
}

func body(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// closed reports whether the server closed the connection.
func closed(br *bufio.Reader) bool {
	_, err := br.ReadByte()
	return err != nil
}

func TestPipelining(t *testing.T) {
	var idle atomic.Int32
	c, br := serve(t, Config{Idle: func(_ net.Conn, i bool) bool {
		if i {
			idle.Add(1)
		}
		return true
	}})
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"+
		"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, want := range []string{"GET /a", "POST /b", "GET /c"} {
		resp := read(t, br, "GET")
		if got := resp.Header.Get("X-Target"); got != want {
			t.Fatalf("answer for %q, want %q", got, want)
		}
	}
	if n := idle.Load(); n > 1 {
		t.Errorf("idle %d times between pipelined requests", n)
	}
	io.WriteString(c, "GET /d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp := read(t, br, "GET"); resp.Header.Get("X-Target") != "GET /d" || !resp.Close {
		t.Fatalf("last answer %v", resp.Header)
	}
	if !closed(br) {
		t.Fatal("connection kept after Connection: close")
	}
}

func TestHeaderLimit(t *testing.T) {
	for _, tc := range []struct {
		size int
		want int
	}{
		{512, http.StatusOK},
		{8 << 10, http.StatusRequestHeaderFieldsTooLarge},
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			c, br := serve(t, Config{MaxHeaderBytes: 1 << 10})
			go io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("v", tc.size)+"\r\n\r\n")
			if resp := read(t, br, "GET"); resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
	// the default bound is 1 MiB
	if NewServer(Config{}).cfg.MaxHeaderBytes != 1<<20 {
		t.Fatal("default MaxHeaderBytes")
	}
}

// TestRefusals: what net/http's server refuses is refused the same way,
// and the connection closes.
func TestRefusals(t *testing.T) {
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"bad header name", "GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", 400},
		{"bad header value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400},
		{"garbage", "HELLO\r\n\r\n", 400},
		{"http2 version", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
		{"h2c preface without H2C", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
		{"expect", "POST / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\na", 417},
		{"bad content length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
		{"two content lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := serve(t, Config{})
			go io.WriteString(c, tc.req)
			resp := read(t, br, "GET")
			if resp.StatusCode != tc.want || !resp.Close {
				t.Fatalf("status %d close %v, want %d and close", resp.StatusCode, resp.Close, tc.want)
			}
			if !closed(br) {
				t.Fatal("connection kept")
			}
		})
	}
}

// TestHalfClose: a client that sends its request and half-closes gets its
// answer, then the connection ends without a 400 for the EOF.
func TestHalfClose(t *testing.T) {
	c, br := serve(t, Config{})
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	c.CloseWrite()
	resp := read(t, br, "POST")
	if resp.StatusCode != 200 || body(resp) != "hi" {
		t.Fatalf("answer %d", resp.StatusCode)
	}
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Fatalf("after EOF the server wrote %q", rest)
	}
}

func TestExpectContinue(t *testing.T) {
	c, br := serve(t, Config{})
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	line, _ := br.ReadString('\n')
	if line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("first line %q", line)
	}
	br.ReadString('\n')
	io.WriteString(c, "body")
	if resp := read(t, br, "POST"); body(resp) != "body" {
		t.Fatal("body not echoed")
	}

	// a handler that never reads the body: no 100, and the connection
	// closes (the client may still send the body)
	c, br = serve(t, Config{Handler: func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusForbidden)
	}})
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
	if resp := read(t, br, "POST"); resp.StatusCode != 403 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if !closed(br) {
		t.Fatal("connection kept with an unread body")
	}
}

func TestHTTP10(t *testing.T) {
	c, br := serve(t, Config{})
	io.WriteString(c, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	resp := read(t, br, "GET")
	if resp.Close || resp.Header.Get("Connection") != "keep-alive" || resp.ContentLength != 0 {
		t.Fatalf("keep-alive answer: close %v %v", resp.Close, resp.Header)
	}
	io.WriteString(c, "GET /b HTTP/1.0\r\n\r\n")
	if resp := read(t, br, "GET"); !resp.Close {
		t.Fatal("HTTP/1.0 without keep-alive kept")
	}
	if !closed(br) {
		t.Fatal("connection kept")
	}
}

// TestResponseFraming: a short answer gets a Content-Length, a long or
// flushed one is chunked with its trailers, HEAD gets no body.
func TestResponseFraming(t *testing.T) {
	c, br := serve(t, Config{Handler: func(_ context.Context, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/short":
			io.WriteString(w, "short")
		case "/long":
			w.Header().Set("Trailer", "X-Sum")
			io.WriteString(w, strings.Repeat("l", maxPending+1))
			w.Header().Set("X-Sum", "42")
			w.Header().Set(http.TrailerPrefix+"X-Late", "yes")
		case "/head":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "0123456789")
		case "/short-declared":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "01234")
		}
	}})
	io.WriteString(c, "GET /short HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp := read(t, br, "GET"); resp.ContentLength != 5 || body(resp) != "short" {
		t.Fatalf("short: %d", resp.ContentLength)
	}
	io.WriteString(c, "GET /long HTTP/1.1\r\nHost: x\r\n\r\n")
	resp := read(t, br, "GET")
	if resp.ContentLength != -1 || len(body(resp)) != maxPending+1 || resp.Trailer.Get("X-Sum") != "42" || resp.Trailer.Get("X-Late") != "yes" {
		t.Fatalf("long: %d %v %v", resp.ContentLength, resp.TransferEncoding, resp.Trailer)
	}
	io.WriteString(c, "HEAD /head HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp := read(t, br, "HEAD"); resp.ContentLength != 10 {
		t.Fatalf("head: %d", resp.ContentLength)
	}
	io.WriteString(c, "GET /short-declared HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(resp.Body); err == nil || string(b) != "01234" {
		t.Fatalf("shorter than declared: %q %v", b, err)
	}
}

// TestDrainHooks: Draining closes after each answer; Idle returning
// false closes an idle connection.
func TestDrainHooks(t *testing.T) {
	c, br := serve(t, Config{Draining: func() bool { return true }})
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp := read(t, br, "GET"); !resp.Close {
		t.Fatal("draining answer kept the connection")
	}
	c, br = serve(t, Config{Idle: func(net.Conn, bool) bool { return false }})
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, br, "GET")
	if !closed(br) {
		t.Fatal("idle connection kept")
	}
}

// TestUnreadBody: a body the handler left is skipped when small, and ends
// the connection when large.
func TestUnreadBody(t *testing.T) {
	ignore := func(_ context.Context, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }
	c, br := serve(t, Config{Handler: ignore})
	go io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	read(t, br, "POST")
	if resp := read(t, br, "GET"); body(resp) != "ok" {
		t.Fatal("second request not served")
	}
	c, br = serve(t, Config{Handler: ignore})
	go func() {
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", maxDrainBody+2)
		c.Write(make([]byte, maxDrainBody+2))
	}()
	read(t, br, "POST")
	if !closed(br) {
		t.Fatal("connection kept past a large unread body")
	}
}

// TestForwardedBodyKeepsTheConnection: a handler that forwards the body
// (Request.Write reads it to the end and closes it) leaves the connection
// open for the next request; one that closes it unread has the rest skipped.
func TestForwardedBodyKeepsTheConnection(t *testing.T) {
	forward := func(_ context.Context, w http.ResponseWriter, r *http.Request) {
		out, _ := http.NewRequest(r.Method, "http://backend/", r.Body)
		out.ContentLength = r.ContentLength
		if err := out.Write(io.Discard); err != nil {
			t.Errorf("forwarding: %v", err)
		}
		r.Body.Close() // as a transport does once it sent the body
		if _, err := r.Body.Read(make([]byte, 1)); r.Body != http.NoBody && err != http.ErrBodyReadAfterClose {
			t.Errorf("read after close: %v, want ErrBodyReadAfterClose", err)
		}
		io.WriteString(w, "ok")
	}
	closeUnread := func(_ context.Context, w http.ResponseWriter, r *http.Request) {
		r.Body.Close()
		io.WriteString(w, "ok")
	}
	for name, h := range map[string]Handler{"forwarded": forward, "closed unread": closeUnread} {
		c, br := serve(t, Config{Handler: h})
		go io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		read(t, br, "POST")
		if resp := read(t, br, "GET"); body(resp) != "ok" {
			t.Fatalf("%s: second request not served", name)
		}
	}
}

func TestHandlerPanic(t *testing.T) {
	c, br := serve(t, Config{Handler: func(context.Context, http.ResponseWriter, *http.Request) { panic("boom") }})
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Fatalf("a panicking handler answered %q", rest)
	}
}

func TestH2C(t *testing.T) {
	got := make(chan string, 1)
	c, _ := serve(t, Config{H2C: func(_ context.Context, c net.Conn, r io.Reader) {
		b := make([]byte, 24)
		io.ReadFull(r, b)
		got <- string(b)
		c.Close()
	}})
	io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	select {
	case s := <-got:
		if s != "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" {
			t.Fatalf("H2C read %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the preface never reached H2C")
	}
}

func TestHijack(t *testing.T) {
	c, br := serve(t, Config{Handler: func(_ context.Context, w http.ResponseWriter, _ *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		defer conn.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\n\r\n")
		rw.Flush()
		line, _ := rw.ReadString('\n')
		io.WriteString(conn, "echo:"+line)
	}})
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nhello\n")
	if resp := read(t, br, "GET"); resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if line, _ := br.ReadString('\n'); line != "echo:hello\n" {
		t.Fatalf("after the upgrade: %q", line)
	}
}

// A header the budget cannot hold is answered 503 and reported; what was
// reserved is returned when the connection ends.
func TestServerHeaderBudget(t *testing.T) {
	b := &checkBudget{t: t, max: 2 << 10}
	var refused atomic.Int32
	var status atomic.Int32
	c, br := serve(t, Config{
		Budget: func(net.Conn) Budget { return b },
		Refused: func(_ net.Conn, code int, _ string) {
			refused.Add(1)
			status.Store(int32(code))
		},
	})
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 4<<10))
	resp := read(t, br, "GET")
	if resp.StatusCode != http.StatusServiceUnavailable || refused.Load() != 1 || status.Load() != http.StatusServiceUnavailable {
		t.Fatalf("status %d, refused %d (%d), want 503 reported once", resp.StatusCode, refused.Load(), status.Load())
	}
}
