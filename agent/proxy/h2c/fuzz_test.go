package h2c

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// wireConn is a net.Conn that reads a fixed input and discards writes.
type wireConn struct {
	r io.Reader
}

func (c *wireConn) Read(b []byte) (int, error)       { return c.r.Read(b) }
func (c *wireConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *wireConn) Close() error                     { return nil }
func (c *wireConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *wireConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *wireConn) SetDeadline(time.Time) error      { return nil }
func (c *wireConn) SetReadDeadline(time.Time) error  { return nil }
func (c *wireConn) SetWriteDeadline(time.Time) error { return nil }

// frames builds a seed input from frame writes.
func frames(write func(fr *http2.Framer, hb func(fields ...string) []byte)) []byte {
	var buf, hbuf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	fr.AllowIllegalWrites = true
	enc := hpack.NewEncoder(&hbuf)
	hb := func(fields ...string) []byte {
		hbuf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(hbuf.Bytes())
	}
	write(fr, hb)
	return buf.Bytes()
}

func seeds(f *testing.F) {
	f.Add(frames(func(fr *http2.Framer, hb func(...string) []byte) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb(":method", "POST", ":scheme", "http", ":path", "/a", ":authority", "svc", ":status", "200", "content-length", "10", "trailer", "x-t"), EndHeaders: true})
		fr.WriteData(1, false, []byte("hello"))
		fr.WriteWindowUpdate(0, 1000)
		fr.WriteWindowUpdate(1, 1000)
		fr.WriteData(1, false, []byte("world"))
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb("x-t", "v", "grpc-status", "0"), EndHeaders: true, EndStream: true})
		fr.WritePing(false, [8]byte{1})
	}))
	f.Add(frames(func(fr *http2.Framer, hb func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb(":method", "GET", ":scheme", "http", ":path", "/", ":status", "100"), EndHeaders: true})
		fr.WriteRSTStream(1, http2.ErrCodeCancel)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb(":method", "GET", ":path", "/", ":status", "200"), EndHeaders: false})
		fr.WriteContinuation(3, true, hb("x", "y"))
		fr.WriteGoAway(3, http2.ErrCodeNo, []byte("bye"))
	}))
	f.Add(frames(func(fr *http2.Framer, hb func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb(":method", "GET", ":scheme", "http", ":path", "/", ":status", "200", "te", "trailers"), EndHeaders: true, PadLength: 3})
		fr.WriteDataPadded(1, false, []byte("padded"), []byte{0, 0, 0, 0})
		fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 3})
		fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 14}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
		fr.WriteSettingsAck()
		fr.WriteRawFrame(0x42, 0, 1, []byte("unknown"))
		fr.WriteData(1, true, []byte(strings.Repeat("z", 100)))
	}))
	f.Add(frames(func(fr *http2.Framer, hb func(...string) []byte) {
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb(":method", "CONNECT", ":authority", "a:1", ":status", "204"), EndHeaders: true, EndStream: true})
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: hb(":method", "GET", ":scheme", "http", ":path", "/", "connection", "close"), EndHeaders: true})
		fr.WriteData(3, true, nil)
		fr.WriteWindowUpdate(1, 1<<31-1)
		fr.WriteWindowUpdate(1, 1<<31-1)
	}))
	f.Add([]byte{0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0}) // WINDOW_UPDATE of 0
	f.Add([]byte{0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1})    // a frame far too large
}

// FuzzServer feeds a server connection arbitrary client bytes (after the
// preface): it must neither panic nor hang, whatever the frames.
func FuzzServer(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		nc := &wireConn{r: io.MultiReader(bytes.NewReader(clientPreface), bytes.NewReader(in))}
		sc, err := NewServerConn(nc, nil, &ServerConfig{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-T")
			w.Write([]byte("answer"))
			io.Copy(io.Discard, r.Body)
			w.Header().Set("X-T", "t")
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		}), MaxConcurrentStreams: 10, StreamWindow: 1 << 10, ConnWindow: 1 << 12})
		if err != nil {
			t.Fatal(err)
		}
		sc.Serve(context.Background()) // returns at the end of the input
		<-sc.Done()
	})
}

// FuzzClient feeds a client connection with one request in flight
// arbitrary server bytes: it must neither panic nor hang.
func FuzzClient(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		start := make(chan struct{})
		nc := &wireConn{r: io.MultiReader(gate(start), bytes.NewReader(in))}
		cc, err := NewClientConn(nc, ClientConfig{StreamWindow: 1 << 10})
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			resp *http.Response
			err  error
		}
		res := make(chan result, 1)
		go func() {
			req, _ := http.NewRequest("POST", "http://svc/a", strings.NewReader("body"))
			resp, err := cc.RoundTrip(req)
			res <- result{resp, err}
		}()
		for cc.Streams() == 0 {
			time.Sleep(10 * time.Microsecond)
		}
		close(start) // the server's bytes come once stream 1 exists
		<-cc.Done()
		r := <-res
		if r.resp != nil {
			io.Copy(io.Discard, r.resp.Body)
			r.resp.Body.Close()
		}
	})
}

// gate is a reader that gives nothing until start is closed, then EOF.
type gate chan struct{}

func (g gate) Read([]byte) (int, error) {
	<-g
	return 0, io.EOF
}
