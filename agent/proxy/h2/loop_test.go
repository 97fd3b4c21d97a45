package h2

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/weft-mesh/weft/agent/proxy/evloop"
)

// loopTLS returns a server and a client TLS configuration for "tunnel".
func loopTLS(t *testing.T) (*tls.Config, *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tunnel"}, DNSNames: []string{"tunnel"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	srv := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS13}
	cli := &tls.Config{RootCAs: pool, ServerName: "tunnel", NextProtos: []string{"h2"}}
	return srv, cli
}

// loopServer serves tunnel connections with this package's server: a
// stream to "echo" sends back what it gets, "refuse" is answered 403,
// "reset" is opened and then reset. It returns the listener's address and
// the server connections made.
func loopServer(t *testing.T, cfg *tls.Config) (string, chan *Conn) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan *Conn, 16)
	handler := func(s *Stream, authority string, _ http.Header) {
		switch authority {
		case "echo":
			s.Respond(http.StatusOK)
			io.Copy(s, s)
			s.CloseWrite()
		case "say-and-end": // ends its side, keeps reading ours
			s.Respond(http.StatusOK)
			s.Write([]byte("said"))
			s.CloseWrite()
			io.Copy(io.Discard, s)
		case "refuse":
			s.Respond(http.StatusForbidden)
		case "reset":
			s.Respond(http.StatusOK)
			s.Close()
		}
	}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c, err := NewServer(nc, Config{Handler: handler})
				if err != nil {
					return
				}
				conns <- c
				c.Serve()
			}()
		}
	}()
	return ln.Addr().String(), conns
}

// recorder is a StreamHandler that keeps what its stream received.
type recorder struct {
	mu      sync.Mutex
	opened  bool
	drained int
	ended   int // Ended calls
	got     bytes.Buffer
	closed  chan error
}

func newRecorder() *recorder { return &recorder{closed: make(chan error, 1)} }

func (r *recorder) Opened(*LoopStream) { r.mu.Lock(); r.opened = true; r.mu.Unlock() }
func (r *recorder) Data(st *LoopStream, p []byte) {
	r.mu.Lock()
	r.got.Write(p)
	r.mu.Unlock()
	st.Consumed(len(p))
}
func (r *recorder) Drained(*LoopStream)             { r.mu.Lock(); r.drained++; r.mu.Unlock() }
func (r *recorder) Ended(*LoopStream)               { r.mu.Lock(); r.ended++; r.mu.Unlock() }
func (r *recorder) GoingAway(*LoopStream)           {}
func (r *recorder) Closed(_ *LoopStream, err error) { r.closed <- err }

func (r *recorder) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.closed:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not end")
		return nil
	}
}

// loopClient runs a loop and a LoopConn to addr in it.
func loopClient(t *testing.T, addr string, cfg *tls.Config) (*evloop.Loop, *LoopConn, chan error) {
	t.Helper()
	l, err := evloop.New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	lc, err := NewLoopConn(context.Background(), l, nc, cfg, func(err error) { closed <- err })
	if err != nil {
		t.Fatal(err)
	}
	return l, lc, closed
}

// in runs fn in the loop and waits for it.
func in(t *testing.T, l *evloop.Loop, fn func()) {
	t.Helper()
	done := make(chan struct{})
	l.Post(func() { fn(); close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the loop did not run a posted function")
	}
}

// TestLoopConnEcho sends more than the connection's and each stream's
// windows hold, on many streams at once, through this package's server,
// and checks every byte comes back on its own stream.
func TestLoopConnEcho(t *testing.T) {
	srv, cli := loopTLS(t)
	addr, _ := loopServer(t, srv)
	l, lc, _ := loopClient(t, addr, cli)
	const streams, size = 24, 1500 << 10 // 36 MiB: over the 16 MiB connection window
	sent := make([][]byte, streams)
	recs := make([]*recorder, streams)
	held := make([]bool, streams)
	for i := range streams {
		sent[i] = make([]byte, size)
		rand.Read(sent[i])
		recs[i] = newRecorder()
	}
	in(t, l, func() {
		for i := range streams {
			st, err := lc.Open("echo", nil, recs[i])
			if err != nil {
				t.Errorf("open: %v", err)
				return
			}
			all, _ := st.Write(sent[i])
			held[i] = !all
			st.CloseWrite()
		}
	})
	for i, r := range recs {
		if err := r.wait(t); err != nil {
			t.Fatalf("stream %d ended with %v", i, err)
		}
		r.mu.Lock()
		if held[i] && r.drained == 0 {
			t.Errorf("stream %d: its write waited and Drained was not called", i)
		}
		if !r.opened || !bytes.Equal(r.got.Bytes(), sent[i]) {
			t.Errorf("stream %d: opened %v, got %d bytes back of %d sent, equal %v", i, r.opened, r.got.Len(), size, bytes.Equal(r.got.Bytes(), sent[i]))
		}
		r.mu.Unlock()
	}
	in(t, l, func() {
		if n := lc.Streams(); n != 0 {
			t.Errorf("%d streams left open after all ended", n)
		}
	})
}

func TestLoopConnRefusedAndReset(t *testing.T) {
	srv, cli := loopTLS(t)
	addr, _ := loopServer(t, srv)
	l, lc, _ := loopClient(t, addr, cli)
	refused, reset := newRecorder(), newRecorder()
	in(t, l, func() {
		st, _ := lc.Open("refuse", nil, refused)
		st.Write([]byte("not for a refused stream"))
		lc.Open("reset", nil, reset)
	})
	if err := refused.wait(t); !errors.Is(err, ErrRefused) {
		t.Errorf("refused stream ended with %v, want ErrRefused", err)
	}
	if refused.opened {
		t.Error("a refused stream was reported opened")
	}
	if err := reset.wait(t); !errors.Is(err, ErrStreamReset) {
		t.Errorf("reset stream ended with %v, want ErrStreamReset", err)
	}
	// the connection goes on serving
	ok := newRecorder()
	in(t, l, func() {
		st, err := lc.Open("echo", nil, ok)
		if err != nil {
			t.Errorf("open after a reset: %v", err)
			return
		}
		st.Write([]byte("still here"))
		st.CloseWrite()
	})
	if err := ok.wait(t); err != nil || ok.got.String() != "still here" {
		t.Errorf("echo after a reset: %q, %v", ok.got.String(), err)
	}
}

// TestLoopConnPeerEndsFirst: a peer that ends its side while ours is open
// is told to the handler (Ended) once its data came, and the stream ends
// (Closed) only once ours ends too.
func TestLoopConnPeerEndsFirst(t *testing.T) {
	srv, cli := loopTLS(t)
	addr, _ := loopServer(t, srv)
	l, lc, _ := loopClient(t, addr, cli)
	r := newRecorder()
	var st *LoopStream
	in(t, l, func() { st, _ = lc.Open("say-and-end", nil, r) })
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		ended, got := r.ended, r.got.String()
		r.mu.Unlock()
		if ended > 0 {
			if ended != 1 || got != "said" {
				t.Fatalf("Ended %d times with %q received, want once after \"said\"", ended, got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ended not called; received %q", got)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-r.closed:
		t.Fatalf("Closed(%v) while our side is open", err)
	case <-time.After(50 * time.Millisecond):
	}
	in(t, l, func() { st.Write([]byte("late")); st.CloseWrite() })
	if err := r.wait(t); err != nil {
		t.Fatalf("the stream ended with %v once both sides ended", err)
	}
	in(t, l, func() {
		if n := lc.Streams(); n != 0 {
			t.Errorf("%d streams left open after both sides ended", n)
		}
	})
}

// TestLoopConnGoAway: after the server's GOAWAY no stream opens; the open
// one finishes, and then the connection closes.
func TestLoopConnGoAway(t *testing.T) {
	srv, cli := loopTLS(t)
	addr, conns := loopServer(t, srv)
	l, lc, closed := loopClient(t, addr, cli)
	open := newRecorder()
	var st *LoopStream
	in(t, l, func() { st, _ = lc.Open("echo", nil, open) })
	server := <-conns
	// the stream is open on the server before the GOAWAY
	deadline := time.Now().Add(5 * time.Second)
	for server.Streams() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	server.GoAway()
	deadline = time.Now().Add(5 * time.Second)
	for {
		var usable bool
		in(t, l, func() { usable = lc.Usable() })
		if !usable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection stayed usable after the peer's GOAWAY")
		}
		time.Sleep(5 * time.Millisecond)
	}
	in(t, l, func() {
		if _, err := lc.Open("echo", nil, newRecorder()); !errors.Is(err, ErrGoingAway) {
			t.Errorf("open after GOAWAY: %v, want ErrGoingAway", err)
		}
		st.Write([]byte("last words"))
		st.CloseWrite()
	})
	if err := open.wait(t); err != nil || open.got.String() != "last words" {
		t.Fatalf("the open stream: %q, %v", open.got.String(), err)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, ErrGoingAway) {
			t.Errorf("connection closed with %v, want ErrGoingAway", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not close once its last stream ended")
	}
}

// TestLoopConnFramesSplit: a header block in HEADERS and CONTINUATION
// frames, arriving a few bytes at a time, is read whole; a DATA frame past
// the stream's window fails the connection with FLOW_CONTROL_ERROR.
func TestLoopConnFramesSplit(t *testing.T) {
	srv, cli := loopTLS(t)
	addr, peers := rawPeer(t, srv)
	l, lc, closed := loopClient(t, addr, cli)
	p := <-peers
	p.fr.WriteSettings()
	rec := newRecorder()
	in(t, l, func() { lc.Open("split", nil, rec) })
	h := p.next(http2.FrameHeaders)
	if h.fields[":method"] != "CONNECT" || h.fields[":authority"] != "split" {
		t.Fatalf("CONNECT frame fields %v", h.fields)
	}
	// :status 200 and a long field, split over HEADERS and CONTINUATION,
	// written a few bytes at a time
	p.hbuf.Reset()
	p.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	p.henc.WriteField(hpack.HeaderField{Name: "x-long", Value: string(bytes.Repeat([]byte("v"), 3000))})
	block := bytes.Clone(p.hbuf.Bytes())
	var raw bytes.Buffer
	w := http2.NewFramer(&raw, nil)
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: h.stream, BlockFragment: block[:1000]})
	w.WriteContinuation(h.stream, false, block[1000:2000])
	w.WriteContinuation(h.stream, true, block[2000:])
	w.WriteData(h.stream, false, []byte("hello"))
	for b := raw.Bytes(); len(b) > 0; {
		n := min(len(b), 7)
		if _, err := p.nc.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
		time.Sleep(time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec.mu.Lock()
		got, opened := rec.got.String(), rec.opened
		rec.mu.Unlock()
		if opened && got == "hello" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after split frames: opened %v, data %q", opened, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// past the window: 4 MiB + 1 MiB not consumed (the handler consumes,
	// so send on a stream whose handler does not)
	hold := &holder{closed: make(chan error, 1)}
	in(t, l, func() { lc.Open("hold", nil, hold) })
	h2f := p.next(http2.FrameHeaders)
	p.hbuf.Reset()
	p.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h2f.stream, BlockFragment: p.hbuf.Bytes(), EndHeaders: true})
	chunk := make([]byte, 1<<20)
	for range 5 {
		p.fr.WriteData(h2f.stream, false, chunk)
	}
	ga := p.next(http2.FrameGoAway)
	if ga.code != http2.ErrCodeFlowControl {
		t.Errorf("GOAWAY code %v, want FLOW_CONTROL_ERROR", ga.code)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, ErrFlowControl) {
			t.Errorf("connection closed with %v, want ErrFlowControl", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection did not close")
	}
	if err := rec.wait(t); err == nil {
		t.Error("an open stream of a failed connection ended without an error")
	}
}

// TestLoopConnSendsPastLowWater: with windows that never run out, a large
// write goes out whole, though each batch holds back what is over lowWater
// and the socket may take every flush at once (no Writable event).
func TestLoopConnSendsPastLowWater(t *testing.T) {
	srv, cli := loopTLS(t)
	addr, peers := rawPeer(t, srv)
	l, lc, _ := loopClient(t, addr, cli)
	p := <-peers
	p.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	p.fr.WriteWindowUpdate(0, 1<<31-1-65535)
	rec := newRecorder()
	var st *LoopStream
	in(t, l, func() { st, _ = lc.Open("big", nil, rec) })
	h := p.next(http2.FrameHeaders)
	p.hbuf.Reset()
	p.henc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
	p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: h.stream, BlockFragment: p.hbuf.Bytes(), EndHeaders: true})
	const size = 8 << 20
	in(t, l, func() {
		st.Write(make([]byte, size))
		st.CloseWrite()
	})
	got := 0
	for {
		f := p.next(http2.FrameData)
		got += len(f.data)
		if f.end {
			break
		}
	}
	if got != size {
		t.Fatalf("peer got %d bytes, want %d", got, size)
	}
}

// rawPeer listens for one tunnel connection and hands over its server end
// as a peer speaking raw frames, once it read the client preface.
func rawPeer(t *testing.T, srv *tls.Config) (string, chan *peer) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	peers := make(chan *peer, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		p := newPeer(t, nc)
		buf := make([]byte, len(clientPreface))
		if _, err := io.ReadFull(nc, buf); err != nil {
			return
		}
		go p.read()
		peers <- p
	}()
	return ln.Addr().String(), peers
}

// holder is a StreamHandler that never consumes what it gets.
type holder struct{ closed chan error }

func (*holder) Opened(*LoopStream)                {}
func (*holder) Data(*LoopStream, []byte)          {}
func (*holder) Drained(*LoopStream)               {}
func (*holder) Ended(*LoopStream)                 {}
func (*holder) GoingAway(*LoopStream)             {}
func (h *holder) Closed(_ *LoopStream, err error) { h.closed <- err }
