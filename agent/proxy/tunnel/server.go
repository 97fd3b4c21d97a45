package tunnel

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Handler serves one CONNECT stream: authority is the :authority (target
// ip:port) and h the request's regular headers. It must call s.Respond
// before writing, and Close the stream when done.
type Handler func(s *Stream, authority string, h http.Header)

// ServerConn is the server end of one tunnel connection.
type ServerConn struct{ c *h2conn }

// NewServerConn reads the client preface from nc (an established TLS
// connection), sends our settings and returns the connection; call Serve.
func NewServerConn(nc net.Conn, handle Handler) (*ServerConn, error) {
	c := newH2Conn(nc, true)
	c.handle = handle
	// a client that keeps a connection with no stream open is dropped
	c.idleTimeout = serverIdleTimeout
	br := bufio.NewReaderSize(nc, 32<<10)
	if err := c.readPreface(br); err != nil {
		nc.Close()
		return nil, err
	}
	c.fr = newFramer(c, br)
	if err := c.start(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("tunnel settings: %w", err)
	}
	c.noteIdle()
	return &ServerConn{c: c}, nil
}

// serverIdleTimeout closes server connections that carry no stream.
const serverIdleTimeout = 5 * time.Minute

// Serve reads frames until the connection ends.
func (s *ServerConn) Serve() { s.c.readLoop() }

// GoAway asks the client to open no new streams; the connection closes
// once its streams are done.
func (s *ServerConn) GoAway() { s.c.goAway() }

// Streams counts open streams.
func (s *ServerConn) Streams() int { return s.c.activeStreams() }

// Close closes the connection and its streams.
func (s *ServerConn) Close() { s.c.fail(errConnClosed) }

// Done is closed when the connection is closed.
func (s *ServerConn) Done() <-chan struct{} { return s.c.done }
