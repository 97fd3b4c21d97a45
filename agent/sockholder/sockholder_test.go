package sockholder

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/weft-mesh/weft/agent/handoff"
)

// The tests re-exec this binary as a taker (an agent stand-in in a process
// of its own, so that it can be killed with SIGKILL) or as a sharer of
// another user.
const helperEnv = "WEFT_SOCKHOLDER_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "taker":
		os.Exit(runTaker(os.Getenv("HOLDER_PATH"), os.Getenv("TAKER_NAME")))
	case "share":
		_, err := Share(context.Background(), os.Getenv("HOLDER_PATH"))
		fmt.Printf("RESULT %v\n", err)
		os.Exit(0)
	default:
		os.Exit(2)
	}
}

// runTaker shares the holder's listeners and answers every connection on
// "outbound" with its name, until it reads "quiesce" on stdin: then it
// stops accepting (it keeps its descriptor), answers "quiet" and waits to
// be killed.
func runTaker(path, name string) int {
	ls, err := Share(context.Background(), path)
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	l := ls["outbound"]
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", name)
			c.Close()
		}
	}()
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "quiesce" {
			// Stop accepting without closing the socket: a deadline in the
			// past makes Accept return; the descriptor stays open. Every
			// connection accepted before is answered first.
			l.(*net.TCPListener).SetDeadline(time.Unix(1, 0))
			<-stopped
			fmt.Println("quiet")
		}
	}
	select {} // until killed
}

type taker struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startTaker(t *testing.T, path, name string) *taker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=taker", "HOLDER_PATH="+path, "TAKER_NAME="+name)
	cmd.Stderr = os.Stderr
	tk := &taker{cmd: cmd}
	tk.in, _ = cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	tk.out = bufio.NewReader(out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tk.kill)
	if line, _ := tk.out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("taker %s: %q", name, line)
	}
	return tk
}

func (tk *taker) kill() {
	if tk.cmd.ProcessState == nil {
		tk.cmd.Process.Signal(syscall.SIGKILL)
		tk.cmd.Wait()
	}
}

// freeAddr returns a loopback address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func listen(ctx context.Context, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", addr)
}

// runHolder runs a holder until the test ends (or stop is called).
func runHolder(t *testing.T, cfg Config) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, func() { close(ready) }) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("holder: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("holder: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func holderConfig(t *testing.T, dir string, addrs map[string]string) Config {
	return Config{Path: filepath.Join(dir, HolderSocket), AgentPath: filepath.Join(dir, HandoffSocket), Addrs: addrs, Listen: listen}
}

// One holder serves any number of takers, one after the other: each gets
// the same socket.
func TestHolderServesSuccessiveTakers(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := holderConfig(t, dir, map[string]string{"outbound": addr})
	runHolder(t, cfg)
	for i := range 2 {
		ls, err := Share(context.Background(), cfg.Path)
		if err != nil {
			t.Fatalf("taker %d: %v", i, err)
		}
		if got := ls["outbound"].Addr().String(); got != addr {
			t.Fatalf("taker %d got %s, want %s", i, got, addr)
		}
		go func() {
			c, err := ls["outbound"].Accept()
			if err == nil {
				fmt.Fprintf(c, "taker%d\n", i)
				c.Close()
			}
		}()
		if got, err := answer(addr); err != nil || got != fmt.Sprintf("taker%d", i) {
			t.Fatalf("connection to taker %d: %q, %v", i, got, err)
		}
		ls["outbound"].Close()
	}
}

func answer(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	if len(b) == 0 {
		return "", errors.New("closed without an answer")
	}
	return strings.TrimSpace(string(b)), nil
}

// loadClient opens a new connection every interval and records failures
// and the slowest answer.
type loadClient struct {
	mu       sync.Mutex
	ok       int
	failures []string
	byName   map[string]int
	maxLat   time.Duration
	earliest map[string]time.Time // the earliest start of a connection each name answered
	stopCh   chan struct{}
	wg       sync.WaitGroup
}

func startLoad(addr string, interval time.Duration) *loadClient {
	lc := &loadClient{byName: map[string]int{}, earliest: map[string]time.Time{}, stopCh: make(chan struct{})}
	lc.wg.Add(1)
	go func() {
		defer lc.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-lc.stopCh:
				return
			case <-tick.C:
			}
			lc.wg.Add(1)
			go func() {
				defer lc.wg.Done()
				start := time.Now()
				got, err := answer(addr)
				lat := time.Since(start)
				lc.mu.Lock()
				defer lc.mu.Unlock()
				if err != nil {
					lc.failures = append(lc.failures, err.Error())
					return
				}
				lc.ok++
				lc.byName[got]++
				if e, ok := lc.earliest[got]; !ok || start.Before(e) {
					lc.earliest[got] = start
				}
				lc.maxLat = max(lc.maxLat, lat)
			}()
		}
	}()
	return lc
}

func (lc *loadClient) count(name string) int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.byName[name]
}

func (lc *loadClient) stop() {
	close(lc.stopCh)
	lc.wg.Wait()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 3000 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// A taker killed with SIGKILL (a process of its own) while clients open
// new connections: the listener stays open in the holder, connections
// made meanwhile wait in its accept queue (their handshakes complete), and
// the next taker accepts every one of them. None is refused or reset.
//
// The first taker stops accepting before it is killed, so that no
// connection is inside it when it dies (one that is would be cut, as any
// connection in flight in a killed proxy is); the queue then holds
// connections while it dies.
func TestKilledTakerLosesNoConnection(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := holderConfig(t, dir, map[string]string{"outbound": addr})
	runHolder(t, cfg)
	first := startTaker(t, cfg.Path, "first")
	load := startLoad(addr, 2*time.Millisecond)
	waitFor(t, "connections to the first taker", func() bool { return load.count("first") >= 200 })

	fmt.Fprintln(first.in, "quiesce")
	if line, _ := first.out.ReadString('\n'); line != "quiet\n" {
		t.Fatalf("first taker: %q", line)
	}
	time.Sleep(50 * time.Millisecond) // connections queue while it lives
	first.kill()
	killed := time.Now()
	time.Sleep(200 * time.Millisecond) // and after it died, with no taker
	secondStarts := time.Now()
	startTaker(t, cfg.Path, "second")
	waitFor(t, "connections to the second taker", func() bool { return load.count("second") >= 200 })
	load.stop()

	load.mu.Lock()
	defer load.mu.Unlock()
	t.Logf("connections: %d answered (%v), %d failed; slowest answer %v (gap without a taker: %v+)",
		load.ok, load.byName, len(load.failures), load.maxLat.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if len(load.failures) > 0 {
		t.Errorf("%d connections failed across the kill, first: %s", len(load.failures), load.failures[0])
	}
	if e := load.earliest["second"]; !e.Before(killed) {
		t.Errorf("the second taker answered no connection made before the first was killed (earliest %v after): nothing waited in the queue", e.Sub(killed))
	}
	if e := load.earliest["second"]; !e.Before(secondStarts) {
		t.Errorf("the second taker answered no connection made before it started")
	}
}

// A new holder (DaemonSet surge upgrade, or a restarted holder container)
// takes the very same sockets from the previous holder, and serves them
// once the previous one is gone.
func TestHolderTakesOverFromPreviousHolder(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := holderConfig(t, dir, map[string]string{"outbound": addr, "inbound": freeAddr(t)})
	stopOld := runHolder(t, cfg)
	ls, src, err := Acquire(context.Background(), cfg)
	if err != nil || src != FromHolder {
		t.Fatalf("Acquire = %v, %v; want the previous holder's", src, err)
	}
	closeAll(ls)
	runHolder(t, cfg) // the new one (renames its socket over the old one's)
	stopOld()
	tk := startTaker(t, cfg.Path, "taker")
	defer tk.kill()
	if got, err := answer(addr); err != nil || got != "taker" {
		t.Fatalf("after the old holder stopped: %q, %v", got, err)
	}
}

// A holder that starts while the agent serves (the holder container
// restarted) gets a share from the agent's handoff socket, which stays the
// agent's (nothing released).
func TestHolderSharesFromTheAgent(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := holderConfig(t, dir, map[string]string{"outbound": addr})
	l, err := listen(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	h, err := handoff.Hold(cfg.AgentPath, handoff.Offer{Listeners: map[string]net.Listener{"outbound": l}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ls, src, err := Acquire(context.Background(), cfg)
	if err != nil || src != FromAgent {
		t.Fatalf("Acquire = %v, %v; want a share of the agent's", src, err)
	}
	closeAll(ls)
	select {
	case <-h.Released():
		t.Fatal("the agent's listeners were released")
	default:
	}
}

// A stale holder socket (a holder that was killed) is no holder: the
// listeners are bound and the socket file replaced. An address in use by a
// process that shares nothing is retried until free.
func TestStaleSocketAndBusyAddress(t *testing.T) {
	dir := t.TempDir()
	cfg := holderConfig(t, dir, map[string]string{"outbound": freeAddr(t)})
	stale, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: cfg.Path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	busy, err := listen(context.Background(), cfg.Addrs["outbound"])
	if err != nil {
		t.Fatal(err)
	}
	cfg.Retry = 10 * time.Millisecond
	type res struct {
		src Source
		err error
	}
	done := make(chan res, 1)
	go func() {
		ls, src, err := Acquire(context.Background(), cfg)
		closeAll(ls)
		done <- res{src, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Acquire returned %v, %v while the address was in use", r.src, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	busy.Close()
	if r := <-done; r.err != nil || r.src != Bound {
		t.Fatalf("Acquire = %v, %v; want bound once free", r.src, r.err)
	}
	runHolder(t, cfg)
	if _, err := Share(context.Background(), cfg.Path); err != nil {
		t.Fatalf("share after replacing the stale socket: %v", err)
	}
}

// A process of another user that reaches the socket (its mode is opened
// up here on purpose) gets nothing.
func TestPrivilegedOtherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as another user")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "helper.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := holderConfig(t, dir, map[string]string{"outbound": freeAddr(t)})
	runHolder(t, cfg)
	if err := os.Chmod(cfg.Path, 0o666); err != nil {
		t.Fatal(err)
	}
	share := func(uid uint32) string {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"=share", "HOLDER_PATH="+cfg.Path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as uid %d: %v\n%s", uid, err, out)
		}
		return string(out)
	}
	if out := share(0); !strings.Contains(out, "RESULT <nil>") {
		t.Fatalf("the same user should get a share:\n%s", out)
	}
	if out := share(65534); !strings.Contains(out, "RESULT "+handoff.ErrHolderGone.Error()) {
		t.Fatalf("another user should be refused:\n%s", out)
	}
}
