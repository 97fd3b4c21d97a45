package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// server stands in for an agent: it answers every connection on its
// listeners with its name.
type server struct {
	name string
	ls   map[string]net.Listener
	wg   sync.WaitGroup
}

func serve(t *testing.T, name string, ls map[string]net.Listener) *server {
	t.Helper()
	s := &server{name: name, ls: ls}
	for _, l := range ls {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					defer c.Close()
					fmt.Fprintf(c, "%s\n", s.name)
				}()
			}
		}()
	}
	t.Cleanup(s.stop)
	return s
}

// stop stops accepting (closing this server's descriptors only) and waits
// for its connections to be answered.
func (s *server) stop() {
	for _, l := range s.ls {
		l.Close()
	}
	s.wg.Wait()
}

func bind(t *testing.T, names ...string) map[string]net.Listener {
	t.Helper()
	ls := map[string]net.Listener{}
	for _, n := range names {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls[n] = l
	}
	return ls
}

// client dials addr in a tight loop and counts who answered and what
// failed (refused, reset, empty answer).
type client struct {
	mu       sync.Mutex
	answers  map[string]int
	failures []string
	progress chan struct{}
	stopCh   chan struct{}
	done     chan struct{}
}

func dialLoop(t *testing.T, addr string) *client {
	t.Helper()
	c := &client{answers: map[string]int{}, progress: make(chan struct{}, 1), stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			select {
			case <-c.stopCh:
				return
			default:
			}
			answer, err := dialOnce(addr)
			c.mu.Lock()
			if err != nil {
				c.failures = append(c.failures, err.Error())
			} else {
				c.answers[answer]++
			}
			c.mu.Unlock()
			select {
			case c.progress <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func dialOnce(addr string) (string, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	b, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return "", fmt.Errorf("answer %q", b)
	}
	return string(b[:len(b)-1]), nil
}

func (c *client) count(name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.answers[name]
}

// waitAnswers waits until name has answered at least n connections.
func (c *client) waitAnswers(name string, n int) {
	for c.count(name) < n {
		<-c.progress
	}
}

func (c *client) stop() {
	select {
	case <-c.stopCh:
	default:
		close(c.stopCh)
	}
	<-c.done
}

func (c *client) check(t *testing.T) {
	t.Helper()
	c.stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	t.Logf("answers: %v", c.answers)
	if len(c.failures) > 0 {
		t.Errorf("%d failed connections across the handoff, first: %s", len(c.failures), c.failures[0])
	}
}

func hold(t *testing.T, path string, ls map[string]net.Listener) *Holder {
	t.Helper()
	h, err := Hold(path, Offer{Listeners: ls}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func dial(t *testing.T, path string) *Successor {
	t.Helper()
	s, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func take(t *testing.T, s *Successor) map[string]net.Listener {
	t.Helper()
	ls, err := s.Take(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func sameAddrs(t *testing.T, got, want map[string]net.Listener) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d listeners, want %d", len(got), len(want))
	}
	for name, l := range want {
		if got[name] == nil || got[name].Addr().String() != l.Addr().String() {
			t.Fatalf("listener %s: got %v, want %v", name, got[name], l.Addr())
		}
	}
}

// Two handoffs (A -> B -> C) while clients dial both listeners in a tight
// loop: every connection is answered, by A, then B, then C.
func TestHandoffUnderLoadRefusesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.sock")
	lsA := bind(t, "outbound", "inbound")
	a := serve(t, "A", lsA)
	holdA := hold(t, path, lsA)
	var clients []*client
	for _, l := range lsA {
		clients = append(clients, dialLoop(t, l.Addr().String()), dialLoop(t, l.Addr().String()))
	}
	for _, c := range clients {
		c.waitAnswers("A", 50)
	}

	// B takes over: both accept until A hears that B serves.
	sB := dial(t, path)
	lsB := take(t, sB)
	sameAddrs(t, lsB, lsA)
	b := serve(t, "B", lsB)
	if err := sB.Serving(); err != nil {
		t.Fatal(err)
	}
	<-holdA.Released()
	a.stop() // A stops accepting: closing its descriptors leaves the sockets to B
	if _, err := dial(t, path).Take(context.Background()); !errors.Is(err, ErrRefused) {
		t.Fatalf("take from a holder that handed over: %v, want ErrRefused", err)
	}
	holdB := hold(t, path, lsB)
	holdA.Close() // must not remove B's socket file
	for _, c := range clients {
		c.waitAnswers("B", 50)
	}

	sC := dial(t, path)
	lsC := take(t, sC)
	sameAddrs(t, lsC, lsA)
	serve(t, "C", lsC)
	if err := sC.Serving(); err != nil {
		t.Fatal(err)
	}
	<-holdB.Released()
	b.stop()
	for _, c := range clients {
		c.waitAnswers("C", 50)
	}
	for _, c := range clients {
		c.check(t)
	}
}

// A successor that takes the listeners and dies before it serves leaves
// the holder serving, and the next successor can still take them.
func TestSuccessorDiesMidHandoff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.sock")
	lsA := bind(t, "outbound")
	a := serve(t, "A", lsA)
	holdA := hold(t, path, lsA)
	c := dialLoop(t, lsA["outbound"].Addr().String())
	c.waitAnswers("A", 20)

	sB, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	lsB := take(t, sB)
	// B dies: its descriptors and its connection to A close.
	for _, l := range lsB {
		l.Close()
	}
	sB.Close()
	n := c.count("A")
	c.waitAnswers("A", n+50)
	select {
	case <-holdA.Released():
		t.Fatal("released to a successor that never served")
	default:
	}

	sC := dial(t, path)
	lsC := take(t, sC)
	serve(t, "C", lsC)
	if err := sC.Serving(); err != nil {
		t.Fatal(err)
	}
	<-holdA.Released()
	a.stop()
	c.waitAnswers("C", 50)
	c.check(t)
}

// A socket file left by a crashed agent: nobody holds; a new holder
// replaces it.
func TestStaleSocketFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := Dial(context.Background(), filepath.Join(dir, "missing.sock")); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("dial a missing socket: %v, want ErrNoHolder", err)
	}
	path := filepath.Join(dir, "handoff.sock")
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket file: %v", err)
	}
	if _, err := Dial(context.Background(), path); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("dial a stale socket: %v, want ErrNoHolder", err)
	}

	ls := bind(t, "outbound")
	serve(t, "A", ls)
	hold(t, path, ls)
	got := take(t, dial(t, path))
	sameAddrs(t, got, ls)
	for _, l := range got {
		l.Close()
	}
}

// A holder that stops offering (its agent exits without a successor)
// tells a waiting successor, and removes its socket file.
func TestHolderCloseTellsSuccessor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.sock")
	ls := bind(t, "outbound")
	serve(t, "A", ls)
	h := hold(t, path, ls)
	s := dial(t, path)
	h.Close()
	<-s.Gone()
	if _, err := s.Take(context.Background()); !errors.Is(err, ErrHolderGone) {
		t.Fatalf("take after the holder closed: %v, want ErrHolderGone", err)
	}
	if _, err := Dial(context.Background(), path); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("dial after the holder closed: %v, want ErrNoHolder", err)
	}
}

// State records travel in order before the listeners; a holder without
// state sends none; one whose state cannot be sent ends the connection and
// keeps its listeners.
func TestStateBeforeTake(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.sock")
	ls := bind(t, "outbound")
	serve(t, "A", ls)
	want := [][]byte{[]byte("svid one"), make([]byte, MaxRecord), []byte("svid three")}
	want[1][0], want[1][MaxRecord-1] = 1, 2
	calls := 0
	h, err := Hold(path, Offer{Listeners: ls, State: func() ([][]byte, error) { calls++; return want, nil }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	s := dial(t, path)
	got, err := s.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if string(got[i]) != string(want[i]) {
			t.Fatalf("record %d differs (%d bytes, want %d)", i, len(got[i]), len(want[i]))
		}
	}
	// Asking twice is allowed; the listeners follow on the same connection.
	if again, err := s.State(context.Background()); err != nil || len(again) != len(want) || calls != 2 {
		t.Fatalf("second State: %d records, %v, %d calls", len(again), err, calls)
	}
	sameAddrs(t, take(t, s), ls)

	// No State func: an empty answer.
	path2 := filepath.Join(t.TempDir(), "handoff.sock")
	ls2 := bind(t, "outbound")
	serve(t, "B", ls2)
	hold(t, path2, ls2)
	if recs, err := dial(t, path2).State(context.Background()); err != nil || len(recs) != 0 {
		t.Fatalf("state of a holder without any: %d records, %v", len(recs), err)
	}

	// An oversized record: nothing is sent, the successor learns the holder
	// gave up on it, and the holder still hands its listeners to the next.
	path3 := filepath.Join(t.TempDir(), "handoff.sock")
	ls3 := bind(t, "outbound")
	serve(t, "C", ls3)
	h3, err := Hold(path3, Offer{Listeners: ls3, State: func() ([][]byte, error) { return [][]byte{make([]byte, MaxRecord+1)}, nil }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h3.Close() })
	if _, err := dial(t, path3).State(context.Background()); !errors.Is(err, ErrHolderGone) {
		t.Fatalf("oversized state: %v, want ErrHolderGone", err)
	}
	sameAddrs(t, take(t, dial(t, path3)), ls3)
}

// A holder whose listeners were taken over leaves the socket path alone when it
// closes, even while the path is still its own: its successor renames its own socket
// there, maybe at that very moment, and a check-then-remove would race with that
// rename and could remove the successor's socket (the agent after it would then find
// no holder and wait for the sockets to be freed, refusing nothing but serving
// without the identities). Found by two agent restarts in a row on a loaded machine.
func TestReleasedHolderLeavesThePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.sock")
	ls := bind(t, "outbound")
	a := serve(t, "A", ls)
	h := hold(t, path, ls)
	s := dial(t, path)
	serve(t, "B", take(t, s))
	if err := s.Serving(); err != nil {
		t.Fatal(err)
	}
	<-h.Released()
	a.stop()
	h.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a released holder removed the socket path its successor takes over: %v", err)
	}
}
