package http1

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// backend is a loopback server running fn on each accepted connection.
func backend(t *testing.T, fn func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go fn(c)
		}
	}()
	return l.Addr().String()
}

// counting returns a Client dialing addr and the number of dials.
func counting(t *testing.T) (*Client[string], *atomic.Int32) {
	var dials atomic.Int32
	c := NewClient(func(ctx context.Context, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, ClientConfig{})
	t.Cleanup(c.Close)
	return c, &dials
}

func request(method, body string) *http.Request {
	r, _ := http.NewRequest(method, "http://backend/path", strings.NewReader(body))
	if body == "" {
		r.Body = http.NoBody
	} else {
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	}
	return r
}

// serveN answers n requests on c (200, body "ok"), skipping 1xx first
// when interim is set, then closes c.
func serveN(n int, interim bool) func(net.Conn) {
	return func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for range n {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, r.Body)
			if interim {
				io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}
}

func roundTrip(t *testing.T, c *Client[string], addr string, r *http.Request) string {
	t.Helper()
	resp, err := c.RoundTrip(context.Background(), addr, r)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestClientKeepAlive(t *testing.T) {
	addr := backend(t, serveN(10, true))
	c, dials := counting(t)
	for range 3 {
		if b := roundTrip(t, c, addr, request("POST", "body")); b != "ok" {
			t.Fatalf("body %q", b)
		}
	}
	if dials.Load() != 1 {
		t.Fatalf("%d dials for 3 sequential requests", dials.Load())
	}
	// a body closed before its end: the connection is not reused
	resp, err := c.RoundTrip(context.Background(), addr, request("GET", ""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	roundTrip(t, c, addr, request("GET", ""))
	if dials.Load() != 2 {
		t.Fatalf("%d dials, want 2", dials.Load())
	}
}

// TestClientStaleRetry: a kept-alive connection the server closed is
// retried once on a fresh one when the body can be replayed.
func TestClientStaleRetry(t *testing.T) {
	addr := backend(t, serveN(1, false))
	c, dials := counting(t)
	roundTrip(t, c, addr, request("GET", ""))
	time.Sleep(50 * time.Millisecond) // the server closed it
	if b := roundTrip(t, c, addr, request("POST", "again")); b != "ok" {
		t.Fatalf("retry: %q", b)
	}
	if dials.Load() != 2 {
		t.Fatalf("%d dials, want 2", dials.Load())
	}
	// a body that cannot be replayed is not retried
	roundTrip(t, c, addr, request("GET", ""))
	time.Sleep(50 * time.Millisecond)
	r := request("POST", "once")
	r.GetBody = nil
	if _, err := c.RoundTrip(context.Background(), addr, r); !errors.Is(err, errStale) {
		t.Fatalf("want errStale, got %v", err)
	}
}

func TestClientCancel(t *testing.T) {
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	addr := backend(t, func(c net.Conn) { <-hold; c.Close() })
	c, _ := counting(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.RoundTrip(ctx, addr, request("GET", "")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the context's error, got %v", err)
	}
}

// TestClientBadResponse: a malformed answer fails the round trip and the
// connection is not kept.
func TestClientBadResponse(t *testing.T) {
	addr := backend(t, func(c net.Conn) {
		defer c.Close()
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 abc Nope\r\n\r\n")
	})
	c, _ := counting(t)
	if _, err := c.RoundTrip(context.Background(), addr, request("GET", "")); err == nil {
		t.Fatal("malformed status accepted")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.idle[addr]); n != 0 {
		t.Fatalf("%d idle connections kept", n)
	}
}

// TestClientWire: the request goes out as written, hop-by-hop framing
// included.
func TestClientWire(t *testing.T) {
	got := make(chan string, 1)
	addr := backend(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		var buf bytes.Buffer
		r, _ := http.ReadRequest(br)
		b, _ := io.ReadAll(r.Body)
		buf.WriteString(r.Method + " " + r.RequestURI + " " + r.Host + " " + string(b))
		got <- buf.String()
		io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n")
	})
	c, _ := counting(t)
	roundTrip(t, c, addr, request("PUT", "data"))
	if s := <-got; s != "PUT /path backend data" {
		t.Fatalf("backend saw %q", s)
	}
}

// TestClientLostRetry: a kept-alive connection that breaks after the request was
// sent and before any answer (a reset; in the mesh, the tunnel stream under it
// closed as its node proxy finished draining) is retried once on a fresh one for an
// idempotent request, never for one that may not be sent twice.
func TestClientLostRetry(t *testing.T) {
	// The first request on a connection is answered, the second read and reset.
	resetSecond := func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if r, err := http.ReadRequest(br); err == nil {
			io.Copy(io.Discard, r.Body)
			c.(*net.TCPConn).SetLinger(0) // RST, not FIN
		}
	}
	addr := backend(t, resetSecond)
	c, dials := counting(t)
	roundTrip(t, c, addr, request("GET", ""))
	if b := roundTrip(t, c, addr, request("GET", "")); b != "ok" {
		t.Fatalf("GET after a reset: %q", b)
	}
	if dials.Load() != 2 {
		t.Fatalf("%d dials, want 2", dials.Load())
	}
	// the fresh connection answered once; a POST on it is reset and not sent again
	_, err := c.RoundTrip(context.Background(), addr, request("POST", "once"))
	if !errors.Is(err, errLost) || errors.Is(err, errStale) {
		t.Fatalf("POST after a reset: %v, want errLost only", err)
	}
	if dials.Load() != 2 {
		t.Fatalf("the POST was sent again: %d dials", dials.Load())
	}
}

// TestClientIdleTimeout: a kept connection idle for IdleTimeout is closed
// (the server sees its end), the one used since is kept until its own
// time, and the next request dials anew. Without the bound a connection to
// an endpoint no request goes to again was held for good.
func TestClientIdleTimeout(t *testing.T) {
	closed := make(chan time.Time, 4)
	addr := backend(t, func(c net.Conn) {
		serveN(100, false)(c) // returns when the client closed
		closed <- time.Now()
	})
	var dials atomic.Int32
	const idle = 300 * time.Millisecond
	c := NewClient(func(ctx context.Context, k string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}, ClientConfig{IdleTimeout: idle})
	t.Cleanup(c.Close)
	start := time.Now()
	roundTrip(t, c, "a", request("GET", ""))
	time.Sleep(idle / 2)
	roundTrip(t, c, "b", request("GET", "")) // a second key, idle from now
	var ends []time.Duration
	for range 2 {
		select {
		case at := <-closed:
			ends = append(ends, at.Sub(start))
		case <-time.After(10 * idle):
			t.Fatalf("kept connections not closed after %s idle (closed: %v)", 10*idle, ends)
		}
	}
	if ends[0] < idle || ends[1] < idle+idle/2 {
		t.Fatalf("closed at %v, want no sooner than %v and %v", ends, idle, idle+idle/2)
	}
	roundTrip(t, c, "a", request("GET", ""))
	if dials.Load() != 3 {
		t.Fatalf("%d dials, want 3 (the reaped connection is not reused)", dials.Load())
	}
}

// TestClientLargeBody: a body written by its own goroutine (large, or of
// unknown length: chunked) arrives whole, and the answer after it.
func TestClientLargeBody(t *testing.T) {
	addr := backend(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			r, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d", len(strconv.Itoa(int(n))), n)
		}
	})
	c, _ := counting(t)
	for _, n := range []int{3 << 20, 3 << 20, 100, 3 << 20} {
		for _, chunked := range []bool{false, true} {
			r := request("POST", strings.Repeat("x", n))
			if chunked {
				r.ContentLength, r.Body = -1, io.NopCloser(io.MultiReader(strings.NewReader(strings.Repeat("x", n))))
			}
			if b := roundTrip(t, c, addr, r); b != strconv.Itoa(n) {
				t.Fatalf("chunked %v: the server read %s bytes, want %d", chunked, b, n)
			}
		}
	}
}

// TestClientEarlyAnswer: a server answers a large upload before reading
// its body (413, 401), then closes the connection or leaves it open without
// reading. The client gets that answer, as from Go's Transport, which
// writes the body while it reads the response; writing all of the body
// first failed (the server had closed) or blocked until the context ended
// (it never read).
func TestClientEarlyAnswer(t *testing.T) {
	for _, closes := range []bool{true, false} {
		name := "then-open"
		if closes {
			name = "then-close"
		}
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			addr := backend(t, func(c net.Conn) {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo big!")
				if !closes {
					<-release
				}
			})
			defer close(release)
			c, _ := counting(t)
			body := strings.Repeat("x", 8<<20)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := c.RoundTrip(ctx, addr, request("POST", body))
			if err != nil {
				t.Fatalf("want the server's early answer, got %v", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != "too big!" {
				t.Fatalf("answer %d %q, want 413 %q", resp.StatusCode, b, "too big!")
			}
		})
	}
}
