// Package h2c is the node proxy's HTTP/2 for requests (RFC 9113): a server
// for captured cleartext HTTP/2 clients (h2c and gRPC) and a client for the
// upstream HTTP/2 connections, each carried by one CONNECT stream of the
// mTLS tunnel.
//
// It replaces net/http's HTTP/2 server and Transport on the outbound, which
// moved every request through several goroutines: the server's frame
// reader, its connection loop, a goroutine per write flush, the handler; the
// client's doRequest goroutine per request and its read loop. Here a
// connection's one reader goroutine parses frames and hands data to the
// stream that reads it; everything else is written from the goroutine that
// has it to write (the handler, the caller of RoundTrip), under one mutex,
// and a burst of writers leaves in one flush (one write(2), one TLS record
// on the tunnel). A request costs one hand-off to a handler goroutine
// (reused: see workers.go) and none on the client when its body is already
// complete; a streaming request body is copied by a goroutine of its own.
//
// The server hands each request stream to an http.Handler as *http.Request
// and a ResponseWriter that is an http.Flusher and sends trailers (declared
// with the Trailer header, or http.TrailerPrefix): gRPC works unchanged.
// The client (Client, ClientConn) is an http.RoundTripper whose responses'
// Body reads straight from the stream's buffer and whose Trailer is filled
// at EOF; a request's context ending resets the stream.
//
// Frames are parsed and written by golang.org/x/net/http2's Framer; this
// package keeps the connection and stream state, flow control both ways,
// SETTINGS, PING, GOAWAY, RST_STREAM, concurrency and header list limits,
// and the HTTP/2 message rules (pseudo-headers, connection-specific fields,
// content-length). Not supported: server push (disabled), priorities
// (ignored), 1xx responses other than skipped, HTTP/1.1 Upgrade (absent in
// HTTP/2).
package h2c

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// defaultStreamWindow and defaultConnWindow are the receive windows a
	// connection advertises unless configured.
	defaultStreamWindow = 1 << 20
	defaultConnWindow   = 4 << 20
	// defaultMaxStreams is how many concurrent streams a server accepts.
	defaultMaxStreams = 1000
	// defaultMaxHeaderList bounds a peer's header block (RFC 9113 6.5.2).
	defaultMaxHeaderList = 16 << 10
	// maxReadFrame is the largest frame we accept (SETTINGS_MAX_FRAME_SIZE).
	maxReadFrame = 1 << 20
	// maxWriteFrame caps the DATA frames we send (the peer's limit applies
	// when smaller).
	maxWriteFrame = 16 << 10
	// maxWindow is the largest flow-control window (2^31-1).
	maxWindow = 1<<31 - 1
)

// Errors of connections and streams; the reasons are wrapped after them.
var (
	// ErrConnClosed: the connection is closed.
	ErrConnClosed = errors.New("http2 connection closed")
	// ErrGoingAway: the connection takes no new stream (GOAWAY sent or
	// received, or idle). A request that fails with it was not processed
	// and can be retried on another connection.
	ErrGoingAway = errors.New("http2 connection going away")
	// ErrStreamReset: the stream was reset (RST_STREAM either way).
	ErrStreamReset = errors.New("http2 stream reset")
	// ErrStreamClosed: the stream was closed by this side.
	ErrStreamClosed = errors.New("http2 stream closed")
	// ErrProtocol: the peer broke the protocol.
	ErrProtocol = errors.New("http2 protocol error")
	// ErrFlowControl: the peer sent more than its flow-control window.
	ErrFlowControl = errors.New("peer exceeded the flow-control window")
)

var clientPreface = []byte(http2.ClientPreface)

// connConfig is what both ends configure.
type connConfig struct {
	streamWindow  int32
	connWindow    int32
	maxStreams    uint32 // server: SETTINGS_MAX_CONCURRENT_STREAMS
	maxHeaderList uint32
	idleTimeout   time.Duration
}

// conn is one HTTP/2 connection, either end.
type conn struct {
	nc     net.Conn
	server bool
	cfg    connConfig

	wmu sync.Mutex // serialises frame writes and the hpack encoder
	// writers counts the writers holding or queued for wmu (see lockW):
	// the last one of a burst flushes for all of them.
	writers atomic.Int32
	bw      *bufio.Writer
	fr      *http2.Framer
	henc    *hpack.Encoder
	hbuf    bytes.Buffer

	mu             sync.Mutex
	cond           *sync.Cond // send-window waits
	streams        map[uint32]*stream
	nextID         uint32 // client: next stream id
	lastPeerID     uint32 // server: highest stream id the peer opened
	lastTaken      uint32 // server: highest stream id handed to a handler
	goAwayID       uint32 // client: the peer's GOAWAY last stream id
	sendWindow     int64  // connection send window
	peerInitWin    int64
	peerMaxFrm     uint32
	peerMaxStreams uint32
	recvWindow     int64 // connection: what the peer may still send
	recvUnacked    int64 // connection bytes consumed, not yet returned
	goingAway      bool
	lingering      bool // server: gone away, waiting for the client to close
	closed         bool
	closeErr       error
	idleTimer      *time.Timer
	done           chan struct{}

	// server side
	srv *ServerConn
}

func newConn(nc net.Conn, r io.Reader, server bool, cfg connConfig) *conn {
	c := &conn{
		nc: nc, server: server, cfg: cfg,
		bw:      bufio.NewWriterSize(nc, 32<<10),
		streams: make(map[uint32]*stream), sendWindow: 65535, peerInitWin: 65535, peerMaxFrm: 16384,
		peerMaxStreams: maxWindow, recvWindow: 65535, done: make(chan struct{}),
	}
	if r == nil {
		r = nc
	}
	c.cond = sync.NewCond(&c.mu)
	c.fr = http2.NewFramer(c.bw, r)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = cfg.maxHeaderList
	c.fr.SetMaxReadFrameSize(maxReadFrame)
	c.henc = hpack.NewEncoder(&c.hbuf)
	c.nextID = 1
	return c
}

// lockW takes the write lock for frame writes that unlockW will flush.
// Under load many streams write at once; a writer that sees others queued
// behind it leaves the flush to the last of them, so a burst of frames
// leaves in one write(2) instead of one each.
func (c *conn) lockW() {
	c.writers.Add(1)
	c.wmu.Lock()
}

// unlockW flushes unless another writer is queued, and releases the lock.
// A failed write fails the connection.
func (c *conn) unlockW(err error) error {
	if c.writers.Add(-1) == 0 && err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("write: %w", err))
	}
	return err
}

// start writes our preface (client) and settings.
func (c *conn) start() error {
	c.lockW()
	var err error
	if !c.server {
		_, err = c.bw.Write(clientPreface)
	}
	if err == nil {
		settings := []http2.Setting{
			{ID: http2.SettingInitialWindowSize, Val: uint32(c.cfg.streamWindow)},
			{ID: http2.SettingMaxFrameSize, Val: maxReadFrame},
			{ID: http2.SettingMaxHeaderListSize, Val: c.cfg.maxHeaderList},
			{ID: http2.SettingEnablePush, Val: 0},
		}
		if c.server {
			settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.maxStreams})
		}
		err = c.fr.WriteSettings(settings...)
	}
	if err == nil && c.cfg.connWindow > 65535 {
		c.mu.Lock()
		c.recvWindow = int64(c.cfg.connWindow)
		c.mu.Unlock()
		err = c.fr.WriteWindowUpdate(0, uint32(c.cfg.connWindow-65535))
	}
	return c.unlockW(err)
}

// fail closes the connection and every stream with err.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closeErr = err
	streams := make([]*stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	clear(c.streams)
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	for _, s := range streams {
		s.abortFromPeer(fmt.Errorf("%w: %w", ErrConnClosed, err))
	}
	close(c.done)
}

// connError sends GOAWAY with code and closes.
func (c *conn) connError(code http2.ErrCode, err error) {
	c.mu.Lock()
	last := c.lastPeerID
	c.mu.Unlock()
	c.lockW()
	c.fr.WriteGoAway(last, code, nil)
	c.unlockW(nil)
	c.fail(err)
}

// serve reads frames until the connection ends.
func (c *conn) serve() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				c.streamError(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			switch {
			case errors.As(err, &ce):
				c.connError(http2.ErrCode(ce), fmt.Errorf("%w: %v", ErrProtocol, err))
			case errors.Is(err, http2.ErrFrameTooLarge):
				c.connError(http2.ErrCodeFrameSize, fmt.Errorf("%w: %v", ErrProtocol, err))
			default:
				c.fail(err)
			}
			return
		}
		if err := c.process(f); err != nil {
			c.connError(errCode(err), err)
			return
		}
	}
}

// streamError answers a stream the framer found malformed. A new stream's
// id still counts as used.
func (c *conn) streamError(id uint32, code http2.ErrCode) {
	if c.server {
		c.mu.Lock()
		if id%2 == 1 && id > c.lastPeerID {
			c.lastPeerID = id
		}
		c.mu.Unlock()
	}
	c.resetStream(id, code, fmt.Errorf("%w: %v", ErrProtocol, code))
}

// errCode is the GOAWAY code for an error of process.
func errCode(err error) http2.ErrCode {
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &ce):
		return http2.ErrCode(ce)
	case errors.Is(err, ErrFlowControl):
		return http2.ErrCodeFlowControl
	default:
		return http2.ErrCodeProtocol
	}
}

func (c *conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.MetaHeadersFrame:
		if c.server {
			return c.srv.onHeaders(f)
		}
		return c.onResponseHeaders(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.onSettings(f); err != nil {
			return err
		}
		c.lockW()
		// the peer's decoder table bounds our encoder's from the next block
		if v, ok := f.Value(http2.SettingHeaderTableSize); ok {
			c.henc.SetMaxDynamicTableSizeLimit(v)
		}
		return c.unlockW(c.fr.WriteSettingsAck())
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		c.lockW()
		return c.unlockW(c.fr.WritePing(true, f.Data))
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		s, ok := c.streams[f.StreamID]
		if ok {
			delete(c.streams, f.StreamID)
			s.reset = true
			c.cond.Broadcast()
		} else if c.idleStreamLocked(f.StreamID) {
			c.mu.Unlock()
			return fmt.Errorf("%w: RST_STREAM on idle stream %d", ErrProtocol, f.StreamID)
		}
		c.mu.Unlock()
		if ok {
			s.abortFromPeer(fmt.Errorf("%w: %v", ErrStreamReset, f.ErrCode))
			c.noteIdle()
		}
		return nil
	case *http2.GoAwayFrame:
		c.onGoAway(f)
		return nil
	case *http2.PushPromiseFrame:
		return fmt.Errorf("%w: push promise", ErrProtocol)
	default: // PRIORITY and unknown frames are ignored
		return nil
	}
}

// idleStreamLocked reports whether id names a stream not opened yet.
func (c *conn) idleStreamLocked(id uint32) bool {
	if c.server {
		return id%2 == 1 && id > c.lastPeerID
	}
	return id%2 == 1 && id >= c.nextID
}

func (c *conn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	inc := int64(f.Increment)
	c.mu.Lock()
	if f.StreamID == 0 {
		if c.sendWindow+inc > maxWindow {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.sendWindow += inc
		c.cond.Broadcast()
		c.mu.Unlock()
		return nil
	}
	s, ok := c.streams[f.StreamID]
	if !ok {
		idle := c.idleStreamLocked(f.StreamID)
		c.mu.Unlock()
		if idle {
			return fmt.Errorf("%w: WINDOW_UPDATE on idle stream %d", ErrProtocol, f.StreamID)
		}
		return nil
	}
	if s.sendWindow+inc > maxWindow {
		c.mu.Unlock()
		c.resetStream(f.StreamID, http2.ErrCodeFlowControl, fmt.Errorf("%w: stream window overflow", ErrFlowControl))
		return nil
	}
	s.sendWindow += inc
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

func (c *conn) onSettings(f *http2.SettingsFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerInitWin
			c.peerInitWin = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > maxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrm = s.Val
		case http2.SettingMaxConcurrentStreams:
			c.peerMaxStreams = s.Val
		}
		return nil
	})
}

func (c *conn) onGoAway(f *http2.GoAwayFrame) {
	c.mu.Lock()
	c.goingAway = true
	var refused []*stream
	if !c.server {
		c.goAwayID = f.LastStreamID
		// streams the server never processed fail retryably
		for id, s := range c.streams {
			if id > f.LastStreamID {
				delete(c.streams, id)
				s.reset = true
				refused = append(refused, s)
			}
		}
		c.cond.Broadcast()
	}
	n := len(c.streams)
	c.mu.Unlock()
	for _, s := range refused {
		s.abort(fmt.Errorf("%w: stream %d not processed", ErrGoingAway, s.id))
	}
	if n == 0 {
		c.fail(ErrGoingAway)
	}
}

func (c *conn) onData(f *http2.DataFrame) error {
	n := int64(f.Length)
	c.mu.Lock()
	c.recvWindow -= n
	if c.recvWindow < 0 {
		c.mu.Unlock()
		return fmt.Errorf("%w: connection", ErrFlowControl)
	}
	s, ok := c.streams[f.StreamID]
	if !ok {
		idle := c.idleStreamLocked(f.StreamID)
		c.mu.Unlock()
		if idle {
			return fmt.Errorf("%w: DATA on idle stream %d", ErrProtocol, f.StreamID)
		}
		// a stream we already closed: return its window at once
		c.returnConnWindow(n)
		return nil
	}
	c.mu.Unlock()
	data := f.Data()
	s.rmu.Lock()
	if s.rEOF || s.rErr != nil || !s.gotHeaders {
		closed := s.rEOF
		s.rmu.Unlock()
		c.returnConnWindow(n)
		if closed || !s.gotHeaders {
			c.resetStream(s.id, http2.ErrCodeStreamClosed, fmt.Errorf("%w: DATA after END_STREAM", ErrProtocol))
		}
		return nil
	}
	s.recvWindow -= n
	if s.recvWindow < 0 {
		s.rmu.Unlock()
		c.returnConnWindow(n)
		c.resetStream(s.id, http2.ErrCodeFlowControl, ErrFlowControl)
		return nil
	}
	s.gotLen += int64(len(data))
	if s.declLen >= 0 && (s.gotLen > s.declLen || f.StreamEnded() && s.gotLen != s.declLen) {
		s.rmu.Unlock()
		c.returnConnWindow(n)
		c.resetStream(s.id, http2.ErrCodeProtocol, fmt.Errorf("%w: body length differs from content-length", ErrProtocol))
		return nil
	}
	if s.roff > 0 && s.roff == len(s.rbuf) {
		s.rbuf, s.roff = s.rbuf[:0], 0
	}
	if s.rbuf == nil && len(data) > 0 {
		s.rbuf = (*rbufPool.Get().(*[]byte))[:0]
	}
	s.rbuf = append(s.rbuf, data...)
	// padding counts against the windows but never reaches the reader
	pad := n - int64(len(data))
	if f.StreamEnded() {
		s.rEOF = true
	}
	s.rcond.Broadcast()
	s.rmu.Unlock()
	if pad > 0 {
		s.returnWindow(pad)
	}
	if f.StreamEnded() {
		s.onEOF()
	}
	return nil
}

func (c *conn) newStreamLocked(id uint32) *stream {
	s := &stream{c: c, id: id, sendWindow: c.peerInitWin, recvWindow: int64(c.cfg.streamWindow), declLen: -1}
	s.rcond = sync.NewCond(&s.rmu)
	c.streams[id] = s
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	return s
}

// writeHeaderBlock writes the encoded block in c.hbuf as HEADERS and
// CONTINUATION frames. Called under wmu.
func (c *conn) writeHeaderBlock(id uint32, end bool) error {
	block := c.hbuf.Bytes()
	c.mu.Lock()
	max := int(c.peerMaxFrm)
	c.mu.Unlock()
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndHeaders: len(block) == 0, EndStream: end})
	for err == nil && len(block) > 0 {
		frag := block
		if len(frag) > max {
			frag = frag[:max]
		}
		block = block[len(frag):]
		err = c.fr.WriteContinuation(id, len(block) == 0, frag)
	}
	return err
}

// resetStream sends RST_STREAM and fails the stream locally with err.
func (c *conn) resetStream(id uint32, code http2.ErrCode, err error) {
	c.mu.Lock()
	s, ok := c.streams[id]
	if ok {
		delete(c.streams, id)
		s.reset = true
		c.cond.Broadcast()
	}
	closed := c.closed
	c.mu.Unlock()
	if !closed {
		c.lockW()
		c.unlockW(c.fr.WriteRSTStream(id, code))
	}
	if ok {
		s.abort(err)
		c.noteIdle()
	}
}

// returnConnWindow gives consumed bytes back to the connection window,
// in WINDOW_UPDATEs of at least a quarter of it.
func (c *conn) returnConnWindow(n int64) {
	if inc := c.connWindowInc(n); inc > 0 {
		c.lockW()
		c.unlockW(c.fr.WriteWindowUpdate(0, uint32(inc)))
	}
}

func (c *conn) connWindowInc(n int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recvUnacked += n
	if c.recvUnacked < int64(c.cfg.connWindow)/4 || c.closed {
		return 0
	}
	inc := c.recvUnacked
	c.recvUnacked = 0
	c.recvWindow += inc
	return inc
}

// maybeForget drops a stream from the table once both directions ended.
func (c *conn) maybeForget(s *stream) {
	c.wmu.Lock()
	sent := s.sentEnd
	c.wmu.Unlock()
	s.rmu.Lock()
	got := s.rEOF
	s.rmu.Unlock()
	if !sent || !got {
		return
	}
	c.mu.Lock()
	_, ok := c.streams[s.id]
	delete(c.streams, s.id)
	c.mu.Unlock()
	if ok {
		c.noteIdle()
	}
}

// noteIdle closes a going-away connection with no streams left, and arms
// the idle timer of one with none.
func (c *conn) noteIdle() {
	c.mu.Lock()
	n := len(c.streams)
	away := c.goingAway
	if n == 0 && !away && c.cfg.idleTimeout > 0 && !c.closed {
		if c.idleTimer == nil {
			c.idleTimer = time.AfterFunc(c.cfg.idleTimeout, c.idleCheck)
		} else {
			c.idleTimer.Reset(c.cfg.idleTimeout)
		}
	}
	c.mu.Unlock()
	if n == 0 && away {
		c.closeAway()
	}
}

// awayLinger bounds how long a server connection that went away and has
// no stream left waits for its client to close it.
const awayLinger = time.Second

// closeAway closes a connection that went away once its last stream
// ended. A server lingers until its client closes (at most awayLinger):
// closed at once with the client's next frames unread, its socket would
// be reset, and the client could lose the GOAWAY that tells it to send
// those requests elsewhere. Streams opened meanwhile are refused.
func (c *conn) closeAway() {
	if !c.server {
		c.fail(ErrGoingAway)
		return
	}
	c.mu.Lock()
	lingering := c.lingering || c.closed
	c.lingering = true
	c.mu.Unlock()
	if !lingering {
		time.AfterFunc(awayLinger, func() { c.fail(ErrGoingAway) })
	}
}

func (c *conn) idleCheck() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && !c.closed
	c.mu.Unlock()
	if idle {
		c.goAway(http2.ErrCodeNo)
	}
}

// goAway tells the peer to open no new streams; the connection closes once
// its streams are done.
func (c *conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.goingAway = true
	// not lastPeerID: a request whose header block is being read now is
	// not taken yet, and once this connection closes it never will be;
	// announced as unprocessed, the client sends it again elsewhere
	last := c.lastTaken
	n := len(c.streams)
	c.mu.Unlock()
	c.lockW()
	c.unlockW(c.fr.WriteGoAway(last, code, nil))
	if n == 0 {
		c.closeAway()
	}
}
