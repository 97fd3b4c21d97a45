package datapath

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"testing"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/agent/datapath/bpffstest"
)

// The privileged tests re-exec this test binary as "pods" (a process inside
// a test netns and cgroup) and as separate "agents". helperEnv selects the
// mode.
const helperEnv = "WEFT_DATAPATH_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		// A fresh host may have no bpffs: mount one as the DaemonSet's
		// init container does, and leave the host as it was found.
		release := func() {}
		if os.Geteuid() == 0 {
			var err error
			if release, err = bpffstest.Hold(DefaultBPFFS, func() (bool, error) { return MountBPFFSIn(os.Getpid(), DefaultBPFFS) }); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
		code := m.Run()
		release()
		os.Exit(code)
	case "pod":
		os.Exit(runPod())
	case "agent":
		os.Exit(runAgent())
	case "mountns":
		os.Exit(runMountNS())
	case "pin":
		os.Exit(runPin())
	default:
		fmt.Fprintln(os.Stderr, "unknown helper mode")
		os.Exit(2)
	}
}

// runPod reads commands on stdin, one per line, and answers one line each:
//
//	dial <tcp4|tcp6> <addr>         -> "ok <first line from server> | <getpeername>" or "err <msg>"
//	loop <tcp4|tcp6> <addr> <want>  -> dials until "stop", then "loop <ok> <bad> <first bad>"
//	bench <connect|keepalive> <addr> <n> -> "bench <elapsed ns> <cpu ns>"
//	listen <addr>                   -> "listening"; greets "pod <local addr>", counts connections and bytes
//	stats                           -> "stats <accepted> <bytes read>" of the listener
//	dialmark <mark> <addr>          -> as dial tcp4, from a socket with SO_MARK <mark>
func runPod() int {
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, a ...any) {
		fmt.Fprintf(out, format+"\n", a...)
		out.Flush()
	}
	say("ready")
	lines := make(chan string)
	go func() {
		for in.Scan() {
			lines <- in.Text()
		}
		close(lines)
	}()
	var srv podServer
	for line := range lines {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "listen":
			if err := srv.listen(f[1]); err != nil {
				say("err %v", err)
				continue
			}
			say("listening")
		case "stats":
			say("stats %d %d", srv.accepted.Load(), srv.bytes.Load())
		case "dialmark":
			mark, _ := strconv.ParseUint(f[1], 0, 32)
			first, peer, err := dialMarked(uint32(mark), f[2])
			if err != nil {
				say("err %v", err)
				continue
			}
			say("ok %s | %s", first, peer)
		case "dial":
			first, peer, err := dialOnce(f[1], f[2])
			if err != nil {
				say("err %v", err)
				continue
			}
			say("ok %s | %s", first, peer)
		case "loop":
			var ok, bad int
			var firstBad string
		loop:
			for {
				select {
				case <-lines:
					break loop
				default:
				}
				first, _, err := dialOnce(f[1], f[2])
				if err == nil && first == strings.Join(f[3:], " ") {
					ok++
					continue
				}
				bad++
				if firstBad == "" {
					firstBad = fmt.Sprintf("%q %v", first, err)
				}
			}
			say("loop %d %d %s", ok, bad, firstBad)
		case "pair":
			n, _ := strconv.Atoi(f[4])
			r, err := benchPair(f[1], f[2], f[3], n)
			if err != nil {
				say("err %v", err)
				continue
			}
			say("pair %d %d %d %d", r[0], r[1], r[2], r[3])
		case "bench":
			n, _ := strconv.Atoi(f[3])
			elapsed, cpu, err := bench(f[1], f[2], n)
			if err != nil {
				say("err %v", err)
				continue
			}
			say("bench %d %d", elapsed.Nanoseconds(), cpu.Nanoseconds())
		default:
			say("err unknown command %q", f[0])
		}
	}
	return 0
}

// podServer is a pod's own listener (created by the pod process, so its
// socket belongs to the pod's cgroup and netns).
type podServer struct {
	accepted, bytes atomic.Int64
}

func (s *podServer) listen(addr string) error {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", addr)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			go func() {
				defer c.Close()
				fmt.Fprintf(c, "pod %s\n", c.LocalAddr())
				n, _ := io.Copy(io.Discard, c)
				s.bytes.Add(n)
			}()
		}
	}()
	return nil
}

// dialMarked connects from a socket marked as the node proxy marks its
// dials to pods.
func dialMarked(mark uint32, addr string) (first, peer string, err error) {
	d := dialer()
	d.Control = func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		return serr
	}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if peer, err = getpeername(c.(*net.TCPConn)); err != nil {
		return "", "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", peer, fmt.Errorf("read: %w", err)
	}
	return strings.TrimSpace(line), peer, nil
}

func dialer() *net.Dialer {
	d := &net.Dialer{Timeout: 2 * time.Second}
	d.SetMultipathTCP(false)
	return d
}

// dialOnce connects, reads the server's first line and the kernel's
// getpeername of the socket.
func dialOnce(network, addr string) (first, peer string, err error) {
	var c net.Conn
	switch network {
	case "tcp6":
		c, err = dial6(addr)
	case "mptcp4":
		d := dialer()
		d.SetMultipathTCP(true)
		c, err = d.Dial("tcp4", addr)
	default:
		c, err = dialer().Dial(network, addr)
	}
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	peer, err = getpeername(c.(*net.TCPConn))
	if err != nil {
		return "", "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", peer, fmt.Errorf("read: %w", err)
	}
	return strings.TrimSpace(line), peer, nil
}

// dial6 connects an AF_INET6 socket, also to v4-mapped addresses (Go's
// "tcp6" dialer refuses those, applications in other languages do not).
func dial6(addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "tcp6")
	defer f.Close()
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	if err := unix.Connect(fd, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}); err != nil {
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	return net.FileConn(f)
}

func getpeername(c *net.TCPConn) (string, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var sa unix.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = unix.Getpeername(int(fd)) }); err != nil {
		return "", err
	}
	if serr != nil {
		return "", serr
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String(), nil
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String(), nil
	}
	return "", fmt.Errorf("unexpected sockaddr %T", sa)
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// bench runs n requests: "connect" opens a connection per request (the
// server's greeting is the response), "keepalive" sends n line round trips
// on one connection.
func bench(mode, addr string, n int) (time.Duration, time.Duration, error) {
	start, cpu0 := time.Now(), cpuTime()
	switch mode {
	case "connect":
		for range n {
			if _, _, err := dialOnce("tcp4", addr); err != nil {
				return 0, 0, err
			}
		}
	case "keepalive":
		c, err := dialer().Dial("tcp4", addr)
		if err != nil {
			return 0, 0, err
		}
		defer c.Close()
		r := bufio.NewReader(c)
		if _, err := r.ReadString('\n'); err != nil {
			return 0, 0, err
		}
		start, cpu0 = time.Now(), cpuTime()
		for range n {
			if _, err := c.Write([]byte("x\n")); err != nil {
				return 0, 0, err
			}
			if _, err := r.ReadString('\n'); err != nil {
				return 0, 0, err
			}
		}
	default:
		return 0, 0, fmt.Errorf("unknown bench mode %q", mode)
	}
	return time.Since(start), cpuTime() - cpu0, nil
}

// benchPair alternates blocks of 50 requests to addrA and addrB, so both
// see the same machine load, and returns wall and CPU (this process: user
// + system, which includes the cgroup hooks run in connect) per address:
// [wallA, cpuA, wallB, cpuB] in ns.
func benchPair(mode, addrA, addrB string, n int) ([4]int64, error) {
	var r [4]int64
	const block = 50
	for done := 0; done < n; done += block {
		m := min(block, n-done)
		for i, addr := range []string{addrA, addrB} {
			start, cpu0 := time.Now(), cpuTime()
			if _, _, err := bench(mode, addr, m); err != nil {
				return r, err
			}
			r[2*i] += time.Since(start).Nanoseconds()
			r[2*i+1] += (cpuTime() - cpu0).Nanoseconds()
		}
	}
	return r, nil
}

// agentSpec configures a helper agent process.
type agentSpec struct {
	Node, CgroupPath, PinRoot, Proxy string
	Pods                             []string
	Meshed                           []string
}

// runAgent is a stand-in weft-agent: Open, Sync, print "ready", then hold
// until stdin closes (Close) or it is killed.
func runAgent() int {
	var spec agentSpec
	if err := json.Unmarshal([]byte(os.Getenv("WEFT_DATAPATH_AGENT")), &spec); err != nil {
		fmt.Println("err", err)
		return 1
	}
	dp, err := Open(Config{Node: spec.Node, CgroupPath: spec.CgroupPath, PinRoot: spec.PinRoot, ProxyAddr: netip.MustParseAddrPort(spec.Proxy)})
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	var want Desired
	for _, uid := range spec.Pods {
		want.Pods = append(want.Pods, Pod{UID: uid})
	}
	for _, v := range spec.Meshed {
		want.Meshed = append(want.Meshed, netip.MustParseAddrPort(v))
	}
	res, err := dp.Sync(want)
	if err != nil {
		fmt.Println("err", err)
		return 1
	}
	for _, p := range res.Pods {
		if !p.Enrolled {
			fmt.Println("err pod", p.UID, p.Err)
			return 1
		}
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	dp.Close()
	return 0
}
