// Package h2 is a small HTTP/2 implementation for CONNECT streams only
// (RFC 9113 section 8.5), both ends: the framing of the node proxies' mTLS
// tunnel. It exists because the general net/http HTTP/2 stack moves every
// frame through several goroutines (frame reader, connection loop, handler,
// request-body pipe); here a stream's writes go straight to the connection
// (one mutex, one flush) and a connection's single reader hands data to the
// Stream reading it. That is most of the node proxy's CPU per request.
//
// A client opens streams with Conn.Open; a server hands each stream a peer
// opens to its Handler. Either side runs Conn.Serve to read frames. Frames
// are parsed by golang.org/x/net/http2's Framer; this package keeps the
// connection and stream state, flow control and the CONNECT rules.
package h2

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

const (
	// initialWindow is the per-stream receive window we advertise.
	initialWindow = 4 << 20
	// connWindow is the connection receive window we keep.
	connWindow = 16 << 20
	// maxStreams is how many concurrent streams a server accepts per conn.
	maxStreams = 1000
	// maxFrame is the largest DATA frame we send (the peer's limit applies
	// when smaller).
	maxFrame = 16 << 10
	// maxHeaderList bounds a peer's header block unless
	// Config.MaxHeaderListSize says otherwise.
	maxHeaderList = 16 << 10
)

// Errors of connections and streams; the reasons are wrapped after them.
var (
	// ErrConnClosed: the connection is closed.
	ErrConnClosed = errors.New("http2 connection closed")
	// ErrGoingAway: the connection takes no new stream (GOAWAY sent or
	// received, or idle).
	ErrGoingAway = errors.New("http2 connection going away")
	// ErrStreamReset: the stream was reset (RST_STREAM either way).
	ErrStreamReset = errors.New("http2 stream reset")
	// ErrStreamClosed: the stream was closed by this side.
	ErrStreamClosed = errors.New("http2 stream closed")
	// ErrRefused: the server answered the CONNECT with a non-200 status.
	ErrRefused = errors.New("connect refused")
	// ErrProtocol: the peer broke the protocol; the connection is closed.
	ErrProtocol = errors.New("http2 protocol error")
	// ErrFlowControl: the peer sent more than its flow-control window.
	ErrFlowControl = errors.New("peer exceeded the flow-control window")
)

var clientPreface = []byte(http2.ClientPreface)

// Conn is one HTTP/2 connection carrying CONNECT streams.
type Conn struct {
	nc     net.Conn
	server bool

	wmu sync.Mutex // serialises frame writes
	// writers counts the hot-path writers holding or queued for wmu (see
	// lockW): the last one of a burst flushes for all of them.
	writers atomic.Int32
	bw      *bufio.Writer
	br      *bufio.Reader
	fr      *http2.Framer
	henc    *hpack.Encoder
	hbuf    bytes.Buffer

	mu          sync.Mutex
	cond        *sync.Cond // send-window waits
	streams     map[uint32]*Stream
	nextID      uint32
	lastPeerID  uint32
	sendWindow  int64 // connection send window
	peerInitWin int64
	peerMaxFrm  uint32
	goingAway   bool
	closed      bool
	closeErr    error
	recvUnacked int64 // connection bytes consumed, not yet returned
	idleTimer   *time.Timer
	idleTimeout time.Duration
	// maxHeaderList is the SETTINGS_MAX_HEADER_LIST_SIZE we announce and
	// enforce; refused is Config.Refused.
	maxHeaderList uint32
	refused       func(status int)

	// server side: called (in its own goroutine) for each new stream
	handle Handler
	done   chan struct{}
	// away is closed when the peer's GOAWAY arrives (client side) or the
	// connection closes
	away     chan struct{}
	awayOnce sync.Once
}

// Handler serves one CONNECT stream a client opened: authority is the
// :authority and h the request's regular header fields. It runs in its own
// goroutine, must call s.Respond before writing, and Close the stream when
// done.
type Handler func(s *Stream, authority string, h http.Header)

// Config configures a Conn.
type Config struct {
	// Handler serves the streams a client opens (server side only).
	Handler Handler
	// IdleTimeout closes the connection once it carried no stream for this
	// long; never when zero.
	IdleTimeout time.Duration
	// MaxHeaderListSize bounds a peer's header block (announced as
	// SETTINGS_MAX_HEADER_LIST_SIZE, counted as RFC 9113 6.5.2 says); a
	// server answers a larger request 431. 16 KiB when zero.
	MaxHeaderListSize uint32
	// Refused, when set, is told (server side) of each stream the
	// connection answered itself: 400 or 431.
	Refused func(status int)
}

// Stream is one CONNECT stream: a reliable byte stream each way, with
// half-close (CloseWrite) and flow control.
type Stream struct {
	c  *Conn
	id uint32

	// receive side, guarded by rmu
	rmu      sync.Mutex
	rcond    *sync.Cond
	rbuf     []byte
	roff     int
	rEOF     bool
	rErr     error
	unacked  int64
	response chan int // client: the response :status (closed on failure)
	// sink, while WriteTo runs with a socket: the connection's reader
	// writes arriving data straight to it (see deliver)
	sink sink
	// held: data from rbuf[holdAt:] on waits for the stream's close (see
	// Hold)
	held   bool
	holdAt int
	// detached: the reader returns ErrDetached (see Detach)
	detached bool
	// credited: bytes of rbuf not read yet that went back to the
	// connection's window already (see abort)
	credited int
	// lastIn and lastOut are when data last arrived and was last sent
	// (see LastMoved)
	lastIn, lastOut atomic.Int64

	// send side, window guarded by c.mu
	sendWindow int64
	sentEnd    bool // guarded by c.wmu
	reset      bool // guarded by c.mu
}

// NewClient starts the client end of an HTTP/2 connection over nc (an
// established TLS connection, or any reliable stream): it sends the client
// preface and our settings. Run Serve to read the server's frames, and
// Open streams. On error nc is closed.
func NewClient(nc net.Conn, cfg Config) (*Conn, error) {
	c := newConn(nc, false, cfg)
	if err := c.start(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("http2 client start: %w", err)
	}
	return c, nil
}

// NewServer starts the server end of an HTTP/2 connection over nc: it
// reads the client preface and sends our settings. Run Serve to read the
// client's frames; each stream opened goes to cfg.Handler. On error nc is
// closed.
func NewServer(nc net.Conn, cfg Config) (*Conn, error) {
	c := newConn(nc, true, cfg)
	if err := c.readPreface(c.br); err != nil {
		nc.Close()
		return nil, err
	}
	if err := c.start(); err != nil {
		nc.Close()
		return nil, fmt.Errorf("http2 server settings: %w", err)
	}
	c.noteIdle()
	return c, nil
}

func newConn(nc net.Conn, server bool, cfg Config) *Conn {
	c := &Conn{
		nc: nc, server: server, bw: bufio.NewWriterSize(nc, 32<<10), br: bufio.NewReaderSize(nc, 32<<10),
		streams: make(map[uint32]*Stream), sendWindow: 65535, peerInitWin: 65535, peerMaxFrm: 16384,
		done: make(chan struct{}), away: make(chan struct{}), handle: cfg.Handler, idleTimeout: cfg.IdleTimeout,
		maxHeaderList: cmp.Or(cfg.MaxHeaderListSize, maxHeaderList), refused: cfg.Refused,
	}
	c.cond = sync.NewCond(&c.mu)
	c.fr = newFramer(c, c.br)
	c.henc = hpack.NewEncoder(&c.hbuf)
	if server {
		c.nextID = 2
	} else {
		c.nextID = 1
	}
	return c
}

func newFramer(c *Conn, r io.Reader) *http2.Framer {
	fr := http2.NewFramer(c.bw, r)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.MaxHeaderListSize = c.maxHeaderList
	fr.SetMaxReadFrameSize(1 << 20)
	return fr
}

// lockW takes the write lock for a frame write that unlockW will flush.
// Under load many streams write at once; a writer that sees others queued
// behind it leaves the flush to the last of them, so a burst of frames
// leaves in one TLS record and one write(2) instead of one each. The wait
// is only as long as the queued writers' own frame writes.
func (c *Conn) lockW() {
	c.writers.Add(1)
	c.wmu.Lock()
}

// unlockW flushes unless another writer is queued, and releases the lock.
// A failed flush fails the connection, so the writers that left their
// frames to it learn of it on their next call.
//
// A client yields once before it flushes. Its writers are the requests of
// a burst of callers (clients that send at the same instants), woken
// together but run one after another: without the yield each found no
// writer queued and flushed alone, one TLS record and one write(2) per
// request, and the destination read them one by one. Yielding lets the
// runnable ones add their frames first; whichever flushes then carries
// them all. Measured (test/bench/ab.sh, h2c at 1,000 req/s): the source's
// write(2)s per request fell from 1.95 to 1.48, the destination's CPU per
// request by 18%. A server does not yield: its writers are answers, and
// holding the first of a burst for the rest delayed it (with servers
// yielding too, HTTP/1.1's p50 was 1.16x its parent's).
func (c *Conn) unlockW(err error) error {
	if c.writers.Add(-1) != 0 || err != nil || c.bw.Buffered() == 0 {
		c.wmu.Unlock()
		return err
	}
	if !c.server {
		c.wmu.Unlock()
		runtime.Gosched()
		c.wmu.Lock()
	}
	err = c.bw.Flush()
	c.wmu.Unlock()
	return err
}

// start writes our preface and settings; the caller then runs Serve.
func (c *Conn) start() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.server {
		if _, err := c.bw.Write(clientPreface); err != nil {
			return err
		}
	}
	settings := []http2.Setting{
		{ID: http2.SettingInitialWindowSize, Val: initialWindow},
		{ID: http2.SettingMaxFrameSize, Val: 1 << 20},
		{ID: http2.SettingMaxHeaderListSize, Val: c.maxHeaderList},
		{ID: http2.SettingEnablePush, Val: 0},
	}
	if c.server {
		settings = append(settings, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: maxStreams})
	}
	if err := c.fr.WriteSettings(settings...); err != nil {
		return err
	}
	if err := c.fr.WriteWindowUpdate(0, connWindow-65535); err != nil {
		return err
	}
	return c.bw.Flush()
}

// readPreface consumes the client preface (server side).
func (c *Conn) readPreface(r io.Reader) error {
	buf := make([]byte, len(clientPreface))
	if _, err := io.ReadFull(r, buf); err != nil {
		return fmt.Errorf("read http2 preface: %w", err)
	}
	if !bytes.Equal(buf, clientPreface) {
		return fmt.Errorf("%w: bad client preface", ErrProtocol)
	}
	return nil
}

// fail closes the connection and every stream with err.
func (c *Conn) fail(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closeErr = err
	streams := make([]*Stream, 0, len(c.streams))
	for _, s := range c.streams {
		streams = append(streams, s)
	}
	c.streams = map[uint32]*Stream{}
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	for _, s := range streams {
		s.abort(ErrConnClosed)
	}
	c.awayOnce.Do(func() { close(c.away) })
	close(c.done)
}

// connError sends GOAWAY with code and closes.
func (c *Conn) connError(code http2.ErrCode, err error) {
	c.wmu.Lock()
	c.mu.Lock()
	last := c.lastPeerID
	c.mu.Unlock()
	c.fr.WriteGoAway(last, code, nil)
	c.bw.Flush()
	c.wmu.Unlock()
	c.fail(err)
}

// Serve reads frames until the connection ends (both sides run it).
func (c *Conn) Serve() {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			switch r := readFailureOf(err); {
			case r.stream != 0:
				c.resetStream(r.stream, r.code)
				continue
			case r.goAway:
				c.connError(r.code, r.err)
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

// readFailure is what a failed ReadFrame means: a stream to reset (stream
// set: the connection goes on), a protocol error to answer with GOAWAY
// (goAway), or else the connection's end (the read itself failed).
type readFailure struct {
	stream uint32
	code   http2.ErrCode
	goAway bool
	err    error
}

func readFailureOf(err error) readFailure {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		return readFailure{stream: se.StreamID, code: se.Code, err: fmt.Errorf("%w: %v", ErrStreamReset, err)}
	case errors.As(err, &ce):
		return readFailure{code: http2.ErrCode(ce), goAway: true, err: fmt.Errorf("%w: %v", ErrProtocol, err)}
	case errors.Is(err, http2.ErrFrameTooLarge):
		return readFailure{code: http2.ErrCodeFrameSize, goAway: true, err: fmt.Errorf("%w: %v", ErrProtocol, err)}
	}
	return readFailure{err: err}
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

func (c *Conn) process(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		if err := c.onSettings(f); err != nil {
			return err
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if err := c.fr.WriteSettingsAck(); err != nil {
			return err
		}
		return c.bw.Flush()
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		if err := c.fr.WritePing(true, f.Data); err != nil {
			return err
		}
		return c.bw.Flush()
	case *http2.WindowUpdateFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		if f.StreamID == 0 {
			c.sendWindow += int64(f.Increment)
		} else if s, ok := c.streams[f.StreamID]; ok {
			s.sendWindow += int64(f.Increment)
		}
		c.cond.Broadcast()
		return nil
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		s, ok := c.streams[f.StreamID]
		if ok {
			delete(c.streams, f.StreamID)
			s.reset = true
			c.cond.Broadcast()
		}
		c.mu.Unlock()
		if ok {
			s.abort(fmt.Errorf("%w: %v", ErrStreamReset, f.ErrCode))
			c.noteIdle()
		}
		return nil
	case *http2.GoAwayFrame:
		// the streams we opened past the peer's last were never
		// processed: they end now, safe to try elsewhere, instead of
		// waiting for the connection's end
		var gone []*Stream
		c.mu.Lock()
		c.goingAway = true
		for id, s := range c.streams {
			if !c.server && id > f.LastStreamID {
				delete(c.streams, id)
				s.reset = true // as a reset: no write waits on its window
				gone = append(gone, s)
			}
		}
		n := len(c.streams)
		c.cond.Broadcast()
		c.mu.Unlock()
		for _, s := range gone {
			s.abort(fmt.Errorf("%w: the peer did not take the stream", ErrGoingAway))
		}
		if !c.server {
			c.awayOnce.Do(func() { close(c.away) })
		}
		if n == 0 {
			c.fail(ErrGoingAway)
		}
		return nil
	case *http2.PushPromiseFrame:
		return fmt.Errorf("%w: push promise", ErrProtocol)
	default: // PRIORITY and unknown frames are ignored
		return nil
	}
}

func (c *Conn) onSettings(f *http2.SettingsFrame) error {
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
			}
			c.cond.Broadcast()
		case http2.SettingMaxFrameSize:
			c.peerMaxFrm = s.Val
		}
		return nil
	})
}

func (c *Conn) onData(f *http2.DataFrame) error {
	n := int64(f.Length)
	c.mu.Lock()
	s, ok := c.streams[f.StreamID]
	c.mu.Unlock()
	if !ok {
		// data for a stream we already forgot: return its window at once
		if n > 0 {
			c.returnConnWindow(n)
		}
		return nil
	}
	s.rmu.Lock()
	if s.rEOF || s.rErr != nil {
		s.rmu.Unlock()
		c.returnConnWindow(n)
		return nil
	}
	if int64(len(s.rbuf)-s.roff)+int64(len(f.Data())) > initialWindow+maxFrame {
		s.rmu.Unlock()
		return ErrFlowControl
	}
	if s.roff > 0 && s.roff == len(s.rbuf) {
		s.rbuf, s.roff, s.holdAt = s.rbuf[:0], 0, 0
	}
	data := f.Data()
	if len(data) > 0 {
		s.lastIn.Store(nanotime())
	}
	// a sink (see WriteTo) takes what it can straight from this goroutine
	took := s.deliver(data)
	s.rbuf = append(s.rbuf, data[took:]...)
	// padding counts against the window but never reaches the reader
	if pad := n - int64(len(data)); pad > 0 {
		s.unacked += pad
	}
	if f.StreamEnded() {
		s.rEOF = true
	}
	if took < len(data) || f.StreamEnded() {
		s.rcond.Broadcast()
	}
	inc := s.consumeLocked(took)
	s.rmu.Unlock()
	s.acknowledge(took, inc)
	if f.StreamEnded() {
		c.maybeForget(s)
	}
	return nil
}

// onHeaders: a new CONNECT stream (server) or the response (client).
func (c *Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	if !c.server {
		c.mu.Lock()
		s, ok := c.streams[f.StreamID]
		c.mu.Unlock()
		if !ok || s.response == nil {
			return nil
		}
		code, err := strconv.Atoi(f.PseudoValue("status"))
		if err != nil {
			return fmt.Errorf("%w: bad :status", ErrProtocol)
		}
		if code >= 100 && code < 200 {
			return nil
		}
		select {
		case s.response <- code:
		default:
		}
		if f.StreamEnded() {
			s.rmu.Lock()
			s.rEOF = true
			s.rcond.Broadcast()
			s.rmu.Unlock()
			c.maybeForget(s)
		}
		return nil
	}
	id := f.StreamID
	c.mu.Lock()
	if id%2 == 0 || id <= c.lastPeerID {
		c.mu.Unlock()
		return fmt.Errorf("%w: stream id %d", ErrProtocol, id)
	}
	c.lastPeerID = id
	if c.goingAway || len(c.streams) >= maxStreams {
		c.mu.Unlock()
		c.resetStream(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if f.Truncated { // over maxHeaderList: fields were dropped
		c.mu.Unlock()
		c.respondAndEnd(id, http.StatusRequestHeaderFieldsTooLarge)
		return nil
	}
	if f.PseudoValue("method") != http.MethodConnect || f.PseudoValue("path") != "" || f.PseudoValue("scheme") != "" || f.PseudoValue("authority") == "" || f.StreamEnded() {
		c.mu.Unlock()
		c.respondAndEnd(id, http.StatusBadRequest)
		return nil
	}
	s := c.newStreamLocked(id)
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	h := make(http.Header, len(f.RegularFields()))
	for _, hf := range f.RegularFields() {
		h.Add(hf.Name, hf.Value)
	}
	go c.handle(s, f.PseudoValue("authority"), h)
	return nil
}

func (c *Conn) newStreamLocked(id uint32) *Stream {
	s := &Stream{c: c, id: id, sendWindow: c.peerInitWin}
	s.rcond = sync.NewCond(&s.rmu)
	c.streams[id] = s
	return s
}

// respondAndEnd answers a stream with a status and no body.
func (c *Conn) respondAndEnd(id uint32, status int) {
	if c.refused != nil {
		c.refused(status)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.writeHeadersLocked(id, true, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	c.bw.Flush()
}

func (c *Conn) writeHeadersLocked(id uint32, end bool, fields ...hpack.HeaderField) error {
	c.hbuf.Reset()
	for _, f := range fields {
		if err := c.henc.WriteField(f); err != nil {
			return err
		}
	}
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true, EndStream: end})
}

func (c *Conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	s, ok := c.streams[id]
	if ok {
		delete(c.streams, id)
		s.reset = true
		c.cond.Broadcast()
	}
	c.mu.Unlock()
	c.wmu.Lock()
	c.fr.WriteRSTStream(id, code)
	c.bw.Flush()
	c.wmu.Unlock()
	if ok {
		s.abort(ErrStreamReset)
		c.noteIdle()
	}
}

func (c *Conn) returnConnWindow(n int64) {
	c.mu.Lock()
	c.recvUnacked += n
	send := c.recvUnacked >= connWindow/4
	var inc int64
	if send {
		inc, c.recvUnacked = c.recvUnacked, 0
	}
	c.mu.Unlock()
	if send {
		c.wmu.Lock()
		c.fr.WriteWindowUpdate(0, uint32(inc))
		c.bw.Flush()
		c.wmu.Unlock()
	}
}

// maybeForget drops a stream from the table once both directions ended.
func (c *Conn) maybeForget(s *Stream) {
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
// the idle timer of a client connection with none.
func (c *Conn) noteIdle() {
	c.mu.Lock()
	n := len(c.streams)
	away := c.goingAway
	if n == 0 && !away && c.idleTimeout > 0 && !c.closed {
		if c.idleTimer == nil {
			c.idleTimer = time.AfterFunc(c.idleTimeout, c.idleCheck)
		} else {
			c.idleTimer.Reset(c.idleTimeout)
		}
	}
	c.mu.Unlock()
	if n == 0 && away {
		c.fail(ErrGoingAway)
	}
}

func (c *Conn) idleCheck() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && !c.closed
	if idle {
		c.goingAway = true
	}
	c.mu.Unlock()
	if idle {
		c.fail(ErrGoingAway)
	}
}

// GoAway tells the peer to open no new streams; the connection closes once
// its streams are done.
func (c *Conn) GoAway() {
	c.mu.Lock()
	c.goingAway = true
	last := c.lastPeerID
	n := len(c.streams)
	c.mu.Unlock()
	c.wmu.Lock()
	c.fr.WriteGoAway(last, http2.ErrCodeNo, nil)
	c.bw.Flush()
	c.wmu.Unlock()
	if n == 0 {
		c.fail(ErrGoingAway)
	}
}

// Streams counts open streams.
func (c *Conn) Streams() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.streams)
}

// Usable reports whether a client connection can take another stream.
func (c *Conn) Usable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.closed && !c.goingAway && len(c.streams) < maxStreams && c.nextID < 1<<31-1
}

// Open starts a CONNECT stream to authority (client side) and waits for
// the response: a non-200 status is an error wrapping ErrRefused. ctx
// bounds the wait only.
func (c *Conn) Open(ctx context.Context, authority string, h http.Header) (*Stream, error) {
	fields := make([]hpack.HeaderField, 0, 2+len(h))
	fields = append(fields, hpack.HeaderField{Name: ":method", Value: http.MethodConnect}, hpack.HeaderField{Name: ":authority", Value: authority})
	for k, vs := range h {
		for _, v := range vs {
			fields = append(fields, hpack.HeaderField{Name: lower(k), Value: v})
		}
	}
	// ids must reach the wire in allocation order: allocate under wmu
	c.lockW()
	c.mu.Lock()
	if c.closed || c.goingAway {
		c.mu.Unlock()
		c.unlockW(nil)
		return nil, ErrGoingAway
	}
	id := c.nextID
	c.nextID += 2
	s := c.newStreamLocked(id)
	s.response = make(chan int, 1)
	if c.idleTimer != nil {
		c.idleTimer.Stop()
	}
	c.mu.Unlock()
	err := c.unlockW(c.writeHeadersLocked(id, false, fields...))
	if err != nil {
		c.fail(err)
		return nil, err
	}
	select {
	case code := <-s.response:
		if code == 0 { // aborted: reset, or the connection closed
			s.rmu.Lock()
			err := s.rErr
			s.rmu.Unlock()
			return nil, err
		}
		if code != http.StatusOK {
			s.Close()
			return nil, fmt.Errorf("%w: status %d", ErrRefused, code)
		}
		return s, nil
	case <-c.done:
		return nil, fmt.Errorf("%w: %v", ErrConnClosed, c.err())
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
}

func (c *Conn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeErr
}

// Close closes the connection and its streams at once.
func (c *Conn) Close() { c.fail(ErrConnClosed) }

// Done is closed when the connection is closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

func lower(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if 'A' <= ch && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}

// Respond sends the response headers of a server stream: 200 opens the
// tunnel, anything else refuses it (and ends the stream).
func (s *Stream) Respond(status int) error {
	c := s.c
	c.lockW()
	end := status != http.StatusOK
	err := c.writeHeadersLocked(s.id, end, hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	if err == nil && end {
		s.sentEnd = true
	}
	return c.unlockW(err)
}

func (s *Stream) abort(err error) {
	s.rmu.Lock()
	if s.rErr == nil {
		s.rErr = err
	}
	// held data nobody will read goes back to the connection's window,
	// which would else shrink for good (what arrived before stays
	// readable, then the error)
	unread := 0
	if s.held {
		unread = len(s.rbuf) - s.holdAt
		s.rbuf = s.rbuf[:s.holdAt]
	}
	// the rest stays readable, but a reader may never come: the window
	// goes back now, and reading it later returns nothing twice
	if rest := len(s.rbuf) - s.roff - s.credited; rest > 0 {
		s.credited += rest
		unread += rest
	}
	s.rcond.Broadcast()
	s.rmu.Unlock()
	if unread > 0 {
		s.c.returnConnWindow(int64(unread))
	}
	if s.response != nil {
		select {
		case s.response <- 0:
		default:
		}
	}
}

// Read reads the stream's data.
func (s *Stream) Read(p []byte) (int, error) {
	s.rmu.Lock()
	for s.waitLocked() {
		s.rcond.Wait()
	}
	if end := s.readableLocked(); s.roff < end {
		n := copy(p, s.rbuf[s.roff:end])
		s.roff += n
		inc := s.consumeLocked(n)
		back := s.takeLocked(n)
		s.rmu.Unlock()
		s.acknowledge(back, inc)
		return n, nil
	}
	err := s.rErr
	switch {
	case err != nil:
	case s.detached:
		err = ErrDetached
	default:
		err = io.EOF
	}
	s.rmu.Unlock()
	return 0, err
}

// readableLocked is where the data the reader may take ends. rmu held.
func (s *Stream) readableLocked() int {
	if s.held {
		return s.holdAt
	}
	return len(s.rbuf)
}

// waitLocked reports whether the reader has nothing to do yet: no data it
// may take, and no end. rmu held.
func (s *Stream) waitLocked() bool {
	return s.roff == s.readableLocked() && !s.rEOF && s.rErr == nil && !s.detached
}

// ErrDetached is what a reader of a detached stream gets (see Detach).
var ErrDetached = errors.New("http2 stream detached from its reader")

// Hold stops giving the peer's data to the stream's reader (Read, WriteTo
// and its straight-to-socket delivery) from now on: what arrives later
// waits, counted by Held, and is dropped when the stream closes; what
// arrived before is read as usual, and the peer's end is read as the end. The destination's inbound holds a
// spliced stream a policy change would now decide request by request, so
// that no request reaches the pod undecided while the answer under way
// finishes.
//
// It reports whether no data had arrived before it (none ever).
func (s *Stream) Hold() (fresh bool) {
	s.rmu.Lock()
	if !s.held {
		s.held, s.holdAt = true, len(s.rbuf)
	}
	fresh = s.lastIn.Load() == 0
	s.rmu.Unlock()
	return fresh
}

// Detach makes the stream's reader (Read, WriteTo) return ErrDetached
// once it took what it may, so that another can take the stream over
// (after Release).
func (s *Stream) Detach() {
	s.rmu.Lock()
	s.detached = true
	s.rcond.Broadcast()
	s.rmu.Unlock()
}

// Release ends Hold and Detach: the next reader gets the held data and
// what follows.
func (s *Stream) Release() {
	s.rmu.Lock()
	s.held, s.holdAt, s.detached = false, 0, false
	s.rcond.Broadcast()
	s.rmu.Unlock()
}

// Held counts the bytes that arrived since Hold and wait.
func (s *Stream) Held() int {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if !s.held {
		return 0
	}
	return len(s.rbuf) - s.holdAt
}

// ConnGoingAway is closed when the peer announced (GOAWAY) that it takes
// no new stream on the stream's connection, or the connection closed: the
// stream itself may go on, but what it carries should end soon (the peer
// is draining).
func (s *Stream) ConnGoingAway() <-chan struct{} { return s.c.away }

// LastMoved says when data last arrived from the peer and when Write last
// sent some (zero: never).
func (s *Stream) LastMoved() (in, out time.Time) {
	at := func(ns int64) time.Time {
		if ns == 0 {
			return time.Time{}
		}
		return time.Unix(0, ns)
	}
	return at(s.lastIn.Load()), at(s.lastOut.Load())
}

func nanotime() int64 { return time.Now().UnixNano() }

// Write sends p as DATA frames within the flow-control windows.
func (s *Stream) Write(p []byte) (int, error) {
	c := s.c
	written := 0
	for len(p) > 0 {
		c.mu.Lock()
		for !c.closed && !s.reset && (s.sendWindow <= 0 || c.sendWindow <= 0) {
			c.cond.Wait()
		}
		if c.closed {
			c.mu.Unlock()
			return written, ErrConnClosed
		}
		if s.reset {
			c.mu.Unlock()
			return written, ErrStreamReset
		}
		n := int64(len(p))
		n = min(n, s.sendWindow, c.sendWindow, int64(c.peerMaxFrm), maxFrame)
		s.sendWindow -= n
		c.sendWindow -= n
		c.mu.Unlock()
		c.lockW()
		if s.sentEnd {
			c.unlockW(nil)
			return written, ErrStreamClosed
		}
		err := c.unlockW(c.fr.WriteData(s.id, false, p[:n]))
		if err != nil {
			c.fail(err)
			return written, err
		}
		s.lastOut.Store(nanotime())
		written += int(n)
		p = p[n:]
	}
	return written, nil
}

// CloseWrite ends the sending direction (END_STREAM).
func (s *Stream) CloseWrite() error {
	c := s.c
	c.lockW()
	if s.sentEnd {
		c.unlockW(nil)
		return nil
	}
	s.sentEnd = true
	err := c.unlockW(c.fr.WriteData(s.id, true, nil))
	c.maybeForget(s)
	return err
}

// Close ends the stream in both directions: a reset when the peer has not
// finished, an END_STREAM when only our side was open.
func (s *Stream) Close() error {
	s.rmu.Lock()
	peerDone := s.rEOF || s.rErr != nil
	s.rmu.Unlock()
	c := s.c
	c.mu.Lock()
	_, open := c.streams[s.id]
	c.mu.Unlock()
	if !open {
		s.abort(ErrStreamClosed)
		return nil
	}
	if peerDone {
		err := s.CloseWrite()
		s.abort(ErrStreamClosed)
		return err
	}
	c.resetStream(s.id, http2.ErrCodeCancel)
	return nil
}
