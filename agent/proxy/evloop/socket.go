package evloop

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/agent/proxy/sock"
)

// ErrWouldBlock: a Socket's read found nothing; try again after the next
// Readable event. It is a temporary net.Error, which crypto/tls does not
// keep: a tls.Conn over the socket reads again later.
var ErrWouldBlock error = &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.EAGAIN)}

// maxPending bounds what a Socket holds for a peer that does not read:
// more than an HTTP/2 stream window (4 MiB here), so that a proxy that
// returns window only once its socket took the data never meets it.
const maxPending = 8 << 20

// ErrPendingFull: a Socket's peer does not read and maxPending bytes wait.
var ErrPendingFull = errors.New("socket write buffer full: the peer does not read")

// Socket is a non-blocking TCP socket used from a Loop's goroutine. Read
// takes what the socket holds or fails with ErrWouldBlock; Write never
// blocks: what the socket does not take now waits, in order, for the next
// Writable event (Notify writes it then).
type Socket struct {
	fd int
	// drained: the last read took less than it asked for, so the socket
	// holds nothing until the next Readable edge: no read that finds
	// nothing is made. Not once the peer closed (peerClosed): its FIN
	// may have come with the data, in the same edge, and only a read
	// after the short one reports it.
	drained    bool
	peerClosed bool
	pending    []byte
	// hs, during a TLS handshake run outside the loop, carries the
	// handshake's reads and writes (blocking, on a duplicate descriptor)
	hs     net.Conn
	closed bool
	// corked: writes wait in pending until Uncork
	corked bool
}

// NewSocket makes a Socket of fd, which it owns from now on (Close closes
// it); fd is made non-blocking.
func NewSocket(fd int) (*Socket, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("socket %d non-blocking: %w", fd, err)
	}
	return &Socket{fd: fd}, nil
}

// Take makes a Socket of a TCP connection's descriptor (a duplicate) and
// closes c: from then on the socket is the loop's, not Go's poller's.
func Take(c net.Conn) (*Socket, error) {
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("take %T: not a socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	s, err := NewSocket(fd)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

// FD is the socket's descriptor (for Loop.Add and Loop.Remove).
func (s *Socket) FD() int { return s.fd }

// Notify updates the socket for events the loop reported: it may read
// again, and what waits is written. Call it first in the socket's Handler.
func (s *Socket) Notify(ev Events) error {
	if ev&Readable != 0 {
		s.drained = false
	}
	if ev&PeerClosed != 0 {
		s.peerClosed = true
	}
	if ev&Writable != 0 {
		return s.Flush()
	}
	return nil
}

// Read reads what the socket holds: ErrWouldBlock when nothing, io.EOF when
// the peer closed its side.
func (s *Socket) Read(p []byte) (int, error) {
	if s.hs != nil {
		return s.hs.Read(p)
	}
	if s.closed {
		return 0, net.ErrClosed
	}
	if s.drained || len(p) == 0 {
		return 0, ErrWouldBlock
	}
	n, err := sock.Read(s.fd, p)
	switch {
	case err == unix.EAGAIN:
		s.drained = true
		return 0, ErrWouldBlock
	case err == unix.EINTR:
		return 0, ErrWouldBlock // the loop comes back to it: the edge was not taken
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0:
		return 0, io.EOF
	}
	s.drained = n < len(p) && !s.peerClosed
	return n, nil
}

// Write writes p, or keeps what the socket does not take now for Notify to
// write when it becomes writable. It fails only when the socket did, or
// when more than maxPending bytes would wait.
func (s *Socket) Write(p []byte) (int, error) {
	if s.hs != nil {
		return s.hs.Write(p)
	}
	if s.closed {
		return 0, net.ErrClosed
	}
	if len(s.pending) > 0 || s.corked {
		if len(s.pending)+len(p) > maxPending {
			return 0, ErrPendingFull
		}
		s.pending = append(s.pending, p...)
		return len(p), nil
	}
	n, err := writeSome(s.fd, p)
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		if len(p)-n > maxPending {
			return n, ErrPendingFull
		}
		s.pending = append(s.pending, p[n:]...)
	}
	return len(p), nil
}

// writeSome writes what fd takes of p now.
func writeSome(fd int, p []byte) (int, error) {
	for {
		n, err := sock.Write(fd, p)
		switch err {
		case nil:
			return n, nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, nil
		}
		return 0, os.NewSyscallError("write", err)
	}
}

// Flush writes what waits, as far as the socket takes it now.
func (s *Socket) Flush() error {
	for len(s.pending) > 0 && !s.closed {
		n, err := writeSome(s.fd, s.pending)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		s.pending = s.pending[:copy(s.pending, s.pending[n:])]
	}
	return nil
}

// Cork makes writes wait until Uncork, which writes them together: a
// tls.Conn's records of one flush leave in one write(2).
func (s *Socket) Cork() { s.corked = true }

// Uncork writes what waits, as far as the socket takes it now.
func (s *Socket) Uncork() error {
	s.corked = false
	return s.Flush()
}

// Pending is how many written bytes wait for the socket to take them.
func (s *Socket) Pending() int { return len(s.pending) }

// Close closes the descriptor; the caller removes it from its Loop first.
func (s *Socket) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.pending = nil
	return unix.Close(s.fd)
}

// CloseWrite half-closes the socket (after what waits is written: call it
// once Pending is 0).
func (s *Socket) CloseWrite() error {
	return unix.Shutdown(s.fd, unix.SHUT_WR)
}

// Handshake runs a TLS handshake on c (a dialed or accepted TCP connection,
// in Go's poller: the handshake blocks the calling goroutine, not a loop),
// then takes c's socket for a loop. The tls.Conn it returns reads and
// writes through the Socket: a read that finds nothing fails with
// ErrWouldBlock and may be retried at the next Readable event; writes never
// block. Use both from the loop's goroutine only. On error c is closed.
//
// Read once after adding the socket to the loop: records that arrived with
// the handshake's last ones may wait inside the tls.Conn, where no epoll
// event will announce them.
func Handshake(ctx context.Context, c net.Conn, cfg *tls.Config, client bool) (*tls.Conn, *Socket, error) {
	t := &transport{s: &Socket{fd: -1, hs: c}, local: c.LocalAddr(), remote: c.RemoteAddr()}
	var tc *tls.Conn
	if client {
		tc = tls.Client(t, cfg)
	} else {
		tc = tls.Server(t, cfg)
	}
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, nil, err
	}
	s, err := Take(c)
	if err != nil {
		return nil, nil, err
	}
	t.s = s
	return tc, s, nil
}

// transport is the net.Conn under a tls.Conn: its Socket. Deadlines mean
// nothing to a socket that never blocks (during the handshake they are the
// handshake connection's).
type transport struct {
	s             *Socket
	local, remote net.Addr
}

func (t *transport) Read(p []byte) (int, error)  { return t.s.Read(p) }
func (t *transport) Write(p []byte) (int, error) { return t.s.Write(p) }
func (t *transport) Close() error {
	if t.s.hs != nil {
		return t.s.hs.Close()
	}
	return t.s.Close()
}
func (t *transport) LocalAddr() net.Addr  { return t.local }
func (t *transport) RemoteAddr() net.Addr { return t.remote }
func (t *transport) SetDeadline(d time.Time) error {
	if t.s.hs != nil {
		return t.s.hs.SetDeadline(d)
	}
	return nil
}
func (t *transport) SetReadDeadline(d time.Time) error {
	if t.s.hs != nil {
		return t.s.hs.SetReadDeadline(d)
	}
	return nil
}
func (t *transport) SetWriteDeadline(d time.Time) error {
	if t.s.hs != nil {
		return t.s.hs.SetWriteDeadline(d)
	}
	return nil
}
