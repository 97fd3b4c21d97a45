package h2

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// frame is a copy of one frame the peer read (the Framer reuses buffers).
type frame struct {
	typ      http2.FrameType
	stream   uint32
	end      bool // END_STREAM
	ack      bool
	data     []byte
	fields   map[string]string
	code     http2.ErrCode
	incr     uint32
	lastID   uint32
	settings []http2.Setting
}

// peer is the far end of a Conn under test, speaking raw frames.
type peer struct {
	t      *testing.T
	nc     net.Conn
	fr     *http2.Framer
	henc   *hpack.Encoder
	hbuf   bytes.Buffer
	frames chan frame
}

func newPeer(t *testing.T, nc net.Conn) *peer {
	p := &peer{t: t, nc: nc, frames: make(chan frame, 4096)}
	p.fr = http2.NewFramer(nc, nc)
	p.fr.AllowIllegalWrites = true
	p.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	p.fr.SetMaxReadFrameSize(1 << 20)
	p.henc = hpack.NewEncoder(&p.hbuf)
	return p
}

// read copies frames into p.frames until the connection ends.
func (p *peer) read() {
	defer close(p.frames)
	for {
		f, err := p.fr.ReadFrame()
		if err != nil {
			return
		}
		h := f.Header()
		fc := frame{typ: h.Type, stream: h.StreamID, ack: h.Flags.Has(http2.FlagSettingsAck)}
		switch f := f.(type) {
		case *http2.DataFrame:
			fc.data, fc.end = bytes.Clone(f.Data()), f.StreamEnded()
		case *http2.MetaHeadersFrame:
			fc.end = f.StreamEnded()
			fc.fields = map[string]string{}
			for _, hf := range f.Fields {
				fc.fields[hf.Name] = hf.Value
			}
		case *http2.RSTStreamFrame:
			fc.code = f.ErrCode
		case *http2.GoAwayFrame:
			fc.code, fc.lastID = f.ErrCode, f.LastStreamID
		case *http2.WindowUpdateFrame:
			fc.incr = f.Increment
		case *http2.PingFrame:
			fc.data, fc.ack = bytes.Clone(f.Data[:]), f.IsAck()
		case *http2.SettingsFrame:
			fc.ack = f.IsAck()
			f.ForeachSetting(func(s http2.Setting) error { fc.settings = append(fc.settings, s); return nil })
		}
		p.frames <- fc
	}
}

// next returns the next frame that is not a SETTINGS ack or a WINDOW_UPDATE
// (unless asked for), failing after a timeout.
func (p *peer) next(types ...http2.FrameType) frame {
	p.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-p.frames:
			if !ok {
				p.t.Fatalf("connection closed while waiting for %v", types)
			}
			if len(types) == 0 && (f.typ == http2.FrameWindowUpdate || f.typ == http2.FrameSettings) {
				continue
			}
			if len(types) > 0 && !contains(types, f.typ) {
				continue
			}
			return f
		case <-timeout:
			p.t.Fatalf("no %v frame", types)
		}
	}
}

func contains(ts []http2.FrameType, t http2.FrameType) bool {
	for _, x := range ts {
		if x == t {
			return true
		}
	}
	return false
}

// expectClosed waits until the Conn closed the connection.
func (p *peer) expectClosed() {
	p.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-p.frames:
			if !ok {
				return
			}
		case <-timeout:
			p.t.Fatal("connection still open")
		}
	}
}

func (p *peer) headers(id uint32, end bool, fields ...string) {
	p.t.Helper()
	p.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		p.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.hbuf.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *peer) connect(id uint32, authority string) {
	p.headers(id, false, ":method", "CONNECT", ":authority", authority, "x-test", "yes")
}

func (p *peer) data(id uint32, end bool, b []byte) {
	p.t.Helper()
	if err := p.fr.WriteData(id, end, b); err != nil {
		p.t.Fatal(err)
	}
}

// opened is one stream the server side handed to its handler.
type opened struct {
	s         *Stream
	authority string
	h         http.Header
}

// serverPair starts a server Conn whose handler sends each new stream to
// the returned channel, and a peer acting as client, preface sent.
func serverPair(t *testing.T, cfg Config) (*Conn, *peer, chan opened) {
	t.Helper()
	a, b := net.Pipe()
	p := newPeer(t, b)
	ch := make(chan opened, 2000)
	if cfg.Handler == nil {
		cfg.Handler = func(s *Stream, authority string, h http.Header) { ch <- opened{s, authority, h} }
	}
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		b.Write(clientPreface)
		p.fr.WriteSettings()
	}()
	type result struct {
		c   *Conn
		err error
	}
	done := make(chan result)
	go func() { c, err := NewServer(a, cfg); done <- result{c, err} }()
	go p.read()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	go r.c.Serve()
	<-wdone // the peer's framer is the test's from here
	t.Cleanup(func() { r.c.Close(); b.Close() })
	return r.c, p, ch
}

// clientPair starts a client Conn and a peer acting as server.
func clientPair(t *testing.T, cfg Config) (*Conn, *peer) {
	t.Helper()
	a, b := net.Pipe()
	p := newPeer(t, b)
	preface := make(chan error, 1)
	go func() {
		buf := make([]byte, len(clientPreface))
		_, err := io.ReadFull(b, buf)
		if err == nil && !bytes.Equal(buf, clientPreface) {
			err = errors.New("bad preface")
		}
		preface <- err
		if err == nil {
			p.read()
		}
	}()
	c, err := NewClient(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-preface; err != nil {
		t.Fatal(err)
	}
	go c.Serve()
	t.Cleanup(func() { c.Close(); b.Close() })
	return c, p
}

func accept(t *testing.T, ch chan opened) opened {
	t.Helper()
	select {
	case o := <-ch:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("no stream reached the handler")
		return opened{}
	}
}

func TestServerSettings(t *testing.T) {
	_, p, _ := serverPair(t, Config{})
	f := p.next(http2.FrameSettings)
	want := map[http2.SettingID]uint32{
		http2.SettingInitialWindowSize:    initialWindow,
		http2.SettingMaxHeaderListSize:    maxHeaderList,
		http2.SettingMaxConcurrentStreams: maxStreams,
		http2.SettingEnablePush:           0,
	}
	got := map[http2.SettingID]uint32{}
	for _, s := range f.settings {
		got[s.ID] = s.Val
	}
	for id, v := range want {
		if got[id] != v {
			t.Errorf("setting %v = %d, want %d", id, got[id], v)
		}
	}
	if w := p.next(http2.FrameWindowUpdate); w.stream != 0 || w.incr != connWindow-65535 {
		t.Errorf("connection window update %+v", w)
	}
	// our settings are acknowledged; a ping is answered with its data
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 15})
	if f := p.next(http2.FrameSettings); !f.ack {
		t.Errorf("settings not acknowledged: %+v", f)
	}
	p.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
	if f := p.next(http2.FramePing); !f.ack || !bytes.Equal(f.data, []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Errorf("ping answer %+v", f)
	}
}

func TestServerConnectStream(t *testing.T) {
	c, p, ch := serverPair(t, Config{})
	p.connect(1, "10.0.0.1:80")
	o := accept(t, ch)
	if o.authority != "10.0.0.1:80" || o.h.Get("X-Test") != "yes" {
		t.Fatalf("handler got %q %v", o.authority, o.h)
	}
	if err := o.s.Respond(http.StatusOK); err != nil {
		t.Fatal(err)
	}
	if f := p.next(); f.typ != http2.FrameHeaders || f.fields[":status"] != "200" || f.end {
		t.Fatalf("response %+v", f)
	}
	p.data(1, false, []byte("hello "))
	p.data(1, true, []byte("world"))
	got, err := io.ReadAll(o.s)
	if err != nil || string(got) != "hello world" {
		t.Fatalf("read %q, %v", got, err)
	}
	// half-closed by the peer: we still write, then end our side
	if _, err := o.s.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	if f := p.next(); f.typ != http2.FrameData || string(f.data) != "bye" {
		t.Fatalf("data %+v", f)
	}
	if c.Streams() != 1 {
		t.Fatalf("%d streams while our side is open", c.Streams())
	}
	o.s.CloseWrite()
	if f := p.next(); f.typ != http2.FrameData || !f.end || len(f.data) != 0 {
		t.Fatalf("end %+v", f)
	}
	if c.Streams() != 0 {
		t.Fatalf("%d streams after both sides ended", c.Streams())
	}
	if _, err := o.s.Write([]byte("x")); !errors.Is(err, ErrStreamClosed) {
		t.Fatalf("write after CloseWrite: %v", err)
	}
}

// TestServerRefusesMalformedRequests: requests that are not a well-formed
// CONNECT get 400 on their stream; the connection lives on.
func TestServerRefusesMalformedRequests(t *testing.T) {
	for _, tc := range []struct {
		name   string
		end    bool
		fields []string
	}{
		{"get", false, []string{":method", "GET", ":authority", "a:1", ":path", "/", ":scheme", "http"}},
		{"path", false, []string{":method", "CONNECT", ":authority", "a:1", ":path", "/"}},
		{"scheme", false, []string{":method", "CONNECT", ":authority", "a:1", ":scheme", "https"}},
		{"no authority", false, []string{":method", "CONNECT"}},
		{"end stream", true, []string{":method", "CONNECT", ":authority", "a:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, p, ch := serverPair(t, Config{})
			p.headers(1, tc.end, tc.fields...)
			f := p.next()
			if f.typ != http2.FrameHeaders || f.fields[":status"] != "400" || !f.end {
				t.Fatalf("answer %+v", f)
			}
			p.connect(3, "a:1")
			accept(t, ch)
		})
	}
}

// TestServerProtocolErrors: frames that break the protocol end the
// connection with a GOAWAY naming the error.
func TestServerProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(p *peer)
		code http2.ErrCode
	}{
		{"even stream id", func(p *peer) { p.connect(2, "a:1") }, http2.ErrCodeProtocol},
		{"stream id goes back", func(p *peer) { p.connect(5, "a:1"); p.connect(3, "a:1") }, http2.ErrCodeProtocol},
		{"data on stream 0", func(p *peer) { p.data(0, false, []byte("x")) }, http2.ErrCodeProtocol},
		{"push promise", func(p *peer) {
			p.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: []byte{0x82}, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		{"frame too large", func(p *peer) { p.fr.WriteData(1, false, make([]byte, 1<<20+1)) }, http2.ErrCodeFrameSize},
		{"bad settings", func(p *peer) {
			p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		}, http2.ErrCodeFlowControl},
		{"continuation without headers", func(p *peer) { p.fr.WriteContinuation(1, true, []byte{0x82}) }, http2.ErrCodeProtocol},
		{"window update of zero", func(p *peer) { p.fr.WriteWindowUpdate(0, 0) }, http2.ErrCodeProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, p, _ := serverPair(t, Config{})
			go tc.send(p)
			f := p.next(http2.FrameGoAway)
			if f.code != tc.code {
				t.Fatalf("GOAWAY %v, want %v", f.code, tc.code)
			}
			p.expectClosed()
			<-c.Done()
		})
	}
}

// TestServerHeaderListLimit: a header block over the advertised limit gets
// 431 on its stream only.
func TestServerHeaderListLimit(t *testing.T) {
	_, p, ch := serverPair(t, Config{})
	p.headers(1, false, ":method", "CONNECT", ":authority", "a:1", "x-big", strings.Repeat("v", maxHeaderList))
	if f := p.next(); f.typ != http2.FrameHeaders || f.stream != 1 || f.fields[":status"] != "431" || !f.end {
		t.Fatalf("want 431 on stream 1, got %+v", f)
	}
	p.connect(3, "a:1")
	if o := accept(t, ch); o.authority != "a:1" {
		t.Fatalf("next stream %+v", o)
	}
}

// TestServerHeaderListConfigured: a configured limit is announced, enforced
// with 431, and the refusal is reported.
func TestServerHeaderListConfigured(t *testing.T) {
	refused := make(chan int, 1)
	_, p, _ := serverPair(t, Config{MaxHeaderListSize: 1 << 10, Refused: func(code int) { refused <- code }})
	f := p.next(http2.FrameSettings)
	for _, st := range f.settings {
		if st.ID == http2.SettingMaxHeaderListSize && st.Val != 1<<10 {
			t.Fatalf("announced SETTINGS_MAX_HEADER_LIST_SIZE %d, want 1024", st.Val)
		}
	}
	// fields under the limit each, over it together (a single field over
	// it is a connection error of the hpack decoder: COMPRESSION_ERROR)
	v := strings.Repeat("v", 600)
	p.headers(1, false, ":method", "CONNECT", ":authority", "a:1", "x-a", v, "x-b", v)
	if f := p.next(http2.FrameHeaders); f.stream != 1 || f.fields[":status"] != "431" {
		t.Fatalf("want 431 on stream 1, got %+v", f)
	}
	if code := <-refused; code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("reported %d, want 431", code)
	}
}

// TestServerWindowExhaustion: a peer that sends beyond the stream window
// while nobody reads loses the connection; one that a reader keeps up with
// gets its window back.
func TestServerWindowExhaustion(t *testing.T) {
	t.Run("overrun", func(t *testing.T) {
		c, p, ch := serverPair(t, Config{})
		p.connect(1, "a:1")
		o := accept(t, ch)
		o.s.Respond(http.StatusOK)
		go func() {
			chunk := make([]byte, 1<<20)
			for range initialWindow/len(chunk) + 1 {
				if p.fr.WriteData(1, false, chunk) != nil {
					return
				}
			}
		}()
		if f := p.next(http2.FrameGoAway); f.code != http2.ErrCodeFlowControl {
			t.Fatalf("GOAWAY %v", f.code)
		}
		<-c.Done()
		if _, err := io.ReadAll(o.s); !errors.Is(err, ErrConnClosed) {
			t.Fatalf("reader got %v", err)
		}
	})
	t.Run("reader keeps up", func(t *testing.T) {
		_, p, ch := serverPair(t, Config{})
		p.connect(1, "a:1")
		o := accept(t, ch)
		o.s.Respond(http.StatusOK)
		const total = 3 * initialWindow
		done := make(chan int64)
		go func() { n, _ := io.Copy(io.Discard, o.s); done <- n }()
		// send as a well-behaved client: within the stream window only
		window, connInc := int64(initialWindow), int64(0)
		chunk := make([]byte, maxFrame)
		for sent := 0; sent < total; sent += maxFrame {
			for window < maxFrame {
				f := p.next(http2.FrameWindowUpdate)
				if f.stream == 0 {
					connInc += int64(f.incr)
				} else {
					window += int64(f.incr)
				}
			}
			p.data(1, false, chunk)
			window -= maxFrame
		}
		p.data(1, true, nil)
		if n := <-done; n != total {
			t.Fatalf("read %d of %d", n, total)
		}
		for connInc == 0 {
			if f := p.next(http2.FrameWindowUpdate); f.stream == 0 {
				connInc += int64(f.incr)
			}
		}
		if connInc < connWindow/4 {
			t.Fatalf("connection window update of %d", connInc)
		}
	})
}

// TestSendWindow: a stream writes no more than the peer's windows allow,
// and goes on as the peer opens them (WINDOW_UPDATE, SETTINGS).
func TestSendWindow(t *testing.T) {
	_, p, ch := serverPair(t, Config{})
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	p.connect(1, "a:1")
	o := accept(t, ch)
	o.s.Respond(http.StatusOK)
	p.next() // the response
	wrote := make(chan error, 1)
	go func() { _, err := o.s.Write([]byte(strings.Repeat("x", 40))); wrote <- err }()
	if f := p.next(); f.typ != http2.FrameData || len(f.data) != 10 {
		t.Fatalf("first data %+v", f)
	}
	select {
	case err := <-wrote:
		t.Fatalf("write returned past the window: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	p.fr.WriteWindowUpdate(1, 5)
	if f := p.next(); len(f.data) != 5 {
		t.Fatalf("after update: %+v", f)
	}
	// a larger initial window applies to open streams
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 35})
	if f := p.next(); len(f.data) != 25 {
		t.Fatalf("after settings: %+v", f)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
}

// TestReset: a peer's RST_STREAM fails the stream's reads and writes; our
// Close before the peer finished resets the stream.
func TestReset(t *testing.T) {
	c, p, ch := serverPair(t, Config{})
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	p.connect(1, "a:1")
	o := accept(t, ch)
	o.s.Respond(http.StatusOK)
	wrote := make(chan error, 1)
	go func() { _, err := o.s.Write([]byte("blocked")); wrote <- err }()
	p.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	if err := <-wrote; !errors.Is(err, ErrStreamReset) {
		t.Fatalf("write: %v", err)
	}
	if _, err := o.s.Read(make([]byte, 1)); !errors.Is(err, ErrStreamReset) {
		t.Fatalf("read: %v", err)
	}
	p.connect(3, "a:1")
	o = accept(t, ch)
	o.s.Close()
	if f := p.next(http2.FrameRSTStream); f.stream != 3 || f.code != http2.ErrCodeCancel {
		t.Fatalf("close: %+v", f)
	}
	if c.Streams() != 0 {
		t.Fatalf("%d streams left", c.Streams())
	}
}

// TestServerGoAway: after GoAway new streams are refused; the connection
// closes when the last stream ends.
func TestServerGoAway(t *testing.T) {
	c, p, ch := serverPair(t, Config{})
	p.connect(1, "a:1")
	o := accept(t, ch)
	c.GoAway()
	if f := p.next(http2.FrameGoAway); f.code != http2.ErrCodeNo || f.lastID != 1 {
		t.Fatalf("GOAWAY %+v", f)
	}
	p.connect(3, "a:1")
	if f := p.next(http2.FrameRSTStream); f.stream != 3 || f.code != http2.ErrCodeRefusedStream {
		t.Fatalf("late stream: %+v", f)
	}
	o.s.Respond(http.StatusOK)
	p.data(1, true, nil)
	o.s.CloseWrite()
	p.expectClosed()
	<-c.Done()
}

// TestServerMaxStreams: past the advertised limit streams are refused.
func TestServerMaxStreams(t *testing.T) {
	_, p, ch := serverPair(t, Config{})
	for i := range maxStreams {
		p.connect(uint32(2*i+1), "a:1")
	}
	p.connect(2*maxStreams+1, "a:1")
	if f := p.next(http2.FrameRSTStream); f.stream != 2*maxStreams+1 || f.code != http2.ErrCodeRefusedStream {
		t.Fatalf("stream over the limit: %+v", f)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(ch) < maxStreams && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(ch) != maxStreams {
		t.Fatalf("%d streams served", len(ch))
	}
}

func TestServerBadPreface(t *testing.T) {
	a, b := net.Pipe()
	go b.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, err := NewServer(a, Config{}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
}

func TestServerIdleTimeout(t *testing.T) {
	c, _, _ := serverPair(t, Config{IdleTimeout: 50 * time.Millisecond})
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

func TestClientOpen(t *testing.T) {
	c, p := clientPair(t, Config{})
	type result struct {
		s   *Stream
		err error
	}
	open := func(ctx context.Context) chan result {
		ch := make(chan result, 1)
		go func() {
			s, err := c.Open(ctx, "10.0.0.2:8080", http.Header{"Weft-Test": {"v"}})
			ch <- result{s, err}
		}()
		return ch
	}
	res := open(context.Background())
	f := p.next(http2.FrameHeaders)
	if f.stream != 1 || f.fields[":method"] != "CONNECT" || f.fields[":authority"] != "10.0.0.2:8080" || f.fields["weft-test"] != "v" || f.end {
		t.Fatalf("request %+v", f)
	}
	p.headers(1, false, ":status", "100")
	p.headers(1, false, ":status", "200")
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	p.data(1, true, []byte("pong"))
	if b, err := io.ReadAll(r.s); string(b) != "pong" || err != nil {
		t.Fatalf("read %q %v", b, err)
	}
	r.s.Write([]byte("ping"))
	if f := p.next(); string(f.data) != "ping" {
		t.Fatalf("data %+v", f)
	}

	// refused
	res = open(context.Background())
	f = p.next(http2.FrameHeaders)
	if f.stream != 3 {
		t.Fatalf("second stream id %d", f.stream)
	}
	p.headers(3, true, ":status", strconv.Itoa(http.StatusForbidden))
	if r := <-res; !errors.Is(r.err, ErrRefused) || !strings.Contains(r.err.Error(), "403") {
		t.Fatalf("refused: %v", r.err)
	}

	// given up by the caller: the stream is reset
	ctx, cancel := context.WithCancel(context.Background())
	res = open(ctx)
	p.next(http2.FrameHeaders)
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("canceled: %v", r.err)
	}
	if f := p.next(http2.FrameRSTStream); f.stream != 5 || f.code != http2.ErrCodeCancel {
		t.Fatalf("cancel: %+v", f)
	}

	// a server GOAWAY: no new streams, an open one fails with the connection
	res = open(context.Background())
	p.next(http2.FrameHeaders)
	p.fr.WriteGoAway(5, http2.ErrCodeNo, nil)
	deadline := time.Now().Add(5 * time.Second)
	for c.Usable() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if c.Usable() {
		t.Fatal("usable after GOAWAY")
	}
	if _, err := c.Open(context.Background(), "a:1", nil); !errors.Is(err, ErrGoingAway) {
		t.Fatalf("open after GOAWAY: %v", err)
	}
	p.fr.WriteRSTStream(7, http2.ErrCodeRefusedStream)
	if r := <-res; r.err == nil {
		t.Fatal("refused stream opened")
	}
}

func TestClientBadStatus(t *testing.T) {
	c, p := clientPair(t, Config{})
	res := make(chan error, 1)
	go func() { _, err := c.Open(context.Background(), "a:1", nil); res <- err }()
	p.next(http2.FrameHeaders)
	p.headers(1, false, ":status", "abc")
	if f := p.next(http2.FrameGoAway); f.code != http2.ErrCodeProtocol {
		t.Fatalf("GOAWAY %+v", f)
	}
	if err := <-res; !errors.Is(err, ErrConnClosed) {
		t.Fatalf("open: %v", err)
	}
}

func TestClientIdleTimeout(t *testing.T) {
	c, p := clientPair(t, Config{IdleTimeout: 50 * time.Millisecond})
	res := make(chan *Stream, 1)
	go func() { s, _ := c.Open(context.Background(), "a:1", nil); res <- s }()
	p.next(http2.FrameHeaders)
	p.headers(1, false, ":status", "200")
	s := <-res
	time.Sleep(100 * time.Millisecond) // a stream is open: not idle
	if !c.Usable() {
		t.Fatal("closed with a stream open")
	}
	s.CloseWrite()
	p.data(1, true, nil)
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not closed")
	}
}

// TestHold: after Hold the reader gets what arrived before it and then
// waits, until the peer's end; what arrives later is counted by Held,
// never read, and goes back to the connection's window when the stream
// closes.
func TestHold(t *testing.T) {
	c, p, o := answeredStream(t)
	p.data(1, false, []byte("before "))
	waitBuffered(t, o.s, len("before "))
	deadline := time.Now().Add(5 * time.Second)
	o.s.Hold()
	late := bytes.Repeat([]byte("x"), 4<<10)
	p.data(1, false, late)
	for o.s.Held() != len(late) {
		if time.Now().After(deadline) {
			t.Fatalf("Held %d, want %d", o.s.Held(), len(late))
		}
		time.Sleep(time.Millisecond)
	}
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(o.s); got <- string(b) }()
	select {
	case b := <-got:
		t.Fatalf("a held stream's reader returned (%q)", b)
	case <-time.After(50 * time.Millisecond):
	}
	p.data(1, true, nil) // the peer's end ends the reading
	if b := <-got; b != "before " {
		t.Fatalf("read %q, want only what came before Hold", b)
	}
	c.mu.Lock()
	before := c.recvUnacked
	c.mu.Unlock()
	o.s.Close()
	c.mu.Lock()
	after := c.recvUnacked
	c.mu.Unlock()
	if after-before != int64(len(late)) {
		t.Fatalf("the connection's window got %d bytes back on close, want the %d held", after-before, len(late))
	}
}

// TestUnreadDataGoesBackOnReset: data a stream received and nobody read
// when the peer reset it goes back to the connection's window at once (a
// reader may never come); a reader that still reads it gets it, and the
// window is not given back twice.
func TestUnreadDataGoesBackOnReset(t *testing.T) {
	c, p, o := answeredStream(t)
	unread := bytes.Repeat([]byte("u"), 4<<10)
	p.data(1, false, unread)
	waitBuffered(t, o.s, len(unread))
	deadline := time.Now().Add(5 * time.Second)
	window := func() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.recvUnacked }
	before := window()
	p.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	for window() == before {
		if time.Now().After(deadline) {
			t.Fatal("the reset gave nothing back to the connection's window")
		}
		time.Sleep(time.Millisecond)
	}
	if got := window() - before; got != int64(len(unread)) {
		t.Fatalf("the reset gave %d bytes back, want the %d unread", got, len(unread))
	}
	b, err := io.ReadAll(o.s)
	if !bytes.Equal(b, unread) || !errors.Is(err, ErrStreamReset) {
		t.Fatalf("read %d bytes, %v after the reset; want the %d unread, then ErrStreamReset", len(b), err, len(unread))
	}
	if got := window() - before; got != int64(len(unread)) {
		t.Fatalf("reading them gave the window back again: %d bytes in all", got)
	}
}

// waitBuffered waits until s holds n received bytes, unread.
func waitBuffered(t *testing.T, s *Stream, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.rmu.Lock()
		got := len(s.rbuf) - s.roff
		s.rmu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes buffered, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// answeredStream is stream 1 of a server Conn, its CONNECT answered 200.
func answeredStream(t *testing.T) (*Conn, *peer, opened) {
	t.Helper()
	c, p, ch := serverPair(t, Config{})
	p.connect(1, "a:1")
	o := accept(t, ch)
	o.s.Respond(http.StatusOK)
	p.next(http2.FrameHeaders)
	return c, p, o
}

// countingConn counts the writes that reach the connection.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// A burst of streams writing at once leaves in one write: each writer
// yields before it flushes, so the runnable ones add their frames first.
// Over loopback TCP (a write never parks, as a pipe's would) and on one
// P, without the yield every writer finds no other queued and flushes
// alone.
func TestClientBurstLeavesInOneWrite(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	nc, b := tcpPair(t)
	p := newPeer(t, b)
	preface := make([]byte, len(clientPreface))
	cc := &countingConn{Conn: nc}
	c, err := NewClient(cc, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(b, preface); err != nil || !bytes.Equal(preface, clientPreface) {
		t.Fatalf("preface %q %v", preface, err)
	}
	go p.read()
	go c.Serve()
	t.Cleanup(func() { c.Close() })

	const n = 8
	streams := make([]*Stream, n)
	for i := range streams {
		res := make(chan error, 1)
		go func() {
			var err error
			streams[i], err = c.Open(context.Background(), "10.0.0.2:80", nil)
			res <- err
		}()
		f := p.next(http2.FrameHeaders)
		p.headers(f.stream, false, ":status", "200")
		if err := <-res; err != nil {
			t.Fatal(err)
		}
	}

	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, s := range streams {
		wg.Go(func() {
			<-start
			if _, err := s.Write([]byte("request")); err != nil {
				t.Error(err)
			}
		})
	}
	before := cc.writes.Load()
	close(start)
	wg.Wait()
	if w := cc.writes.Load() - before; w > 2 {
		t.Errorf("%d streams' frames took %d writes, want 1 (2 at most)", n, w)
	}
	got := map[uint32]bool{}
	for range n {
		f := p.next(http2.FrameData)
		if string(f.data) != "request" || got[f.stream] {
			t.Fatalf("frame %+v", f)
		}
		got[f.stream] = true
	}
}
