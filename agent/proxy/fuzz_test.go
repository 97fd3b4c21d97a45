package proxy_test

import (
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FuzzOutboundHTTP sends raw bytes to an L7 port of the capture listener.
// Whatever arrives: no panic (a crash or a recovered handler panic), and a
// 400 answer is followed by the proxy closing the connection.
func FuzzOutboundHTTP(f *testing.F) {
	for _, s := range []string{
		"GET /only HTTP/1.1\r\nHost: web\r\n\r\n",
		"POST /only HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"POST /only HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
		"GET /only HTTP/1.1\r\nHost: web\r\nBad Header\r\n\r\n",
		"GET /only HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
		"GET http://evil/ HTTP/1.1\r\nHost: web\r\n\r\n",
		"CONNECT 10.0.0.1:22 HTTP/1.1\r\nHost: 10.0.0.1:22\r\n\r\n",
		"GET /only HTTP/1.1\r\nHost: web\r\nX-Canary: yes\r\nCookie: sticky=%%%\r\n\r\n",
		"\x16\x03\x01\x00\x05hello",
		"GET /redirect/\xff\xfe HTTP/1.1\r\nHost: web\r\n\r\n",
		"GET /split HTTP/1.0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	e, caller := routedEnv(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := e.dialErr(caller, vip)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, err := io.ReadAll(c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection neither answered nor closed: %q", b)
		}
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read: %v", err)
		}
		if strings.HasPrefix(string(b), "HTTP/1.1 400") && strings.Count(string(b), "HTTP/1.1 ") > 1 {
			t.Fatalf("connection kept serving after a 400: %q", b)
		}
		if n := e.panics.n.Load(); n > 0 {
			t.Fatalf("handler panicked (%d) on %q", n, data)
		}
	})
}
