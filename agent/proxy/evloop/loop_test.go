package evloop

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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/agent/proxy/sock/socktest"
)

// runLoop starts a loop for the test and stops it at the end.
func runLoop(t *testing.T) *Loop {
	t.Helper()
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
	})
	return l
}

// onLoop runs fn in the loop and waits for it.
func onLoop(t *testing.T, l *Loop, fn func()) {
	t.Helper()
	done := make(chan struct{})
	if !l.Post(func() { fn(); close(done) }) {
		t.Fatal("Post refused by a running loop")
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("posted function did not run")
	}
}

// echo serves one socket in the loop: what it reads (through rw: the socket
// or a tls.Conn over it) it writes back; at EOF it closes.
type echo struct {
	l      *Loop
	s      *Socket
	rw     io.ReadWriter
	buf    []byte
	closed chan error
}

func (e *echo) Ready(ev Events) {
	if err := e.s.Notify(ev); err != nil {
		e.close(err)
		return
	}
	for {
		if e.s.Pending() > 0 {
			return // the peer is slow to read: read on once it took it all
		}
		n, err := e.rw.Read(e.buf)
		if n > 0 {
			if _, werr := e.rw.Write(e.buf[:n]); werr != nil {
				e.close(werr)
				return
			}
		}
		if errors.Is(err, ErrWouldBlock) {
			return
		}
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			e.close(err)
			return
		}
	}
}

func (e *echo) close(err error) {
	e.l.Remove(e.s.FD())
	e.s.Close()
	e.closed <- err
}

// serveEcho accepts one connection on ln and echoes it in l (TLS with cfg
// when set).
func serveEcho(t *testing.T, l *Loop, ln net.Listener, cfg *tls.Config) chan error {
	closed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			closed <- err
			return
		}
		e := &echo{l: l, buf: make([]byte, 16<<10), closed: closed}
		if cfg != nil {
			tc, s, err := Handshake(context.Background(), c, cfg, false)
			if err != nil {
				closed <- err
				return
			}
			e.s, e.rw = s, tc
		} else {
			s, err := Take(c)
			if err != nil {
				closed <- err
				return
			}
			e.s, e.rw = s, s
		}
		l.Post(func() {
			if err := l.Add(e.s.FD(), e); err != nil {
				e.s.Close()
				closed <- err
				return
			}
			e.Ready(Readable) // what came with the handshake
		})
	}()
	return closed
}

// exchange writes n random bytes to c while (after a pause, so that the
// echo's writes back wait in its socket) reading them back, and checks them.
func exchange(t *testing.T, c net.Conn, n int) {
	t.Helper()
	want := make([]byte, n)
	rand.Read(want)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		werr <- err
	}()
	time.Sleep(200 * time.Millisecond)
	got := make([]byte, n)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read back: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed bytes differ from the ones sent")
	}
}

// TestEcho moves more than loopback's socket buffers hold through an echo
// served in a loop, so that the echo's writes wait (and its reads with
// them), over a plain socket and over TLS; then a small exchange, and the
// client's close.
func TestEcho(t *testing.T) {
	cert, pool := selfSigned(t)
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "tls"}[secure], func(t *testing.T) {
			l := runLoop(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			var cfg *tls.Config
			dial := func() (net.Conn, error) { return net.Dial("tcp", ln.Addr().String()) }
			if secure {
				cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
				dial = func() (net.Conn, error) {
					return tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "echo"})
				}
			}
			closed := serveEcho(t, l, ln, cfg)
			c, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			exchange(t, c, 32<<20)
			exchange(t, c, 1)
			c.Close()
			select {
			case err := <-closed:
				if err != nil {
					t.Fatalf("echo ended with %v, want EOF", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the echo did not see the client close")
			}
		})
	}
}

// TestPeerCloseWithData: data and the peer's FIN, both queued before the
// socket joins the loop, come in one edge; the short read of the data must
// not hide the end.
func TestPeerCloseWithData(t *testing.T) {
	l := runLoop(t)
	c, sc := socktest.Pair(t)
	c.Write([]byte("last words"))
	c.CloseWrite()
	time.Sleep(50 * time.Millisecond) // both are queued at the server
	s, err := Take(sc)
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	e := &echo{l: l, s: s, rw: s, buf: make([]byte, 16<<10), closed: closed}
	l.Post(func() {
		if err := l.Add(s.FD(), e); err != nil {
			closed <- err
		}
	})
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("echo ended with %v, want EOF", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the peer's close, queued with its data, was not seen")
	}
	got, _ := io.ReadAll(c)
	if string(got) != "last words" {
		t.Fatalf("echoed %q", got)
	}
}

func TestPendingBound(t *testing.T) {
	l := runLoop(t)
	_, sc := socktest.Pair(t) // the client end never reads
	s, err := Take(sc)
	if err != nil {
		t.Fatal(err)
	}
	// the client never reads: writes wait, up to the bound
	var werr error
	var total int
	onLoop(t, l, func() {
		chunk := make([]byte, 64<<10)
		for total < 64<<20 {
			if _, werr = s.Write(chunk); werr != nil {
				break
			}
			total += len(chunk)
		}
		s.Close()
	})
	if !errors.Is(werr, ErrPendingFull) {
		t.Fatalf("writes to a peer that does not read: %v after %d bytes, want ErrPendingFull", werr, total)
	}
}

func TestPostFromManyGoroutines(t *testing.T) {
	l := runLoop(t)
	var ran atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				l.Post(func() { ran.Add(1) })
			}
		}()
	}
	wg.Wait()
	onLoop(t, l, func() {}) // posted after all the others: runs after them
	if got := ran.Load(); got != 50*200 {
		t.Fatalf("%d posted functions ran, want %d", got, 50*200)
	}
}

func TestTimers(t *testing.T) {
	l := runLoop(t)
	order := make(chan int, 4)
	onLoop(t, l, func() {
		l.AfterFunc(60*time.Millisecond, func() { order <- 3 })
		l.AfterFunc(20*time.Millisecond, func() { order <- 1 })
		stopped := l.AfterFunc(30*time.Millisecond, func() { order <- 99 })
		l.AfterFunc(40*time.Millisecond, func() { order <- 2 })
		if !l.Stop(stopped) {
			t.Error("Stop of a pending timer: false")
		}
		if l.Stop(stopped) {
			t.Error("second Stop: true")
		}
	})
	for want := 1; want <= 3; want++ {
		select {
		case got := <-order:
			if got != want {
				t.Fatalf("timer %d ran where %d was due", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timer %d did not run", want)
		}
	}
	select {
	case got := <-order:
		t.Fatalf("timer %d ran after the others", got)
	case <-time.After(100 * time.Millisecond):
	}
	// a timer set once the others ran (the poller's deadline passed) runs
	onLoop(t, l, func() { l.AfterFunc(10*time.Millisecond, func() { order <- 4 }) })
	select {
	case <-order:
	case <-time.After(5 * time.Second):
		t.Fatal("a timer set after the others ran did not run")
	}
}

func TestLaterRunsOnceAfterTheBatch(t *testing.T) {
	l := runLoop(t)
	var order []string
	done := make(chan struct{})
	l.Post(func() {
		l.Later(func() {
			order = append(order, "later")
			l.Later(func() { order = append(order, "later's later"); close(done) })
		})
		order = append(order, "posted")
	})
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Later's functions did not run")
	}
	want := "posted later later's later"
	var got string
	onLoop(t, l, func() { got = strings.Join(order, " ") })
	if got != want {
		t.Fatalf("ran %q, want %q", got, want)
	}
}

func TestTimerReset(t *testing.T) {
	l := runLoop(t)
	ran := make(chan time.Time, 4)
	var tm *Timer
	start := time.Now()
	onLoop(t, l, func() {
		tm = NewTimer(func() { ran <- time.Now() })
		l.Reset(tm, time.Hour)
		l.Reset(tm, 30*time.Millisecond) // moved, not added twice
	})
	at := <-ran
	if at.Sub(start) < 30*time.Millisecond {
		t.Fatalf("ran after %v, before its time", at.Sub(start))
	}
	onLoop(t, l, func() {
		if tm.Scheduled() {
			t.Error("a timer that ran is still scheduled")
		}
		l.Reset(tm, 10*time.Millisecond) // again, after it ran
	})
	<-ran
	select {
	case <-ran:
		t.Fatal("a timer reset twice ran twice")
	case <-time.After(100 * time.Millisecond):
	}
}

func TestCloseStopsRunAndPost(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()
	onLoop(t, l, func() { l.AfterFunc(time.Hour, func() {}) }) // parked with a deadline
	l.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if l.Post(func() {}) {
		t.Fatal("Post accepted by a closed loop")
	}
}

// TestPanicIsRecovered: a panicking handler is closed and reported; the
// loop goes on serving.
func TestPanicIsRecovered(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	panics := make(chan any, 4)
	l.SetOnPanic(func(v any) { panics <- v })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c, sc := socktest.Pair(t)
	s, err := Take(sc)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h := &panicker{closer: closer{closed: make(chan struct{}), once: new(sync.Once)}}
	onLoop(t, l, func() {
		if err := l.Add(s.FD(), h); err != nil {
			t.Error(err)
		}
	})
	c.Write([]byte("boom"))
	select {
	case v := <-panics:
		if v != "boom" {
			t.Errorf("reported %v", v)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's panic was not reported")
	}
	select {
	case <-h.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler that panicked was not closed")
	}
	l.Post(func() { panic("posted") })
	if v := <-panics; v != "posted" {
		t.Errorf("reported %v", v)
	}
	onLoop(t, l, func() {}) // still serving
}

// panicker panics when its socket is readable.
type panicker struct{ closer }

func (p *panicker) Ready(ev Events) {
	if ev&Readable != 0 {
		panic("boom")
	}
}

// closer is a Handler with a Close method (which may be called again, as
// the loop's own are).
type closer struct {
	closed chan struct{}
	once   *sync.Once
}

func (closer) Ready(Events) {}
func (c closer) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// TestStopClosesWhatIsLeft: when Run stops it runs what was posted and
// closes the sockets still in it whose Handler can be closed.
func TestStopClosesWhatIsLeft(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	_, sc := socktest.Pair(t)
	s, err := Take(sc)
	if err != nil {
		t.Fatal(err)
	}
	h := closer{closed: make(chan struct{}), once: new(sync.Once)}
	onLoop(t, l, func() {}) // running
	l.Post(func() {
		if err := l.Add(s.FD(), h); err != nil {
			t.Error(err)
		}
		cancel() // the loop stops with the socket in it
	})
	select {
	case <-h.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the socket added last was not closed when the loop stopped")
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	s.Close()
}

// selfSigned returns a certificate for "echo" and a pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "echo"}, DNSNames: []string{"echo"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
