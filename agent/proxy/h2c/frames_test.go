package h2c

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weft-mesh/weft/agent/proxy/sock/socktest"
)

// frame is a copy of one frame the peer read (the Framer reuses buffers).
type frame struct {
	typ    http2.FrameType
	stream uint32
	end    bool // END_STREAM
	ack    bool
	data   []byte
	fields map[string]string
	code   http2.ErrCode
	incr   uint32
	lastID uint32
}

// peer is the far end of a connection under test, speaking raw frames.
type peer struct {
	t      *testing.T
	nc     net.Conn
	wmu    sync.Mutex
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
		case *http2.HeadersFrame: // a peer reading raw header blocks
			fc.data, fc.end = bytes.Clone(f.HeaderBlockFragment()), f.StreamEnded()
		case *http2.RSTStreamFrame:
			fc.code = f.ErrCode
		case *http2.GoAwayFrame:
			fc.code, fc.lastID = f.ErrCode, f.LastStreamID
		case *http2.WindowUpdateFrame:
			fc.incr = f.Increment
		case *http2.PingFrame:
			fc.data, fc.ack = bytes.Clone(f.Data[:]), f.IsAck()
		}
		p.frames <- fc
	}
}

// next returns the next frame of one of types (any but SETTINGS and
// WINDOW_UPDATE when none), failing after a timeout.
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
			if len(types) > 0 && !slices.Contains(types, f.typ) {
				continue
			}
			return f
		case <-timeout:
			p.t.Fatalf("no %v frame", types)
		}
	}
}

// expectClosed waits until the connection closed.
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
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.hbuf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		p.henc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: p.hbuf.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		p.t.Fatal(err)
	}
}

func (p *peer) get(id uint32, path string, extra ...string) {
	p.headers(id, true, append([]string{":method", "GET", ":scheme", "http", ":path", path, ":authority", "svc"}, extra...)...)
}

func (p *peer) data(id uint32, end bool, b []byte) {
	p.t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := p.fr.WriteData(id, end, b); err != nil {
		p.t.Fatal(err)
	}
}

func (p *peer) write(f func(fr *http2.Framer) error) {
	p.t.Helper()
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if err := f(p.fr); err != nil {
		p.t.Fatal(err)
	}
}

// serverPeer starts a ServerConn with h and a raw peer as its client,
// preface and settings sent.
func serverPeer(t *testing.T, cfg ServerConfig, h http.HandlerFunc, setup ...func(*peer)) (*ServerConn, *peer) {
	t.Helper()
	a, b := socktest.Pair(t)
	p := newPeer(t, b)
	cfg.Handler = h
	b.Write(clientPreface)
	p.fr.WriteSettings()
	sc, err := NewServerConn(a, nil, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(p)
	}
	go p.read()
	go sc.Serve(context.Background())
	t.Cleanup(func() { sc.Close() })
	return sc, p
}

func echoHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Path", r.URL.RequestURI())
	w.Header().Set("X-Method", r.Method)
	w.Header().Set("X-Host", r.Host)
	b, _ := io.ReadAll(r.Body)
	w.Write(b)
}

func TestServerAnswersInOneHeadersAndData(t *testing.T) {
	_, p := serverPeer(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 || r.Host != "svc" || r.URL.Path != "/a" || r.URL.RawQuery != "b=1" || r.Header.Get("X-Test") != "yes" || r.ContentLength != 0 {
			t.Errorf("request %+v", r)
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello")
	})
	p.get(1, "/a?b=1", "x-test", "yes")
	h := p.next()
	if h.typ != http2.FrameHeaders || h.fields[":status"] != "200" || h.fields["content-type"] != "text/plain" || h.end {
		t.Fatalf("headers %+v", h)
	}
	d := p.next()
	if d.typ != http2.FrameData || string(d.data) != "hello" || !d.end {
		t.Fatalf("data %+v", d)
	}
}

func TestServerRequestBodyAndContentLength(t *testing.T) {
	_, p := serverPeer(t, ServerConfig{}, echoHandler)
	p.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "svc", "content-length", "6")
	p.data(1, false, []byte("abc"))
	p.data(1, true, []byte("def"))
	if h := p.next(); h.fields[":status"] != "200" {
		t.Fatalf("headers %+v", h)
	}
	if d := p.next(); string(d.data) != "abcdef" || !d.end {
		t.Fatalf("data %+v", d)
	}
	// a body longer than its content-length is malformed: reset
	p.headers(3, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "svc", "content-length", "2")
	p.data(3, true, []byte("abc"))
	if f := p.next(http2.FrameRSTStream); f.stream != 3 || f.code != http2.ErrCodeProtocol {
		t.Fatalf("content-length overrun: %+v", f)
	}
}

func TestServerTrailers(t *testing.T) {
	_, p := serverPeer(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Trailer.Get("X-Req-Trailer") != "t1" {
			t.Errorf("request trailer %v", r.Trailer)
		}
		w.Header().Set("Trailer", "X-Declared")
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		w.Write([]byte("msg"))
		w.(http.Flusher).Flush()
		w.Header().Set("X-Declared", "d")
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "7")
	})
	p.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/svc/M", ":authority", "svc", "te", "trailers", "trailer", "x-req-trailer")
	p.data(1, false, []byte("x"))
	p.headers(1, true, "x-req-trailer", "t1")
	if h := p.next(); h.fields[":status"] != "200" || h.end {
		t.Fatalf("headers %+v", h)
	}
	if d := p.next(); string(d.data) != "msg" || d.end {
		t.Fatalf("data %+v", d)
	}
	tr := p.next()
	if tr.typ != http2.FrameHeaders || !tr.end || tr.fields["grpc-status"] != "7" || tr.fields["x-declared"] != "d" {
		t.Fatalf("trailers %+v", tr)
	}
}

func TestServerTrailersOnly(t *testing.T) {
	_, p := serverPeer(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Grpc-Status", "5")
	})
	p.get(1, "/svc/M")
	h := p.next()
	if h.fields[":status"] != "200" || h.fields["grpc-status"] != "5" || !h.end {
		t.Fatalf("trailers-only answer %+v", h)
	}
}

func TestServerMalformedRequestsAreReset(t *testing.T) {
	_, p := serverPeer(t, ServerConfig{}, echoHandler)
	cases := [][]string{
		{":method", "GET", ":scheme", "http", ":authority", "svc"},                                        // no :path
		{":method", "GET", ":scheme", "http", ":path", "/", "connection", "close"},                        // connection-specific
		{":method", "GET", ":scheme", "http", ":path", "/", "te", "gzip"},                                 // te other than trailers
		{":method", "GET", ":scheme", "http", ":path", "/", "transfer-encoding", "chunked"},               // connection-specific
		{":method", "GET", ":scheme", "http", ":path", "/", "Upper", "case"},                              // upper-case name
		{":method", "GET", ":scheme", "http", ":path", "/", "content-length", "1", "content-length", "2"}, // two lengths
		{":path", "/", ":method", "GET", ":scheme", "http", "x", "y", ":authority", "late"},               // pseudo after regular
	}
	for i, fields := range cases {
		id := uint32(2*i + 1)
		p.headers(id, true, fields...)
		if f := p.next(); f.typ != http2.FrameRSTStream || f.stream != id || f.code != http2.ErrCodeProtocol {
			t.Fatalf("case %d %v: %+v, want RST_STREAM PROTOCOL_ERROR", i, fields, f)
		}
	}
	// the connection still serves
	p.get(99, "/ok")
	if h := p.next(); h.fields[":status"] != "200" {
		t.Fatalf("after malformed requests: %+v", h)
	}
}

func TestServerHeaderListTooLargeGets431(t *testing.T) {
	var refused []int
	var mu sync.Mutex
	_, p := serverPeer(t, ServerConfig{MaxHeaderListSize: 1024, Refused: func(s int) { mu.Lock(); refused = append(refused, s); mu.Unlock() }},
		func(w http.ResponseWriter, r *http.Request) { t.Error("handler ran for a header over the limit") })
	v := strings.Repeat("a", 400)
	p.get(1, "/", "x-a", v, "x-b", v, "x-c", v)
	if h := p.next(); h.fields[":status"] != "431" || !h.end {
		t.Fatalf("answer %+v, want 431", h)
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(refused, []int{431}) {
		t.Fatalf("refused %v", refused)
	}
}

func TestServerClientResetCancelsTheRequest(t *testing.T) {
	canceled := make(chan struct{})
	started := make(chan struct{})
	_, p := serverPeer(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(canceled)
	})
	p.get(1, "/slow")
	<-started
	p.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(1, http2.ErrCodeCancel) })
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the request's context was not canceled by RST_STREAM")
	}
}

func TestServerMaxConcurrentStreams(t *testing.T) {
	release := make(chan struct{})
	_, p := serverPeer(t, ServerConfig{MaxConcurrentStreams: 2}, func(w http.ResponseWriter, r *http.Request) {
		<-release
	})
	p.get(1, "/")
	p.get(3, "/")
	p.get(5, "/")
	if f := p.next(); f.typ != http2.FrameRSTStream || f.stream != 5 || f.code != http2.ErrCodeRefusedStream {
		t.Fatalf("third stream: %+v, want RST_STREAM REFUSED_STREAM", f)
	}
	close(release)
	p.next()
	p.next()
}

func TestServerFlowControl(t *testing.T) {
	const window = 1 << 14
	got := make(chan int, 1)
	_, p := serverPeer(t, ServerConfig{StreamWindow: window, ConnWindow: window}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/noread" {
			<-r.Context().Done()
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		got <- int(n)
	})
	// the peer may send a window's worth; the rest after WINDOW_UPDATEs
	p.headers(1, false, ":method", "POST", ":scheme", "http", ":path", "/", ":authority", "svc")
	const total = 10 * window
	sent, credit := 0, window
	chunk := bytes.Repeat([]byte("x"), 4096)
	for sent < total {
		for credit >= len(chunk) && sent < total {
			p.data(1, false, chunk)
			sent += len(chunk)
			credit -= len(chunk)
		}
		if sent >= total {
			break
		}
		f := p.next(http2.FrameWindowUpdate)
		if f.stream == 1 {
			credit += int(f.incr)
		}
	}
	p.data(1, true, nil)
	if n := <-got; n != total {
		t.Fatalf("handler read %d bytes, want %d", n, total)
	}
	// more than the window at once is a flow-control error
	p.headers(3, false, ":method", "POST", ":scheme", "http", ":path", "/noread", ":authority", "svc")
	big := bytes.Repeat([]byte("y"), window)
	p.data(3, false, big)
	p.data(3, false, big)
	for {
		f := p.next(http2.FrameRSTStream, http2.FrameGoAway)
		if f.code == http2.ErrCodeFlowControl {
			break
		}
	}
}

func TestServerLargeResponseWaitsForWindow(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	_, p := serverPeer(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	p.get(1, "/big")
	if h := p.next(); h.fields[":status"] != "200" {
		t.Fatalf("headers %+v", h)
	}
	var got []byte
	for len(got) < 65535 {
		f := p.next(http2.FrameData)
		got = append(got, f.data...)
	}
	if len(got) != 65535 {
		t.Fatalf("sent %d bytes past the initial window", len(got))
	}
	select {
	case f := <-p.frames:
		if f.typ == http2.FrameData {
			t.Fatalf("DATA beyond the window: %d bytes", len(f.data))
		}
	case <-time.After(100 * time.Millisecond):
	}
	p.write(func(fr *http2.Framer) error {
		fr.WriteWindowUpdate(0, 1<<20)
		return fr.WriteWindowUpdate(1, 1<<20)
	})
	for {
		f := p.next(http2.FrameData)
		got = append(got, f.data...)
		if f.end {
			break
		}
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("body of %d bytes differs", len(got))
	}
}

func TestServerGoAwayLetsStreamsFinish(t *testing.T) {
	release := make(chan struct{})
	sc, p := serverPeer(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		<-release
		io.WriteString(w, "late")
	})
	p.get(1, "/")
	time.Sleep(50 * time.Millisecond)
	sc.GoAway()
	if f := p.next(); f.typ != http2.FrameGoAway || f.lastID != 1 || f.code != http2.ErrCodeNo {
		t.Fatalf("%+v, want GOAWAY last 1", f)
	}
	p.get(3, "/") // after the GOAWAY: refused
	if f := p.next(); f.typ != http2.FrameRSTStream || f.stream != 3 || f.code != http2.ErrCodeRefusedStream {
		t.Fatalf("%+v, want stream 3 refused", f)
	}
	close(release)
	if f := p.next(); f.stream != 1 || f.fields[":status"] != "200" {
		t.Fatalf("%+v", f)
	}
	if f := p.next(); string(f.data) != "late" || !f.end {
		t.Fatalf("%+v", f)
	}
	p.expectClosed()
}

func TestServerPingAndSettings(t *testing.T) {
	_, p := serverPeer(t, ServerConfig{}, echoHandler)
	p.write(func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1, 2, 3}) })
	if f := p.next(http2.FramePing); !f.ack || f.data[2] != 3 {
		t.Fatalf("ping answer %+v", f)
	}
	p.write(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	})
	for {
		if f := p.next(http2.FrameSettings); f.ack {
			break
		}
	}
}

func TestServerProtocolErrorsCloseTheConnection(t *testing.T) {
	for name, write := range map[string]func(fr *http2.Framer) error{
		"even stream": func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, EndHeaders: true})
		},
		"data on idle stream": func(fr *http2.Framer) error { return fr.WriteData(7, false, []byte("x")) },
		"push promise": func(fr *http2.Framer) error {
			return fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		},
		"window overflow": func(fr *http2.Framer) error {
			return fr.WriteWindowUpdate(0, 1<<31-1)
		},
		"bad setting": func(fr *http2.Framer) error {
			return fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 31})
		},
	} {
		t.Run(name, func(t *testing.T) {
			_, p := serverPeer(t, ServerConfig{}, echoHandler)
			p.write(write)
			if f := p.next(http2.FrameGoAway); f.code == http2.ErrCodeNo {
				t.Fatalf("GOAWAY %v", f.code)
			}
			p.expectClosed()
		})
	}
}

// TestServerResetsAnUnwantedBody: a handler that answers without reading
// the whole body (or closes it) ends the stream with RST_STREAM NO_ERROR,
// so the stream leaves the table although the client never ends it.
func TestServerResetsAnUnwantedBody(t *testing.T) {
	sc, p := serverPeer(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/close" {
			r.Body.Close()
		}
		io.WriteString(w, "early")
	})
	for i, path := range []string{"/ignore", "/close"} {
		id := uint32(2*i + 1)
		p.headers(id, false, ":method", "POST", ":scheme", "http", ":path", path, ":authority", "svc")
		p.data(id, false, []byte("more to come"))
		p.next(http2.FrameHeaders)
		if f := p.next(http2.FrameData); !f.end {
			t.Fatalf("%s: answer not ended: %+v", path, f)
		}
		if f := p.next(http2.FrameRSTStream); f.stream != id || f.code != http2.ErrCodeNo {
			t.Fatalf("%s: %+v, want RST_STREAM NO_ERROR", path, f)
		}
	}
	sc.c.mu.Lock()
	n := len(sc.c.streams)
	sc.c.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d streams left in the table", n)
	}
}

// TestServerHonoursThePeersHeaderTable: once a client announces a header
// table of 0 (SETTINGS_HEADER_TABLE_SIZE), the next header block starts
// with a dynamic table size update to 0 (RFC 7541 4.2) and decodes
// without a dynamic table.
func TestServerHonoursThePeersHeaderTable(t *testing.T) {
	_, p := serverPeer(t, ServerConfig{}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Custom-Header", "a value worth indexing")
	}, func(p *peer) { p.fr.ReadMetaHeaders = nil })
	p.write(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
	})
	for {
		if f := p.next(http2.FrameSettings); f.ack {
			break
		}
	}
	dec := hpack.NewDecoder(0, nil)
	for i := uint32(1); i < 8; i += 2 {
		p.get(i, "/")
		f := p.next(http2.FrameHeaders)
		if i == 1 && (len(f.data) == 0 || f.data[0] != 0x20) {
			t.Fatalf("first block after the setting starts % x, want a table size update to 0 (20)", f.data[:min(len(f.data), 4)])
		}
		fields, err := dec.DecodeFull(f.data)
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if len(fields) < 2 || fields[0].Value != "200" {
			t.Fatalf("answer %d: %v", i, fields)
		}
	}
}

// TestServerBoundsHandlersOfResetStreams: streams opened and reset at once
// (CVE-2023-44487) get no more handlers running than the stream limit.
func TestServerBoundsHandlersOfResetStreams(t *testing.T) {
	release := make(chan struct{})
	var running, peak atomic.Int32
	_, p := serverPeer(t, ServerConfig{MaxConcurrentStreams: 4}, func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		for {
			if m := peak.Load(); n <= m || peak.CompareAndSwap(m, n) {
				break
			}
		}
		<-release // a handler slow to notice its reset
		running.Add(-1)
	})
	refused := 0
	for i := uint32(1); i < 40; i += 2 {
		p.get(i, "/")
		p.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(i, http2.ErrCodeCancel) })
	}
	p.get(41, "/")
	for {
		f := p.next(http2.FrameRSTStream)
		if f.code == http2.ErrCodeRefusedStream {
			refused++
		}
		if f.stream == 41 {
			break
		}
	}
	close(release)
	if n := peak.Load(); n > 4 {
		t.Fatalf("%d handlers ran at once, limit 4", n)
	}
	if refused < 15 {
		t.Fatalf("%d streams refused", refused)
	}
}
