package h2

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/weft-mesh/weft/agent/proxy/sock"
)

// Delivery straight from the connection's reader.
//
// A stream spliced to a socket (the destination node's inbound: stream ->
// pod) would otherwise take two goroutines per DATA frame: the connection's
// reader appends the data to the stream's buffer and wakes the stream's
// reader, which copies it to the socket. On the destination proxy that
// wake-up is a scheduler hand-off per request. While WriteTo runs with a
// socket, the connection's reader instead writes each frame's data to the
// socket itself, with a non-blocking write: what the socket takes now is
// done; the rest is buffered as before and WriteTo writes it, blocking, in
// its own goroutine. Data stays in order: the reader delivers directly only
// when nothing is buffered and WriteTo is not writing.

// sink is the non-blocking side of WriteTo's destination.
type sink struct {
	// try writes what the socket takes without blocking (0, nil: none).
	try func(p []byte) (int, error)
	// busy: WriteTo is writing buffered data outside rmu.
	busy bool
	// broken: try failed; the rest goes through WriteTo's blocking writes,
	// which report the error.
	broken bool
	// n counts the bytes try wrote.
	n int64
}

// deliver writes what it can of p to the stream's sink without blocking,
// and returns how much. Called with rmu held, by the connection's reader.
func (s *Stream) deliver(p []byte) int {
	k := &s.sink
	if k.try == nil || k.busy || k.broken || s.held || s.roff < len(s.rbuf) || len(p) == 0 {
		return 0
	}
	n, err := k.try(p)
	if err != nil {
		k.broken = true
	}
	n = max(n, 0)
	k.n += int64(n)
	return n
}

// consumeLocked counts n bytes as taken by the stream's consumer and
// returns the stream-window increment now due (zero if none). rmu held.
func (s *Stream) consumeLocked(n int) int64 {
	s.unacked += int64(n)
	if s.unacked >= initialWindow/4 && !s.rEOF {
		inc := s.unacked
		s.unacked = 0
		return inc
	}
	return 0
}

// takeLocked says how many of n bytes just read from rbuf go back to the
// connection's window: those abort did not return already. rmu held.
func (s *Stream) takeLocked(n int) int {
	k := min(n, s.credited)
	s.credited -= k
	return n - k
}

// acknowledge returns n consumed bytes to the connection window and sends
// the stream-window increment inc, if any. rmu not held.
func (s *Stream) acknowledge(n int, inc int64) {
	if inc > 0 {
		s.c.wmu.Lock()
		s.c.fr.WriteWindowUpdate(s.id, uint32(inc))
		s.c.bw.Flush()
		s.c.wmu.Unlock()
	}
	if n > 0 {
		s.c.returnConnWindow(int64(n))
	}
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// WriteTo copies the stream's data to w until the peer ends the stream
// (then it returns nil, as io.Copy expects) or either side fails. When w is
// a TCP socket itself (a net.TCPConn or a sock.Conn, not a wrapper whose
// Write may do more than write), data arriving meanwhile is written to it
// straight from the connection's reader (see deliver).
func (s *Stream) WriteTo(w io.Writer) (int64, error) {
	var written int64
	s.rmu.Lock()
	if rc := socketOf(w); rc != nil {
		s.sink = sink{try: tryWrite(rc)}
		defer func() {
			s.rmu.Lock()
			s.sink = sink{}
			s.rmu.Unlock()
		}()
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	for {
		for s.waitLocked() {
			s.rcond.Wait()
		}
		if end := s.readableLocked(); s.roff < end {
			n := copy(buf, s.rbuf[s.roff:end])
			s.roff += n
			inc := s.consumeLocked(n)
			back := s.takeLocked(n)
			s.sink.busy = true
			s.rmu.Unlock()
			s.acknowledge(back, inc)
			m, err := w.Write(buf[:n])
			written += int64(m)
			s.rmu.Lock()
			s.sink.busy = false
			if err == nil && m < n {
				err = io.ErrShortWrite
			}
			if err != nil {
				written += s.sink.n
				s.rmu.Unlock()
				return written, err
			}
			continue
		}
		written += s.sink.n
		err := s.rErr
		if err == nil && s.detached {
			err = ErrDetached
		}
		s.rmu.Unlock()
		if err == nil || errors.Is(err, io.EOF) {
			return written, nil
		}
		return written, err
	}
}

// socketOf is the socket w writes to when w is a TCP connection (plain,
// or a sock.Conn), else nil.
func socketOf(w io.Writer) syscall.RawConn {
	var rc syscall.RawConn
	var err error
	switch c := w.(type) {
	case *net.TCPConn:
		rc, err = c.SyscallConn()
	case *sock.Conn:
		rc, err = c.SyscallConn()
	}
	if err != nil {
		return nil
	}
	return rc
}

// tryWrite is a non-blocking write to a socket: whatever write(2) takes now.
func tryWrite(rc syscall.RawConn) func([]byte) (int, error) {
	return func(p []byte) (int, error) {
		var n int
		var werr error
		err := rc.Write(func(fd uintptr) bool {
			n, werr = sock.Write(int(fd), p)
			return true // never wait for the socket: the rest is buffered
		})
		if err != nil {
			return 0, err
		}
		if werr == syscall.EAGAIN || werr == syscall.EINTR {
			return 0, nil
		}
		return max(n, 0), werr
	}
}
