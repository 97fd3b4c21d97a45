package outbound

import (
	"io"
	"net"
	"sync"
)

// capturedConn is an L7 connection handed to the HTTP server, with what the
// capture learned about it.
type capturedConn struct {
	net.Conn
	info *connInfo
	r    io.Reader // what was read ahead, then the connection
}

func (c *capturedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// connListener feeds accepted-and-classified connections to http.Server.
type connListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closer sync.Once
}

func newConnListener() *connListener {
	return &connListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the server; false when the listener is closed.
func (l *connListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.closer.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }
