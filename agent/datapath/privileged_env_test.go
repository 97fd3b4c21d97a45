package datapath

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Addresses inside the test's own network namespaces.
const (
	vipMeshed   = "10.96.0.50:80" // meshed VIP:port (a "direct" server also listens here in the node netns)
	vipOther    = "10.96.0.51:80" // a non-meshed destination
	proxyAddr1  = "10.77.0.1:15001"
	proxyAddr2  = "10.77.0.2:15001"
	testPinRoot = "/sys/fs/bpf/weft-dptest"
	directGreet = "direct 10.96.0.50:80"
	otherGreet  = "direct 10.96.0.51:80"
)

var topoSeq atomic.Int32

// requirePrivileged skips unless root with every kernel feature the
// redirect needs.
func requirePrivileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF, network namespaces, cgroups)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip command")
	}
	if r := Preflight(""); !r.OK() {
		t.Skipf("kernel lacks what the redirect needs:\n%s", r.Format())
	}
}

// topo is a node netns with pods on veths, and a cgroup tree per node:
// <cgroup2>/<id>/<node>/kubepods/...
type topo struct {
	t      testing.TB
	id     string
	nodeNS string
	cg2    string
	cgRoot string
	podNS  map[string]string // pod name -> netns name
	podIP  map[string]string
	// accepted counts connections the stand-in proxies accepted.
	accepted atomic.Int64
}

func run(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTopo builds the node netns and one pod netns per name (10.77.<k>.2 on
// a veth to the node's 10.77.<k>.1). The node netns holds the proxy IPs
// 10.77.0.1 and 10.77.0.2 and the VIPs 10.96.0.50/51 on lo.
func newTopo(t testing.TB, pods ...string) *topo {
	t.Helper()
	cg2, err := Cgroup2Root()
	if err != nil {
		t.Skipf("no cgroup v2: %v", err)
	}
	id := fmt.Sprintf("wdp%d-%d", os.Getpid()%100000, topoSeq.Add(1))
	tp := &topo{t: t, id: id, nodeNS: id + "-node", cg2: cg2, cgRoot: filepath.Join(cg2, id),
		podNS: map[string]string{}, podIP: map[string]string{}}
	t.Cleanup(tp.cleanup)
	if err := os.Mkdir(tp.cgRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "ip", "netns", "add", tp.nodeNS)
	ipn := func(ns string, args ...string) { run(t, append([]string{"ip", "-n", ns}, args...)...) }
	ipn(tp.nodeNS, "link", "set", "lo", "up")
	for _, a := range []string{"10.77.0.1/32", "10.77.0.2/32", "10.96.0.50/32", "10.96.0.51/32"} {
		ipn(tp.nodeNS, "addr", "add", a, "dev", "lo")
	}
	for k, name := range pods {
		ns := id + "-" + name
		tp.podNS[name] = ns
		tp.podIP[name] = fmt.Sprintf("10.77.%d.2", k+1)
		run(t, "ip", "netns", "add", ns)
		run(t, "ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "v"+name, "netns", tp.nodeNS)
		ipn(ns, "link", "set", "lo", "up")
		// Many short connections (restart loop, benchmark): reuse TIME_WAIT
		// ports and use a wide port range, as busy clients are tuned.
		run(t, "ip", "netns", "exec", ns, "sh", "-c",
			"echo 1 > /proc/sys/net/ipv4/tcp_tw_reuse && echo '10000 65000' > /proc/sys/net/ipv4/ip_local_port_range")
		ipn(ns, "addr", "add", fmt.Sprintf("10.77.%d.2/24", k+1), "dev", "eth0")
		ipn(ns, "link", "set", "eth0", "up")
		ipn(ns, "route", "add", "default", "via", fmt.Sprintf("10.77.%d.1", k+1))
		ipn(tp.nodeNS, "addr", "add", fmt.Sprintf("10.77.%d.1/24", k+1), "dev", "v"+name)
		ipn(tp.nodeNS, "link", "set", "v"+name, "up")
	}
	return tp
}

func (tp *topo) cleanup() {
	for _, ns := range tp.podNS {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	_ = exec.Command("ip", "netns", "del", tp.nodeNS).Run()
	// Remove the cgroup tree deepest first (processes are gone by now:
	// their cleanups ran earlier, being registered later).
	var dirs []string
	_ = filepath.WalkDir(tp.cgRoot, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil {
			tp.t.Errorf("remove test cgroup: %v", err)
		}
	}
}

// cgroup creates (if needed) and returns <cgRoot>/<rel>.
func (tp *topo) cgroup(rel string) string {
	p := filepath.Join(tp.cgRoot, rel)
	if err := os.MkdirAll(p, 0o755); err != nil {
		tp.t.Fatal(err)
	}
	return p
}

// inNetns runs fn on an OS thread switched into the named netns; sockets
// fn creates belong to it.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer self.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

func (tp *topo) listen(addr string) net.Listener {
	tp.t.Helper()
	var ln net.Listener
	err := inNetns(tp.nodeNS, func() error {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(tp.t.Context(), "tcp", addr)
		return err
	})
	if err != nil {
		tp.t.Fatalf("listen %s in node netns: %v", addr, err)
	}
	tp.t.Cleanup(func() { ln.Close() })
	return ln
}

// serveDirect answers every connection with "direct <its local addr>".
func (tp *topo) serveDirect(addr string) {
	ln := tp.listen(addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "direct %s\n", c.LocalAddr())
			c.Close()
		}
	}()
}

type lookupFunc func(client, proxy netip.AddrPort) (Original, bool)

// serveProxy is a stand-in node proxy: per connection it looks up the
// original destination, greets "proxy <name> <found> <dst> <cookie>" (or
// "proxy <name> refused" and closes, as the real proxy must), then echoes
// lines until EOF.
func (tp *topo) serveProxy(name, addr string, lookup lookupFunc) {
	ln := tp.listen(addr)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tp.accepted.Add(1)
			go func() {
				defer c.Close()
				client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
				local := c.LocalAddr().(*net.TCPAddr).AddrPort()
				orig, ok := lookup(client, local)
				if !ok {
					fmt.Fprintf(c, "proxy %s refused\n", name)
					return
				}
				fmt.Fprintf(c, "proxy %s %s %d\n", name, orig.Dst, orig.NetnsCookie)
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// proc is a helper process (pod or agent) speaking lines on stdin/stdout.
type proc struct {
	t   testing.TB
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// start runs this test binary in helper mode inside netns ns (the host's
// when empty) and, from its first instruction, in cgroup cg.
func start(t testing.TB, mode, ns, cg string, env ...string) *proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{self, "-test.run=^$"}
	if ns != "" {
		args = append([]string{"ip", "netns", "exec", ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), append(env, helperEnv+"="+mode)...)
	cmd.Stderr = os.Stderr
	cgf, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer cgf.Close()
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
	p := &proc{t: t, cmd: cmd}
	if p.in, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.out = bufio.NewReader(stdout)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s helper: %v", mode, err)
	}
	t.Cleanup(p.kill)
	if line := p.read(); line != "ready" {
		t.Fatalf("%s helper did not start: %q", mode, line)
	}
	return p
}

func (p *proc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
}

func (p *proc) read() string {
	p.t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := p.out.ReadString('\n')
		ch <- res{strings.TrimSpace(s), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil && r.s == "" {
			return "eof: " + r.err.Error()
		}
		return r.s
	case <-time.After(60 * time.Second):
		p.t.Fatal("helper did not answer within 60s")
		return ""
	}
}

func (p *proc) send(line string) {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.in, line); err != nil {
		p.t.Fatalf("write to helper: %v", err)
	}
}

// dial asks a pod to connect and returns the server's greeting and the
// client's getpeername.
func (p *proc) dial(network, addr string) (greet, peer string) {
	p.t.Helper()
	p.send("dial " + network + " " + addr)
	line := p.read()
	rest, ok := strings.CutPrefix(line, "ok ")
	if !ok {
		return line, ""
	}
	greet, peer, _ = strings.Cut(rest, " | ")
	return greet, peer
}

// startPod starts a pod process in its netns and in a new pod cgroup at
// <cgRoot>/<rel>.
func (tp *topo) startPod(name, rel string) *proc {
	ns := tp.nodeNS
	if name != "" {
		ns = tp.podNS[name]
	}
	return start(tp.t, "pod", ns, tp.cgroup(rel))
}

// startAgent starts a helper agent process (host netns, test cgroup root).
func (tp *topo) startAgent(spec agentSpec) *proc {
	b, _ := json.Marshal(spec)
	return start(tp.t, "agent", "", tp.cgroup("agents"), "WEFT_DATAPATH_AGENT="+string(b))
}

// openDP opens a node datapath under the test pin root and registers its
// Close and Cleanup.
func (tp *topo) openDP(node, cgroupRel, proxy string, opts ...func(*Config)) (*Datapath, Config) {
	tp.t.Helper()
	cfg := Config{Node: tp.id + "-" + node, CgroupPath: filepath.Join(tp.id, cgroupRel), PinRoot: testPinRoot,
		ProxyAddr: netip.MustParseAddrPort(proxy)}
	for _, o := range opts {
		o(&cfg)
	}
	tp.cgroup(cgroupRel)
	dp, err := Open(cfg)
	if err != nil {
		tp.t.Fatalf("Open(%s): %v", node, err)
	}
	tp.t.Cleanup(func() {
		dp.Close()
		if err := Cleanup(cfg); err != nil {
			tp.t.Errorf("Cleanup(%s): %v", node, err)
		}
	})
	return dp, cfg
}

func mustSync(t testing.TB, dp *Datapath, want Desired) Result {
	t.Helper()
	res, err := dp.Sync(want)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for _, p := range res.Pods {
		if !p.Enrolled {
			t.Fatalf("pod %s not enrolled: %v", p.UID, p.Err)
		}
	}
	return res
}

// eventually polls cond for up to 5 s (kernel objects are freed after an
// RCU grace period; records after the FIN exchange).
func eventually(cond func() bool) bool {
	for range 100 {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}

func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }

func sleepMs(n int) { time.Sleep(time.Duration(n) * time.Millisecond) }
