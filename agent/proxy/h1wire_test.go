package proxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHTTP1Wire speaks raw HTTP/1.1 to an L7 port: the refusals net/http's
// server makes, Expect: 100-continue, HTTP/1.0, HEAD and a keep-alive
// connection that serves several requests in a row.
func TestHTTP1Wire(t *testing.T) {
	e, caller := routedEnv(t)
	// exchange writes req on a fresh connection and reads every response
	// until the proxy closes it (or n responses arrived).
	exchange := func(t *testing.T, req string, n int, method string) ([]*http.Response, bool) {
		t.Helper()
		c, err := e.dialErr(caller, vip)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		var out []*http.Response
		for len(out) < n {
			resp, err := http.ReadResponse(br, &http.Request{Method: method})
			if err != nil {
				break
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body = io.NopCloser(strings.NewReader(string(body)))
			out = append(out, resp)
		}
		// closed by the proxy? (a reset counts: the client may still have
		// been sending); still open when nothing comes for a moment
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = br.ReadByte()
		return out, err != nil && !isTimeout(err)
	}
	for _, tc := range []struct {
		name, req string
		code      int
		closed    bool
	}{
		{"missing Host", "GET /only HTTP/1.1\r\n\r\n", 400, true},
		{"bad header name", "GET /only HTTP/1.1\r\nHost: web\r\nBad Name: x\r\n\r\n", 400, true},
		{"header too large", "GET /only HTTP/1.1\r\nHost: web\r\nX-Big: " + strings.Repeat("a", 1<<20+8192) + "\r\n\r\n", 431, true},
		{"HTTP/1.0 closes", "GET /only HTTP/1.0\r\nHost: web\r\n\r\n", 200, true},
		{"unknown expectation", "POST /only HTTP/1.1\r\nHost: web\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx", 417, true},
		{"Connection: close", "GET /only HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n", 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs, closed := exchange(t, tc.req, 1, "GET")
			if len(rs) != 1 || rs[0].StatusCode != tc.code || closed != tc.closed {
				var got []int
				for _, r := range rs {
					got = append(got, r.StatusCode)
				}
				t.Fatalf("got %v closed=%v, want [%d] closed=%v", got, closed, tc.code, tc.closed)
			}
		})
	}
	t.Run("HTTP/1.0 keep-alive", func(t *testing.T) {
		rs, _ := exchange(t, strings.Repeat("GET /only HTTP/1.0\r\nHost: web\r\nConnection: keep-alive\r\n\r\n", 2), 2, "GET")
		if len(rs) != 2 || rs[0].Header.Get("Connection") != "keep-alive" || rs[0].ContentLength < 0 {
			t.Fatalf("want 2 answers on one HTTP/1.0 keep-alive connection with a length, got %d", len(rs))
		}
	})
	t.Run("pipelined keep-alive", func(t *testing.T) {
		rs, closed := exchange(t, strings.Repeat("GET /only HTTP/1.1\r\nHost: web\r\n\r\n", 3), 3, "GET")
		if len(rs) != 3 || closed {
			t.Fatalf("want 3 answers and an open connection, got %d closed=%v", len(rs), closed)
		}
		for _, r := range rs {
			if r.StatusCode != 200 || r.Header.Get("Date") == "" {
				t.Fatalf("answer %d without Date: %v", r.StatusCode, r.Header)
			}
		}
	})
	t.Run("expect 100-continue", func(t *testing.T) {
		c, err := e.dialErr(caller, vip)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "POST /only HTTP/1.1\r\nHost: web\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
			t.Fatalf("want 100 Continue before the body, got %q %v", line, err)
		}
		br.ReadString('\n') // blank line
		io.WriteString(c, "hello")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("answer after the body: %v %v", resp, err)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		rs, closed := exchange(t, "HEAD /only HTTP/1.1\r\nHost: web\r\n\r\nGET /only HTTP/1.1\r\nHost: web\r\n\r\n", 2, "HEAD")
		if len(rs) < 1 || rs[0].StatusCode != 200 || closed {
			t.Fatalf("HEAD: %d answers, closed=%v", len(rs), closed)
		}
		// the next answer must start right after the HEAD answer's header
		if len(rs) != 2 {
			t.Fatalf("HEAD answer carried a body: %d answers", len(rs))
		}
	})
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
