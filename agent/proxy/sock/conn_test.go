package sock

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/sock/socktest"
)

// pair is a connected loopback pair: a is wrapped, b is plain.
func pair(t *testing.T) (a *Conn, b net.Conn) {
	t.Helper()
	c, sc := socktest.Pair(t)
	w, ok := Wrap(c).(*Conn)
	if !ok {
		t.Fatalf("Wrap(%T) did not wrap", c)
	}
	return w, sc
}

func TestWrapLeavesOtherConns(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if got := Wrap(a); got != a {
		t.Fatalf("Wrap(pipe) = %T, want the pipe itself", got)
	}
}

func TestConnCarriesBytesBothWaysAndEOF(t *testing.T) {
	a, b := pair(t)
	if _, err := a.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(b, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("peer read %q, %v", buf, err)
	}
	if _, err := b.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(a, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if err := a.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("peer after CloseWrite: %d, %v; want EOF", n, err)
	}
	b.Close()
	if n, err := a.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want EOF", n, err)
	}
}

// A write larger than the socket buffers waits for the peer to read, in
// Go's poller, and arrives whole and in order.
func TestConnLargeWriteWaitsForSlowReader(t *testing.T) {
	a, b := pair(t)
	want := make([]byte, 16<<20)
	rand.Read(want)
	got := make(chan []byte, 1)
	go func() {
		var out bytes.Buffer
		buf := make([]byte, 4096)
		for out.Len() < len(want) {
			n, err := b.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
			if out.Len() < 1<<20 {
				time.Sleep(time.Millisecond) // slow at first: the writer must wait
			}
		}
		got <- out.Bytes()
	}()
	n, err := a.Write(want)
	if err != nil || n != len(want) {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(want))
	}
	if !bytes.Equal(<-got, want) {
		t.Fatal("the peer read other bytes than were written")
	}
}

// Writers at once each get their bytes out whole (net.Conn allows
// concurrent calls).
func TestConnConcurrentWritesStayWhole(t *testing.T) {
	a, b := pair(t)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := bytes.Repeat([]byte{byte('a' + i)}, 1000)
			for range each {
				if _, err := a.Write(msg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	done := make(chan []byte, 1)
	go func() {
		buf := make([]byte, writers*each*1000)
		_, err := io.ReadFull(b, buf)
		if err != nil {
			t.Error(err)
		}
		done <- buf
	}()
	wg.Wait()
	buf := <-done
	for off := 0; off < len(buf); off += 1000 {
		blk := buf[off : off+1000]
		if !bytes.Equal(blk, bytes.Repeat(blk[:1], 1000)) {
			t.Fatalf("block at %d mixes two writers' bytes", off)
		}
	}
}

func TestConnDeadlineAndClose(t *testing.T) {
	a, _ := pair(t)
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := a.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v; want a timeout", err)
	}
	a.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := a.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read on a closed conn: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Read")
	}
	if _, err := a.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write on a closed conn: %v; want net.ErrClosed", err)
	}
}

func TestConnResetIsAnOpError(t *testing.T) {
	a, b := pair(t)
	b.(*net.TCPConn).SetLinger(0)
	b.Close() // RST
	time.Sleep(20 * time.Millisecond)
	var err error
	for range 100 {
		if _, err = a.Write(make([]byte, 1<<16)); err != nil {
			break
		}
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "write" {
		t.Fatalf("write to a reset peer: %v; want a write *net.OpError", err)
	}
}
