package h2

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weft-mesh/weft/agent/proxy/evloop"
)

// LoopConn is the client end of a tunnel connection served by an
// evloop.Loop: the same CONNECT streams, settings, flow control and GOAWAY
// rules as a client Conn, with no goroutine of its own. The loop reads its
// socket and processes whole frames as they arrive, calling each stream's
// StreamHandler; frames written while the loop serves a batch leave in one
// TLS record and one write at the batch's end (evloop.Loop.Later). Nothing
// blocks: data beyond a flow-control window, or while the socket holds
// more than lowWater unsent bytes, waits in its stream and goes when the
// window or the socket allows; StreamHandler.Drained says when a stream's
// queue emptied.
//
// Everything is called in the loop's goroutine: NewLoopConn is the only
// exception.
type LoopConn struct {
	l  *evloop.Loop
	tc *tls.Conn
	s  *evloop.Socket

	out  bytes.Buffer // frames written since the last flush
	fw   *http2.Framer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	in  []byte // plaintext read, not yet whole frames
	rd  bytes.Reader
	fr  *http2.Framer
	buf []byte

	streams     map[uint32]*LoopStream
	nextID      uint32
	sendWindow  int64
	peerInitWin int64
	peerMaxFrm  uint32
	peerStreams uint32
	recvUnacked int64
	goingAway   bool
	closed      bool
	err         error
	flushing    bool // a flush is queued with Later
	// blocked: streams with data waiting for a window or the socket
	blocked map[*LoopStream]struct{}
	onClose func(error)
}

// lowWater is how many unsent bytes (see unsent) the connection may hold
// before the streams' data waits in the streams.
const lowWater = 256 << 10

// StreamHandler is told what happens to a LoopStream, in the loop.
type StreamHandler interface {
	// Opened: the peer answered the CONNECT with 200.
	Opened(st *LoopStream)
	// Data: the peer sent p (valid during the call only). The handler
	// calls st.Consumed once it is done with the bytes: until then they
	// count against the window the peer may fill.
	Data(st *LoopStream, p []byte)
	// Drained: the data written to st is all sent (after Write queued it).
	Drained(st *LoopStream)
	// Ended: the peer ended its side (END_STREAM) while ours is open: no
	// more data comes. Closed follows once ours ends too (CloseWrite);
	// Close ends it without.
	Ended(st *LoopStream)
	// GoingAway: the peer sent GOAWAY (it drains) and took st: st goes on,
	// but the connection takes no new stream, and the peer's drain lasts
	// as long as st; a stream kept idle for a later use should close.
	GoingAway(st *LoopStream)
	// Closed: the stream is done. err is nil when the peer ended it
	// (END_STREAM); ErrRefused (wrapped, with the status) when it refused
	// the CONNECT; ErrStreamReset, ErrGoingAway or ErrConnClosed else.
	// Nothing is called for st after it.
	Closed(st *LoopStream, err error)
}

// LoopStream is one CONNECT stream of a LoopConn.
type LoopStream struct {
	c          *LoopConn
	id         uint32
	h          StreamHandler
	sendWindow int64
	queued     []byte
	waiting    bool // Write said some waits: Drained is due when it went
	endQueued  bool // CloseWrite once queued is sent
	sentEnd    bool
	gotEnd     bool
	opened     bool
	done       bool
	held       int64 // received, not yet Consumed
	unacked    int64 // Consumed, not yet returned in a WINDOW_UPDATE
}

// NewLoopConn runs the TLS handshake on nc (a dialed TCP connection; it
// blocks the calling goroutine, which must not be l's), then hands the
// connection to l: its preface and settings go out, and its frames are
// read, in the loop. onClose (may be nil) is called in the loop once the
// connection is closed. On error nc is closed.
func NewLoopConn(ctx context.Context, l *evloop.Loop, nc net.Conn, cfg *tls.Config, onClose func(error)) (*LoopConn, error) {
	tc, s, err := evloop.Handshake(ctx, nc, cfg, true)
	if err != nil {
		return nil, fmt.Errorf("tunnel handshake: %w", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" && len(cfg.NextProtos) > 0 {
		s.Close()
		return nil, fmt.Errorf("tunnel handshake: negotiated %q, not h2", p)
	}
	c := &LoopConn{
		l: l, tc: tc, s: s, streams: map[uint32]*LoopStream{}, nextID: 1,
		sendWindow: 65535, peerInitWin: 65535, peerMaxFrm: 16384, peerStreams: maxStreams,
		blocked: map[*LoopStream]struct{}{}, onClose: onClose, buf: make([]byte, 32<<10),
	}
	c.fw = http2.NewFramer(&c.out, nil)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.fr = http2.NewFramer(nil, &c.rd)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = maxHeaderList
	c.fr.SetMaxReadFrameSize(1 << 20)
	c.out.Write(clientPreface)
	c.fw.WriteSettings(
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: initialWindow},
		http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
	)
	c.fw.WriteWindowUpdate(0, connWindow-65535)
	if !l.Post(func() {
		if err := l.Add(s.FD(), c); err != nil {
			c.fail(err)
			return
		}
		c.flush()
		c.Ready(evloop.Readable) // what came with the handshake
	}) {
		s.Close()
		return nil, evloop.ErrClosed
	}
	return c, nil
}

// Ready serves the socket's events (evloop.Handler).
func (c *LoopConn) Ready(ev evloop.Events) {
	if c.closed {
		return
	}
	if err := c.s.Notify(ev); err != nil {
		c.fail(err)
		return
	}
	if ev&evloop.Writable != 0 && c.unsent() < lowWater {
		c.pumpAll()
	}
	if ev&evloop.Readable == 0 {
		return
	}
	for !c.closed {
		n, err := c.tc.Read(c.buf)
		c.in = append(c.in, c.buf[:n]...)
		if errors.Is(err, evloop.ErrWouldBlock) {
			break
		}
		if err != nil {
			c.processFrames()
			if c.goingAway && len(c.streams) == 0 {
				c.fail(ErrGoingAway) // it closed as it said it would
				return
			}
			c.fail(fmt.Errorf("%w: %v", ErrConnClosed, err))
			return
		}
	}
	c.processFrames()
}

// processFrames processes the whole frames read so far. A header block
// split over CONTINUATION frames waits until all of it is here, as the
// framer reads it in one go.
func (c *LoopConn) processFrames() {
	end, open := 0, false
	for off := 0; len(c.in)-off >= 9; {
		n := int(c.in[off])<<16 | int(c.in[off+1])<<8 | int(c.in[off+2])
		if len(c.in)-off < 9+n {
			break
		}
		typ, flags := http2.FrameType(c.in[off+3]), http2.Flags(c.in[off+4])
		switch typ {
		case http2.FrameHeaders:
			open = !flags.Has(http2.FlagHeadersEndHeaders)
		case http2.FrameContinuation:
			open = !flags.Has(http2.FlagContinuationEndHeaders)
		}
		if n > 1<<20 { // over our SETTINGS_MAX_FRAME_SIZE: its header is enough for the framer to say so
			end = off + 9
			break
		}
		off += 9 + n
		if !open {
			end = off
		}
	}
	if end == 0 {
		return
	}
	c.rd.Reset(c.in[:end])
	for c.rd.Len() > 0 && !c.closed {
		f, err := c.fr.ReadFrame()
		if err != nil {
			// whole frames only: a read that fails is the peer's fault
			switch r := readFailureOf(err); {
			case r.stream != 0:
				c.resetStream(r.stream, r.code, r.err)
				continue
			case r.goAway:
				c.connError(r.code, r.err)
			default:
				c.fail(fmt.Errorf("%w: %v", ErrProtocol, err))
			}
			return
		}
		if err := c.process(f); err != nil {
			c.connError(errCode(err), err)
			return
		}
	}
	c.in = c.in[:copy(c.in, c.in[end:])]
}

func (c *LoopConn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := f.ForeachSetting(c.onSetting); err != nil {
			return err
		}
		c.fw.WriteSettingsAck()
		c.queueFlush()
		c.pumpAll()
		return nil
	case *http2.PingFrame:
		if !f.IsAck() {
			c.fw.WritePing(true, f.Data)
			c.queueFlush()
		}
		return nil
	case *http2.WindowUpdateFrame:
		if f.StreamID == 0 {
			c.sendWindow += int64(f.Increment)
			c.pumpAll()
		} else if st, ok := c.streams[f.StreamID]; ok {
			st.sendWindow += int64(f.Increment)
			c.pump(st)
		}
		return nil
	case *http2.RSTStreamFrame:
		if st, ok := c.streams[f.StreamID]; ok {
			c.end(st, fmt.Errorf("%w: %v", ErrStreamReset, f.ErrCode))
		}
		return nil
	case *http2.GoAwayFrame:
		c.goingAway = true
		for id, st := range c.streams {
			if id > f.LastStreamID { // never processed: safe to try elsewhere
				c.end(st, fmt.Errorf("%w: the peer did not take the stream", ErrGoingAway))
			} else if !st.done {
				st.h.GoingAway(st)
			}
		}
		if len(c.streams) == 0 {
			c.fail(ErrGoingAway)
		}
		return nil
	case *http2.PushPromiseFrame:
		return fmt.Errorf("%w: push promise", ErrProtocol)
	default: // PRIORITY and unknown frames are ignored
		return nil
	}
}

func (c *LoopConn) onSetting(s http2.Setting) error {
	if err := s.Valid(); err != nil {
		return err
	}
	switch s.ID {
	case http2.SettingInitialWindowSize:
		delta := int64(s.Val) - c.peerInitWin
		c.peerInitWin = int64(s.Val)
		for _, st := range c.streams {
			st.sendWindow += delta
		}
	case http2.SettingMaxFrameSize:
		c.peerMaxFrm = s.Val
	case http2.SettingMaxConcurrentStreams:
		c.peerStreams = s.Val
	}
	return nil
}

func (c *LoopConn) onData(f *http2.DataFrame) error {
	n := int64(f.Length)
	st, ok := c.streams[f.StreamID]
	if !ok || st.gotEnd {
		c.returnConnWindow(n) // a stream we forgot: its data is dropped
		return nil
	}
	data := f.Data()
	if st.held+int64(len(data)) > initialWindow {
		return ErrFlowControl
	}
	st.held += int64(len(data))
	// padding counts against the windows but reaches nobody
	if pad := n - int64(len(data)); pad > 0 {
		c.returnConnWindow(pad)
		st.unacked += pad
	}
	if f.StreamEnded() {
		st.gotEnd = true
	}
	if len(data) > 0 {
		st.h.Data(st, data)
	}
	if f.StreamEnded() {
		c.peerEnded(st)
	}
	return nil
}

// peerEnded ends st once both sides ended it, else tells its handler
// that the peer's side ended.
func (c *LoopConn) peerEnded(st *LoopStream) {
	if st.done {
		return
	}
	c.maybeForget(st)
	if !st.done {
		st.h.Ended(st)
	}
}

func (c *LoopConn) onHeaders(f *http2.MetaHeadersFrame) error {
	st, ok := c.streams[f.StreamID]
	if !ok {
		return nil
	}
	if st.opened { // trailers: CONNECT streams have none to deliver
		if f.StreamEnded() {
			st.gotEnd = true
			c.peerEnded(st)
		}
		return nil
	}
	code, err := strconv.Atoi(f.PseudoValue("status"))
	if err != nil {
		return fmt.Errorf("%w: bad :status", ErrProtocol)
	}
	if code >= 100 && code < 200 {
		return nil
	}
	if code != http.StatusOK {
		c.resetStream(st.id, http2.ErrCodeCancel, fmt.Errorf("%w: status %d", ErrRefused, code))
		return nil
	}
	st.opened = true
	st.h.Opened(st)
	if f.StreamEnded() && !st.done {
		st.gotEnd = true
		c.peerEnded(st)
	}
	if !st.done {
		c.pump(st) // what was written before the answer goes now
	}
	return nil
}

// Usable reports whether the connection can take another stream.
func (c *LoopConn) Usable() bool {
	return !c.closed && !c.goingAway && uint32(len(c.streams)) < c.peerStreams && c.nextID < 1<<31-1
}

// Streams counts open streams.
func (c *LoopConn) Streams() int { return len(c.streams) }

// Open starts a CONNECT stream to authority; h's fields go with it. The
// handler learns of the answer (Opened, or Closed with ErrRefused). Data
// may be written at once: it waits in the stream until the peer opened it
// (200), so a refused stream carried none of it, as with Conn.Open.
func (c *LoopConn) Open(authority string, h http.Header, sh StreamHandler) (*LoopStream, error) {
	if !c.Usable() {
		if c.closed {
			return nil, fmt.Errorf("%w: %v", ErrConnClosed, c.err)
		}
		return nil, ErrGoingAway
	}
	st := &LoopStream{c: c, id: c.nextID, h: sh, sendWindow: c.peerInitWin}
	c.nextID += 2
	c.streams[st.id] = st
	c.hbuf.Reset()
	c.henc.WriteField(hpack.HeaderField{Name: ":method", Value: http.MethodConnect})
	c.henc.WriteField(hpack.HeaderField{Name: ":authority", Value: authority})
	for k, vs := range h {
		for _, v := range vs {
			c.henc.WriteField(hpack.HeaderField{Name: lower(k), Value: v})
		}
	}
	c.fw.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
	c.queueFlush()
	return st, nil
}

// ID is the stream's id.
func (st *LoopStream) ID() uint32 { return st.id }

// Write queues p to be sent and sends what the windows and the socket
// allow now; false when some of it waits (Drained follows).
func (st *LoopStream) Write(p []byte) (bool, error) {
	if st.done {
		return false, ErrStreamClosed
	}
	if st.sentEnd || st.endQueued {
		return false, ErrStreamClosed
	}
	st.queued = append(st.queued, p...)
	if !st.c.pump(st) {
		st.waiting = true
		return false, nil
	}
	return true, nil
}

// Buffered is how many written bytes wait to be sent.
func (st *LoopStream) Buffered() int { return len(st.queued) }

// CloseWrite ends the sending direction (END_STREAM) after what is queued.
func (st *LoopStream) CloseWrite() {
	if st.done || st.sentEnd || st.endQueued {
		return
	}
	st.endQueued = true
	st.c.pump(st)
}

// Consumed returns n bytes of received data to the peer's windows.
func (st *LoopStream) Consumed(n int) {
	if n <= 0 {
		return
	}
	c := st.c
	st.held -= int64(n)
	c.returnConnWindow(int64(n))
	if st.done || st.gotEnd {
		return
	}
	st.unacked += int64(n)
	if st.unacked >= initialWindow/4 {
		c.fw.WriteWindowUpdate(st.id, uint32(st.unacked))
		st.unacked = 0
		c.queueFlush()
	}
}

// Close ends the stream at once: a reset when the peer has not ended its
// side, else END_STREAM. Closed is not called for it.
func (st *LoopStream) Close() {
	if st.done {
		return
	}
	c := st.c
	if st.gotEnd { // only our side is open: end it, dropping what waits
		st.queued = nil
		if !st.sentEnd {
			c.fw.WriteData(st.id, true, nil)
			st.sentEnd = true
			c.queueFlush()
		}
		c.forget(st)
		return
	}
	st.h = noHandler{}
	c.resetStream(st.id, http2.ErrCodeCancel, ErrStreamClosed)
}

type noHandler struct{}

func (noHandler) Opened(*LoopStream)        {}
func (noHandler) Data(*LoopStream, []byte)  {}
func (noHandler) Drained(*LoopStream)       {}
func (noHandler) Closed(*LoopStream, error) {}
func (noHandler) Ended(*LoopStream)         {}
func (noHandler) GoingAway(*LoopStream)     {}

// pump sends what st may send now; true when nothing waits.
func (c *LoopConn) pump(st *LoopStream) bool {
	if c.closed || st.done {
		return false
	}
	if !st.opened { // Opened pumps it
		return len(st.queued) == 0 && !st.endQueued
	}
	for len(st.queued) > 0 {
		if st.sendWindow <= 0 || c.sendWindow <= 0 || c.unsent() >= lowWater {
			c.blocked[st] = struct{}{}
			return false
		}
		n := min(int64(len(st.queued)), st.sendWindow, c.sendWindow, int64(c.peerMaxFrm), maxFrame)
		c.fw.WriteData(st.id, false, st.queued[:n])
		st.sendWindow -= n
		c.sendWindow -= n
		st.queued = st.queued[n:]
		c.queueFlush()
	}
	st.queued = st.queued[:0:0] // drop the backing array: it may be large
	delete(c.blocked, st)
	if st.endQueued && !st.sentEnd {
		c.fw.WriteData(st.id, true, nil)
		st.sentEnd = true
		c.queueFlush()
		c.maybeForget(st)
	}
	if st.waiting && !st.done {
		st.waiting = false
		st.h.Drained(st)
	}
	return true
}

// unsent is how many bytes of frames wait: written since the last flush,
// or flushed and not yet taken by the socket.
func (c *LoopConn) unsent() int { return c.out.Len() + c.s.Pending() }

// pumpAll sends what the blocked streams may send now.
func (c *LoopConn) pumpAll() {
	for st := range c.blocked {
		c.pump(st)
	}
}

func (c *LoopConn) returnConnWindow(n int64) {
	c.recvUnacked += n
	if c.recvUnacked >= connWindow/4 {
		c.fw.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvUnacked = 0
		c.queueFlush()
	}
}

// maybeForget ends a stream once both sides ended it.
func (c *LoopConn) maybeForget(st *LoopStream) {
	if st.sentEnd && st.gotEnd {
		c.end(st, nil)
	}
}

// end forgets st and tells its handler.
func (c *LoopConn) end(st *LoopStream, err error) {
	if st.done {
		return
	}
	c.forget(st)
	st.h.Closed(st, err)
}

func (c *LoopConn) forget(st *LoopStream) {
	st.done = true
	delete(c.streams, st.id)
	delete(c.blocked, st)
	if st.held > 0 { // what it held returns to the connection
		c.returnConnWindow(st.held)
		st.held = 0
	}
	if c.goingAway && len(c.streams) == 0 {
		c.Later(func() { c.fail(ErrGoingAway) })
	}
}

// Later is the loop's Later, for the connection's own deferred work.
func (c *LoopConn) Later(fn func()) { c.l.Later(fn) }

func (c *LoopConn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.fw.WriteRSTStream(id, code)
	c.queueFlush()
	if st, ok := c.streams[id]; ok {
		c.end(st, err)
	}
}

// GoAway tells the peer no new stream comes; the connection closes once
// its streams are done.
func (c *LoopConn) GoAway() {
	if c.closed {
		return
	}
	c.goingAway = true
	c.fw.WriteGoAway(0, http2.ErrCodeNo, nil)
	c.queueFlush()
	if len(c.streams) == 0 {
		c.Later(func() { c.fail(ErrGoingAway) })
	}
}

// Close closes the connection and its streams at once.
func (c *LoopConn) Close() { c.fail(ErrConnClosed) }

func (c *LoopConn) connError(code http2.ErrCode, err error) {
	c.fw.WriteGoAway(0, code, nil)
	c.flush()
	c.fail(err)
}

// queueFlush has the frames written so far leave at the batch's end.
func (c *LoopConn) queueFlush() {
	if !c.flushing && !c.closed {
		c.flushing = true
		c.l.Later(c.flush)
	}
}

// flush sends the frames written so far, in one TLS record where they fit.
func (c *LoopConn) flush() {
	c.flushing = false
	if c.closed || c.out.Len() == 0 {
		return
	}
	c.s.Cork() // one write for all the records
	_, err := c.tc.Write(c.out.Bytes())
	if ferr := c.s.Uncork(); err == nil {
		err = ferr
	}
	c.out.Reset()
	if err != nil {
		c.fail(fmt.Errorf("%w: %v", ErrConnClosed, err))
		return
	}
	// streams held back by what waited to be flushed go on now: when the
	// socket took it all, no Writable event will come to say so
	if len(c.blocked) > 0 && c.unsent() < lowWater {
		c.pumpAll()
	}
}

// fail closes the connection and ends every stream with err.
func (c *LoopConn) fail(err error) {
	if c.closed {
		return
	}
	c.closed, c.err = true, err
	c.l.Remove(c.s.FD())
	c.s.Close()
	streams := c.streams
	c.streams = map[uint32]*LoopStream{}
	for _, st := range streams {
		if !st.done {
			st.done = true
			st.h.Closed(st, err)
		}
	}
	if c.onClose != nil {
		c.onClose(err)
	}
}

// Err is why the connection closed (nil while open).
func (c *LoopConn) Err() error { return c.err }
