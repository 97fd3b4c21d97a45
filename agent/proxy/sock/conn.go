package sock

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Conn is a TCP connection whose Read and Write make raw system calls and
// park in Go's poller only when the socket is not ready, as net.TCPConn's
// do with ordinary ones. Deadlines, Close and the rest are the TCPConn's.
// It has no ReadFrom or WriteTo: copies go through Read and Write.
type Conn struct {
	tc *net.TCPConn
	rc syscall.RawConn

	rmu    sync.Mutex // one Read at a time uses the read state
	rp     []byte
	rn     int
	rerr   error
	readFn func(uintptr) bool

	wmu     sync.Mutex // one Write at a time uses the write state
	wp      []byte
	wn      int
	werr    error
	writeFn func(uintptr) bool
}

// Wrap returns c as a Conn when it is a *net.TCPConn, else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	sc := &Conn{tc: tc, rc: rc}
	sc.readFn = sc.read
	sc.writeFn = sc.write
	return sc
}

// read is one read attempt: false to wait until the socket is readable.
func (c *Conn) read(fd uintptr) bool {
	for {
		n, err := Read(int(fd), c.rp)
		switch err {
		case nil:
			c.rn = n
			if n == 0 {
				c.rerr = io.EOF
			}
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		c.rerr = c.opError("read", err)
		return true
	}
}

// write writes what the socket takes: false to wait until it is writable.
func (c *Conn) write(fd uintptr) bool {
	for len(c.wp) > 0 {
		n, err := Write(int(fd), c.wp)
		switch err {
		case nil:
			c.wn += n
			c.wp = c.wp[n:]
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		c.werr = c.opError("write", err)
		return true
	}
	return true
}

func (c *Conn) opError(op string, errno error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.tc.LocalAddr(), Addr: c.tc.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}

// Read reads what the socket holds, waiting for some when it holds none.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rp, c.rn, c.rerr = p, 0, nil
	err := c.rc.Read(c.readFn)
	c.rp = nil
	if err != nil {
		return 0, err // closed, or the deadline passed
	}
	return c.rn, c.rerr
}

// Write writes all of p, waiting while the socket takes none.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wp, c.wn, c.werr = p, 0, nil
	err := c.rc.Write(c.writeFn)
	c.wp = nil
	if err == nil {
		err = c.werr
	}
	return c.wn, err
}

// Close closes the connection.
func (c *Conn) Close() error { return c.tc.Close() }

// CloseWrite shuts down the sending side.
func (c *Conn) CloseWrite() error { return c.tc.CloseWrite() }

// LocalAddr is the connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.tc.LocalAddr() }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.tc.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.tc.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.tc.SetWriteDeadline(t) }

// SyscallConn is the socket's raw connection.
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// TCPConn is the connection wrapped.
func (c *Conn) TCPConn() *net.TCPConn { return c.tc }
