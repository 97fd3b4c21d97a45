package h2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/weft-mesh/weft/agent/proxy/sock"
)

// tcpPair is a connected loopback TCP pair with small socket buffers, set
// before the handshake (shrinking them afterwards stalls TCP on zero-window
// probes), so a stalled reader makes the writer's non-blocking writes come
// up short.
func tcpPair(t *testing.T) (w, r *net.TCPConn) {
	t.Helper()
	small := func(opt int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			var err error
			rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 64<<10) })
			return err
		}
	}
	lc := net.ListenConfig{Control: small(syscall.SO_RCVBUF)}
	l, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := net.Dialer{Control: small(syscall.SO_SNDBUF)}
	c, err := d.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	w, r = c.(*net.TCPConn), a.(*net.TCPConn)
	t.Cleanup(func() { w.Close(); r.Close() })
	return w, r
}

// pattern is n bytes that say where they are: reordering shows.
func pattern(off, n int) []byte {
	b := make([]byte, 0, n+8)
	for i := off / 8; len(b) < n; i++ {
		b = binary.BigEndian.AppendUint64(b, uint64(i))
	}
	return b[:n]
}

func openedStream(t *testing.T) (*Stream, *peer) {
	t.Helper()
	_, p, ch := serverPair(t, Config{})
	p.connect(1, "10.0.0.1:80")
	o := accept(t, ch)
	if err := o.s.Respond(http.StatusOK); err != nil {
		t.Fatal(err)
	}
	if f := p.next(); f.typ != http2.FrameHeaders {
		t.Fatalf("response %+v", f)
	}
	return o.s, p
}

func waitSink(t *testing.T, s *Stream) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s.rmu.Lock()
		ok := s.sink.try != nil
		s.rmu.Unlock()
		if ok {
			return
		}
	}
	t.Fatal("WriteTo never installed its sink")
}

// TestWriteToSocket: while WriteTo runs towards a TCP socket, the
// connection's reader writes arriving data to the socket itself; when the
// socket is full the rest is buffered and WriteTo writes it; the bytes
// arrive complete and in order, the window is returned, and the peer's
// END_STREAM ends WriteTo with nil. The same for a sock.Conn.
func TestWriteToSocket(t *testing.T) {
	t.Run("TCPConn", func(t *testing.T) { testWriteToSocket(t, func(c *net.TCPConn) io.Writer { return c }) })
	t.Run("sock.Conn", func(t *testing.T) { testWriteToSocket(t, func(c *net.TCPConn) io.Writer { return sock.Wrap(c) }) })
}

func testWriteToSocket(t *testing.T, wrap func(*net.TCPConn) io.Writer) {
	s, p := openedStream(t)
	tw, r := tcpPair(t)
	w := wrap(tw)
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 1)
	go func() { n, err := s.WriteTo(w); done <- result{n, err} }()
	waitSink(t, s)

	// an idle socket takes a small frame at once, from the reader goroutine
	first := pattern(0, 1000)
	p.data(1, false, first)
	got := make([]byte, len(first))
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("first frame: %v", err)
	}
	s.rmu.Lock()
	inline := s.sink.n
	s.rmu.Unlock()
	if inline != int64(len(first)) {
		t.Fatalf("%d bytes went straight to the socket, want %d", inline, len(first))
	}

	// a stalled reader: the socket fills and the rest goes through WriteTo
	const total = 3 << 20 // within the stream's 4 MiB window
	off := len(first)
	go func() {
		for off < total {
			n := min(maxFrame, total-off)
			p.data(1, off+n == total, pattern(off, n))
			off += n
		}
	}()
	time.Sleep(100 * time.Millisecond)
	s.rmu.Lock()
	queued := len(s.rbuf)-s.roff > 0 || s.sink.busy
	s.rmu.Unlock()
	if !queued {
		t.Fatal("a stalled socket took 3 MiB: the buffered path was not exercised")
	}
	rest, err := io.ReadAll(io.LimitReader(r, total-int64(len(first))))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rest, pattern(len(first), total-len(first))) {
		t.Fatal("bytes reordered or lost between the direct and the buffered path")
	}
	select {
	case res := <-done:
		if res.err != nil || res.n != total {
			t.Fatalf("WriteTo = %d, %v; want %d, nil", res.n, res.err, total)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WriteTo did not return after END_STREAM")
	}
	// every byte delivered, directly or buffered, went back to the
	// connection's window (below the 4 MiB at which it sends an update)
	s.c.mu.Lock()
	returned := s.c.recvUnacked
	s.c.mu.Unlock()
	if returned != total {
		t.Fatalf("%d bytes returned to the connection window, want %d", returned, total)
	}
}

// TestWriteToReset: a reset ends WriteTo with the reset, after what came
// before it was written.
func TestWriteToReset(t *testing.T) {
	s, p := openedStream(t)
	w, r := tcpPair(t)
	done := make(chan error, 1)
	go func() { _, err := s.WriteTo(w); done <- err }()
	waitSink(t, s)
	p.data(1, false, []byte("before"))
	got := make([]byte, 6)
	if _, err := io.ReadFull(r, got); err != nil || string(got) != "before" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := p.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrStreamReset) {
			t.Fatalf("WriteTo after a reset: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WriteTo did not return after the reset")
	}
}

// TestWriteToWriter: any other writer gets the stream through the ordinary
// buffered path.
func TestWriteToWriter(t *testing.T) {
	s, p := openedStream(t)
	var b bytes.Buffer
	done := make(chan error, 1)
	go func() { _, err := s.WriteTo(&b); done <- err }()
	p.data(1, false, []byte("hello "))
	p.data(1, true, []byte("world"))
	if err := <-done; err != nil || b.String() != "hello world" {
		t.Fatalf("WriteTo = %q, %v", b.String(), err)
	}
	if s.sink.n != 0 {
		t.Fatal("a bytes.Buffer got data from the connection's reader")
	}
}
