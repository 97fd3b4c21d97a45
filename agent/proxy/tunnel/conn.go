package tunnel

import (
	"errors"
	"net"
	"net/netip"
	"time"
)

// Conn is one CONNECT stream used as a net.Conn. CloseWrite half-closes it
// (END_STREAM); Close ends both directions. Deadlines are not supported on a
// stream: the Set*Deadline methods return ErrNoDeadline, callers bound it
// with contexts or by closing it.
type Conn struct {
	s      *Stream
	target Target
}

// ErrNoDeadline: deadlines are not supported on tunnel streams.
var ErrNoDeadline = errors.New("tunnel stream has no deadlines")

func (c *Conn) Read(p []byte) (int, error)  { return c.s.Read(p) }
func (c *Conn) Write(p []byte) (int, error) { return c.s.Write(p) }

// CloseWrite ends the sending direction; the peer reads EOF.
func (c *Conn) CloseWrite() error { return c.s.CloseWrite() }

// Close ends the stream in both directions.
func (c *Conn) Close() error { return c.s.Close() }

// LocalAddr is unspecified: a stream has no local socket address.
func (c *Conn) LocalAddr() net.Addr { return streamAddr{} }

// RemoteAddr is the destination pod address.
func (c *Conn) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(c.target.Addr) }

// GoingAway is closed when the destination node's proxy announced it is
// draining (GOAWAY on the tunnel connection), or the tunnel connection
// closed: a connection over this stream should take no new request and
// close once idle.
func (c *Conn) GoingAway() <-chan struct{} { return c.s.ConnGoingAway() }

// Target reports what the stream connects to.
func (c *Conn) Target() Target { return c.target }

func (c *Conn) SetDeadline(time.Time) error      { return ErrNoDeadline }
func (c *Conn) SetReadDeadline(time.Time) error  { return ErrNoDeadline }
func (c *Conn) SetWriteDeadline(time.Time) error { return ErrNoDeadline }

type streamAddr struct{}

func (streamAddr) Network() string { return "tunnel" }
func (streamAddr) String() string  { return netip.AddrPort{}.String() }
