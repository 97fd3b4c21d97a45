package tunnel

import (
	"fmt"
	"net"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/h2"
)

// Stream is one CONNECT stream of a tunnel connection.
type Stream = h2.Stream

// Handler serves one CONNECT stream: authority is the :authority (target
// ip:port) and h the request's regular headers. It must call s.Respond
// before writing, and Close the stream when done.
type Handler = h2.Handler

// ServerConn is the server end of one tunnel connection.
type ServerConn struct{ c *h2.Conn }

// ServerConfig configures a ServerConn.
type ServerConfig struct {
	// MaxHeaderBytes bounds a CONNECT request's header block; a larger one
	// is answered 431. 16 KiB when zero.
	MaxHeaderBytes int
	// Refused, when set, is told of each stream the connection answered
	// itself (400, 431).
	Refused func(status int)
}

// NewServerConn reads the client preface from nc (an established TLS
// connection), sends our settings and returns the connection; call Serve.
func NewServerConn(nc net.Conn, handle Handler, cfg ServerConfig) (*ServerConn, error) {
	// a client that keeps a connection with no stream open is dropped
	c, err := h2.NewServer(nc, h2.Config{Handler: handle, IdleTimeout: serverIdleTimeout,
		MaxHeaderListSize: uint32(max(cfg.MaxHeaderBytes, 0)), Refused: cfg.Refused})
	if err != nil {
		return nil, fmt.Errorf("tunnel server connection: %w", err)
	}
	return &ServerConn{c: c}, nil
}

// serverIdleTimeout closes server connections that carry no stream.
const serverIdleTimeout = 5 * time.Minute

// Serve reads frames until the connection ends.
func (s *ServerConn) Serve() { s.c.Serve() }

// GoAway asks the client to open no new streams; the connection closes
// once its streams are done.
func (s *ServerConn) GoAway() { s.c.GoAway() }

// Streams counts open streams.
func (s *ServerConn) Streams() int { return s.c.Streams() }

// Close closes the connection and its streams.
func (s *ServerConn) Close() { s.c.Close() }

// Done is closed when the connection is closed.
func (s *ServerConn) Done() <-chan struct{} { return s.c.Done() }
