package h2c

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// stream is one HTTP/2 stream, either end.
type stream struct {
	c  *conn
	id uint32

	// receive side, guarded by rmu
	rmu        sync.Mutex
	rcond      *sync.Cond
	rbuf       []byte
	roff       int
	rEOF       bool
	rErr       error
	gotHeaders bool  // the peer's (request or final response) header block arrived
	recvWindow int64 // what the peer may still send
	unacked    int64 // consumed, not yet returned to the peer
	declLen    int64 // the peer's content-length, -1 when none
	gotLen     int64
	trailer    map[string][]string // the peer's trailers, at EOF

	// send side: window and reset guarded by c.mu, sentEnd by c.wmu
	sendWindow int64
	reset      bool
	sentEnd    bool

	// onAbort, when set, runs once when the stream fails (server: cancel
	// the request's context; client: wake RoundTrip).
	onAbort func()
	aborted atomic.Bool
	// client is the request of a client stream
	client *clientStream
}

// abort fails the stream both ways with err: reads fail once the data
// received is read, writes fail, onAbort runs.
func (s *stream) abort(err error) { s.fail(err, false) }

// abortFromPeer fails the stream for a reset from the peer or the end of
// the connection. What the peer had already ended stays readable to its
// EOF: RFC 9113 §8.1 lets a server that sent its whole response reset the
// stream with NO_ERROR to stop a request body it does not need, and the
// response must not be discarded for it.
func (s *stream) abortFromPeer(err error) { s.fail(err, true) }

func (s *stream) fail(err error, keepEnded bool) {
	s.rmu.Lock()
	if s.rErr == nil && !(keepEnded && s.rEOF) {
		s.rErr = err
	}
	s.rcond.Broadcast()
	s.rmu.Unlock()
	if s.aborted.CompareAndSwap(false, true) && s.onAbort != nil {
		s.onAbort()
	}
}

// read reads the stream's data, returning window as it is consumed.
func (s *stream) read(p []byte) (int, error) {
	s.rmu.Lock()
	for s.roff == len(s.rbuf) && !s.rEOF && s.rErr == nil {
		s.rcond.Wait()
	}
	if s.roff < len(s.rbuf) {
		n := copy(p, s.rbuf[s.roff:])
		s.roff += n
		s.rmu.Unlock()
		s.returnWindow(int64(n))
		return n, nil
	}
	err := s.rErr
	if err == nil {
		err = io.EOF
		// ended and read: nothing appends to the buffer any more
		s.recycleLocked()
	}
	s.rmu.Unlock()
	return 0, err
}

// rbufPool holds receive buffers: a stream takes one with its first DATA
// and gives it back once its body was read to the end or discarded.
var rbufPool = sync.Pool{New: func() any { b := make([]byte, 0, maxWriteFrame); return &b }}

func (s *stream) recycleLocked() {
	if s.rbuf != nil && cap(s.rbuf) <= 4*maxWriteFrame {
		b := s.rbuf[:0]
		rbufPool.Put(&b)
	}
	s.rbuf, s.roff = nil, 0
}

// discard drops what is buffered and stops receiving (a body closed before
// its end): the buffered bytes' window goes back to the connection.
func (s *stream) discard() {
	s.rmu.Lock()
	n := len(s.rbuf) - s.roff
	if s.rErr == nil {
		s.rErr = ErrStreamClosed
	}
	s.recycleLocked()
	s.rmu.Unlock()
	if n > 0 {
		s.c.returnConnWindow(int64(n))
	}
}

// complete reports whether the peer ended the stream, all its data
// buffered: reading it never blocks.
func (s *stream) complete() bool {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return s.rEOF || s.rErr != nil
}

// returnWindow gives n consumed bytes back to the stream and connection
// windows: WINDOW_UPDATEs leave once half a stream window (a quarter of the
// connection's) is owed, together.
func (s *stream) returnWindow(n int64) {
	c := s.c
	s.rmu.Lock()
	s.unacked += n
	var sinc int64
	if s.unacked >= int64(c.cfg.streamWindow)/2 && !s.rEOF && s.rErr == nil {
		sinc, s.unacked = s.unacked, 0
		s.recvWindow += sinc
	}
	s.rmu.Unlock()
	cinc := c.connWindowInc(n)
	if sinc == 0 && cinc == 0 {
		return
	}
	c.lockW()
	var err error
	if sinc > 0 {
		err = c.fr.WriteWindowUpdate(s.id, uint32(sinc))
	}
	if cinc > 0 && err == nil {
		err = c.fr.WriteWindowUpdate(0, uint32(cinc))
	}
	c.unlockW(err)
}

// reserve takes up to n bytes of send window (at least one), waiting for
// the peer to open it.
func (s *stream) reserve(n int) (int, error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && !s.reset && (s.sendWindow <= 0 || c.sendWindow <= 0) {
		c.cond.Wait()
	}
	if c.closed {
		return 0, fmt.Errorf("%w: %w", ErrConnClosed, c.closeErr)
	}
	if s.reset {
		return 0, ErrStreamReset
	}
	m := min(int64(n), s.sendWindow, c.sendWindow)
	s.sendWindow -= m
	c.sendWindow -= m
	return int(m), nil
}

// fieldSource encodes a header block (headers, or trailers) under wmu.
type fieldSource interface {
	encodeFields(e *hpack.Encoder, trailers bool)
}

// send writes, in order and in as few flushes as the windows allow: the
// header block of src when headers, data, then src's trailers when
// trailers; end puts END_STREAM on the last frame.
func (s *stream) send(src fieldSource, headers bool, data []byte, trailers, end bool) error {
	c := s.c
	first := true
	for {
		n := 0
		if len(data) > 0 {
			var err error
			if n, err = s.reserve(len(data)); err != nil {
				return err
			}
		}
		last := n == len(data)
		c.lockW()
		if s.sentEnd {
			c.unlockW(nil)
			return ErrStreamClosed
		}
		var err error
		if headers && first {
			c.hbuf.Reset()
			src.encodeFields(c.henc, false)
			err = c.writeHeaderBlock(s.id, end && len(data) == 0 && !trailers)
		}
		c.mu.Lock()
		max := int(min(c.peerMaxFrm, maxWriteFrame))
		c.mu.Unlock()
		chunk := data[:n]
		for err == nil && len(chunk) > 0 {
			m := min(len(chunk), max)
			err = c.fr.WriteData(s.id, last && end && !trailers && m == len(chunk), chunk[:m])
			chunk = chunk[m:]
		}
		if err == nil && last && end && !trailers && len(data) == 0 && !(headers && first) {
			err = c.fr.WriteData(s.id, true, nil)
		}
		if err == nil && last && trailers {
			c.hbuf.Reset()
			src.encodeFields(c.henc, true)
			err = c.writeHeaderBlock(s.id, true)
		}
		if err == nil && last && end {
			s.sentEnd = true
		}
		if err := c.unlockW(err); err != nil {
			return err
		}
		data = data[n:]
		first = false
		if last {
			break
		}
	}
	if end {
		c.maybeForget(s)
	}
	return nil
}

// endOfHeaders records trailers or an END_STREAM on a HEADERS frame.
func (s *stream) endOfHeaders(trailer map[string][]string) {
	s.rmu.Lock()
	if s.declLen >= 0 && s.gotLen != s.declLen {
		s.rmu.Unlock()
		s.c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: body length differs from content-length", ErrProtocol))
		return
	}
	s.trailer = trailer
	s.rEOF = true
	s.rcond.Broadcast()
	s.rmu.Unlock()
	s.onEOF()
}

// onEOF runs once the peer ended the stream.
func (s *stream) onEOF() {
	s.c.maybeForget(s)
}
