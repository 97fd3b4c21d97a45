package http1

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/limits"
)

// wireConn is a net.Conn that reads a fixed input and collects writes.
type wireConn struct {
	r io.Reader
	w bytes.Buffer
}

func (c *wireConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *wireConn) Write(b []byte) (int, error)      { return c.w.Write(b) }
func (c *wireConn) Close() error                     { return nil }
func (c *wireConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *wireConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *wireConn) SetDeadline(time.Time) error      { return nil }
func (c *wireConn) SetReadDeadline(time.Time) error  { return nil }
func (c *wireConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzServer feeds a server connection arbitrary client bytes: no panic,
// no hang, and what it writes starts as an HTTP/1.1 response.
func FuzzServer(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
		"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"GET http://x/abs?q=1 HTTP/1.1\r\nHost: y\r\n\r\n",
		"CONNECT x:1 HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		nc := &wireConn{r: bytes.NewReader(in)}
		srv := NewServer(Config{MaxHeaderBytes: 4 << 10, Handler: func(_ context.Context, w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(io.LimitReader(r.Body, 64<<10))
			w.Header().Set("X-Len", "1")
			if len(b)%2 == 0 {
				w.Write(b)
			} else {
				w.Header().Set("Trailer", "X-T")
				w.Write(bytes.Repeat(b, 1+maxPending/max(len(b), 1)))
				w.Header().Set("X-T", "t")
			}
		}})
		srv.ServeConn(context.Background(), nc)
		if out := nc.w.Bytes(); len(out) > 0 && !bytes.HasPrefix(out, []byte("HTTP/1.1 ")) {
			t.Fatalf("server wrote %q", out)
		}
	})
}

// FuzzClient feeds a client arbitrary server bytes as the response: no
// panic, no hang.
func FuzzClient(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: a\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n2\r\nok\r\n0\r\nX: y\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nraw",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := NewClient(func(context.Context, int) (net.Conn, error) {
			return &wireConn{r: bytes.NewReader(in)}, nil
		}, ClientConfig{MaxIdlePerKey: 1})
		defer c.Close()
		req, _ := http.NewRequest("POST", "http://x/", bytes.NewReader([]byte("body")))
		resp, err := c.RoundTrip(context.Background(), 0, req)
		if err != nil {
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	})
}

// checkBudget is a Budget that fails the test when its bound is exceeded.
// With a lease it reserves from the lease too and checks the node
// budget's accounting invariant (limits.Budget.Check) at each step.
type checkBudget struct {
	t         *testing.T
	max, held int64
	refused   int
	lease     *limits.Lease
	node      *limits.Budget
}

func (b *checkBudget) Reserve(n int64) bool {
	if b.held+n > b.max {
		b.refused++
		return false
	}
	if b.lease != nil {
		ok := b.lease.Reserve(n)
		if !b.node.Check() || b.lease.Held() > b.max {
			b.t.Fatalf("budget invariant broken: %+v", b.node.Usage())
		}
		if !ok {
			b.refused++
			return false
		}
	}
	b.held += n
	return true
}

func (b *checkBudget) Release(n int64) {
	b.held -= n
	if b.held < 0 {
		b.t.Fatalf("released more than reserved: held %d", b.held)
	}
	if b.lease != nil {
		b.lease.Release(n)
		if !b.node.Check() || b.lease.Held() != b.held {
			b.t.Fatalf("lease holds %d, the server %d: %+v", b.lease.Held(), b.held, b.node.Usage())
		}
	}
}

// FuzzHeaderBudget sends pipelined requests with random header counts and
// sizes through a server with a header budget: the bytes held never exceed
// the budget (checkBudget refuses them), every byte reserved is returned
// when the connection ends, and a request is refused (431 or 503) rather
// than served when its header does not fit.
func FuzzHeaderBudget(f *testing.F) {
	f.Add(uint16(1000), []byte{3, 10, 200, 1, 5, 250})
	f.Add(uint16(64), []byte{1, 255})
	f.Add(uint16(9000), []byte{8, 255, 255, 255, 255, 255, 255, 255, 255, 0})
	f.Fuzz(func(t *testing.T, budget uint16, shape []byte) {
		var in bytes.Buffer
		for i := 0; i < len(shape); {
			fields := int(shape[i]) % 16
			i++
			in.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
			for range fields {
				size := 0
				if i < len(shape) {
					size = int(shape[i]) * 16
					i++
				}
				in.WriteString("X-F: ")
				in.Write(bytes.Repeat([]byte{'a'}, size))
				in.WriteString("\r\n")
			}
			in.WriteString("\r\n")
		}
		node := limits.NewBudget(limits.Limits{BufferBytes: int64(budget) + 1, PodBufferBytes: int64(budget) + 1, PodConns: 1})
		lease, _ := node.Open(1)
		b := &checkBudget{t: t, max: int64(budget), lease: lease, node: node}
		var served int
		nc := &wireConn{r: &in}
		srv := NewServer(Config{
			MaxHeaderBytes: 2 << 10,
			Budget:         func(net.Conn) Budget { return b },
			Handler: func(_ context.Context, w http.ResponseWriter, r *http.Request) {
				served++
				if b.held > b.max {
					t.Fatalf("held %d over the budget %d while serving", b.held, b.max)
				}
			},
		})
		srv.ServeConn(context.Background(), nc)
		if b.held != 0 || node.Usage().Held != 0 {
			t.Fatalf("%d bytes still held after the connection ended (%+v)", b.held, node.Usage())
		}
		out := nc.w.String()
		if b.refused > 0 && !bytes.Contains([]byte(out), []byte("HTTP/1.1 503")) && !bytes.Contains([]byte(out), []byte("HTTP/1.1 431")) {
			t.Fatalf("the budget refused bytes but no 503 or 431 was answered (served %d):\n%.300s", served, out)
		}
	})
}
