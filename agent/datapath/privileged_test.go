package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/weft-mesh/weft/bpf"
)

// node1 is the usual one-node setup: pods a (enrolled) and b (not enrolled)
// in node1's kubepods, a "hostNetwork" process in the node netns in the same
// cgroup subtree, the stand-in proxy on 10.77.0.1:15001 and direct servers
// on both VIPs.
type node1 struct {
	tp         *topo
	dp         *Datapath
	cfg        Config
	a, b, host *proc
	cookieA    uint64
}

func setupNode1(t *testing.T) *node1 {
	requirePrivileged(t)
	tp := newTopo(t, "a", "b")
	n := &node1{tp: tp}
	n.dp, n.cfg = tp.openDP("n1", "n1/kubepods", proxyAddr1)
	tp.serveProxy("n1", proxyAddr1, n.dp.Lookup)
	tp.serveDirect(vipMeshed)
	tp.serveDirect(vipOther)
	n.a = tp.startPod("a", "n1/kubepods/podaaaaaaaa-0000-0000-0000-000000000001")
	n.b = tp.startPod("b", "n1/kubepods/podbbbbbbbb-0000-0000-0000-000000000002")
	n.host = tp.startPod("", "n1/kubepods/podcccccccc-0000-0000-0000-000000000003")
	res := mustSync(t, n.dp, Desired{
		Pods:   []Pod{{UID: "aaaaaaaa-0000-0000-0000-000000000001"}},
		Meshed: []netip.AddrPort{netip.MustParseAddrPort(vipMeshed)},
	})
	n.cookieA = res.Pods[0].NetnsCookie
	want, err := NetnsCookie(filepath.Join("/run/netns", tp.podNS["a"]))
	if err != nil || want != n.cookieA {
		t.Fatalf("enrolled cookie %d, pod a's netns cookie %d (%v)", n.cookieA, want, err)
	}
	return n
}

func (n *node1) recordCount(t *testing.T) int {
	t.Helper()
	var k bpf.RedirectTuple
	var v bpf.RedirectOrigDst
	c := 0
	it := n.dp.coll.Maps[bpf.RedirectMapOrigDsts].Iterate()
	for it.Next(&k, &v) {
		c++
	}
	return c
}

// Point 1: an enrolled pod's connection to a meshed VIP:port reaches the
// proxy, which learns the original destination and the netns cookie; the
// client's getpeername shows the VIP. The record goes away after close.
func TestPrivilegedRedirectEnrolled(t *testing.T) {
	n := setupNode1(t)
	for range 3 {
		greet, peer := n.a.dial("tcp4", vipMeshed)
		if want := fmt.Sprintf("proxy n1 %s %d", vipMeshed, n.cookieA); greet != want {
			t.Fatalf("enrolled pod -> %s: greeting %q, want %q", vipMeshed, greet, want)
		}
		if peer != vipMeshed {
			t.Errorf("getpeername = %q, want the VIP %s", peer, vipMeshed)
		}
	}
	// An MPTCP client: the hooks run on its TCP subflow, which is what
	// reaches the proxy.
	greet, peer := n.a.dial("mptcp4", vipMeshed)
	if want := fmt.Sprintf("proxy n1 %s %d", vipMeshed, n.cookieA); greet != want || peer != vipMeshed {
		t.Errorf("MPTCP client: greeting %q peer %q, want %q from %s", greet, peer, want, vipMeshed)
	}
	if !eventually(func() bool { return n.recordCount(t) == 0 }) {
		t.Errorf("%d records left after the connections closed", n.recordCount(t))
	}
	var cookie uint64
	var od bpf.RedirectOrigDst
	if it := n.dp.coll.Maps[bpf.RedirectMapPending].Iterate(); it.Next(&cookie, &od) {
		t.Errorf("pending entry left for socket %d: %+v", cookie, od)
	}
	if got, _ := n.dp.State(); len(got.Enrolled) != 1 || len(got.Meshed) != 1 {
		t.Errorf("map state = %+v", got)
	}

	// Unenrolling and unmeshing take effect for new connections.
	mustSync(t, n.dp, Desired{Meshed: []netip.AddrPort{netip.MustParseAddrPort(vipMeshed)}})
	if greet, _ := n.a.dial("tcp4", vipMeshed); greet != directGreet {
		t.Errorf("after unenroll: %q, want %q", greet, directGreet)
	}
	mustSync(t, n.dp, Desired{Pods: []Pod{{UID: "aaaaaaaa-0000-0000-0000-000000000001"}}})
	if greet, _ := n.a.dial("tcp4", vipMeshed); greet != directGreet {
		t.Errorf("after unmesh: %q, want %q", greet, directGreet)
	}
	if st, _ := n.dp.State(); len(st.Meshed) != 0 || len(st.Enrolled) != 1 {
		t.Errorf("map state after unmesh = %+v", st)
	}
}

// Point 2: a non-enrolled pod, a non-meshed destination and the proxy's own
// dials (node netns, same cgroup subtree) are not redirected.
func TestPrivilegedNotRedirected(t *testing.T) {
	n := setupNode1(t)
	cases := []struct {
		name string
		p    *proc
		addr string
		want string
	}{
		{"non-enrolled pod to meshed VIP", n.b, vipMeshed, directGreet},
		{"enrolled pod to non-meshed destination", n.a, vipOther, otherGreet},
		{"enrolled pod to meshed VIP on another port", n.a, "10.96.0.50:81", "err"},
		{"node netns (the proxy's own dials) to meshed VIP", n.host, vipMeshed, directGreet},
	}
	for _, c := range cases {
		greet, peer := c.p.dial("tcp4", c.addr)
		if c.want == "err" {
			if !strings.HasPrefix(greet, "err") || !strings.Contains(greet, "refused") {
				t.Errorf("%s: %q, want connection refused (nothing listens there)", c.name, greet)
			}
			continue
		}
		if greet != c.want || peer != c.addr {
			t.Errorf("%s: greeting %q peer %q, want %q from %s", c.name, greet, peer, c.want, c.addr)
		}
	}
}

// Point 3: a connection straight to the capture port has no record; the
// proxy refuses it.
func TestPrivilegedDirectToCapturePortRefused(t *testing.T) {
	n := setupNode1(t)
	for name, p := range map[string]*proc{"enrolled": n.a, "non-enrolled": n.b, "node": n.host} {
		if greet, _ := p.dial("tcp4", proxyAddr1); greet != "proxy n1 refused" {
			t.Errorf("%s pod straight to %s: %q, want the proxy to refuse", name, proxyAddr1, greet)
		}
	}
	// And a lookup of a made-up 4-tuple is not found.
	if _, ok := n.dp.Lookup(netip.MustParseAddrPort("10.77.1.2:40000"), netip.MustParseAddrPort(proxyAddr1)); ok {
		t.Error("Lookup found a record for a connection that was never redirected")
	}
}

// Point 4: an AF_INET6 socket connecting to a v4-mapped VIP is redirected
// and getpeername shows the v4-mapped VIP.
func TestPrivilegedV4MappedRedirected(t *testing.T) {
	n := setupNode1(t)
	greet, peer := n.a.dial("tcp6", "[::ffff:10.96.0.50]:80")
	if want := fmt.Sprintf("proxy n1 %s %d", vipMeshed, n.cookieA); greet != want {
		t.Fatalf("tcp6 to v4-mapped VIP: %q, want %q", greet, want)
	}
	if peer != "[::ffff:10.96.0.50]:80" {
		t.Errorf("getpeername = %q, want [::ffff:10.96.0.50]:80", peer)
	}
	if greet, _ := n.b.dial("tcp6", "[::ffff:10.96.0.50]:80"); greet != directGreet {
		t.Errorf("non-enrolled tcp6: %q, want %q", greet, directGreet)
	}
}

// Point 5: kill -9 the agent and start it again while a pod opens new
// connections in a loop: not one fails or bypasses the proxy, and the
// second agent adopts the pinned link instead of re-attaching.
func TestPrivilegedAgentRestartNoGap(t *testing.T) {
	requirePrivileged(t)
	tp := newTopo(t, "a")
	tp.cgroup("n1/kubepods")
	spec := agentSpec{Node: tp.id + "-n1", CgroupPath: filepath.Join(tp.id, "n1/kubepods"), PinRoot: testPinRoot,
		Proxy: proxyAddr1, Pods: []string{"aaaaaaaa-0000-0000-0000-00000000000a"}, Meshed: []string{vipMeshed}}
	cfg := Config{Node: spec.Node, PinRoot: testPinRoot}
	t.Cleanup(func() {
		if err := Cleanup(cfg); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	pod := tp.startPod("a", "n1/kubepods/podaaaaaaaa-0000-0000-0000-00000000000a")
	tp.serveDirect(vipMeshed)

	agent := tp.startAgent(spec)
	pinDir := filepath.Join(testPinRoot, spec.Node)
	records, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, bpf.RedirectMapOrigDsts), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer records.Close()
	tp.serveProxy("n1", proxyAddr1, func(c, p netip.AddrPort) (Original, bool) { return lookupRecord(records, c, p) })
	linkID := func() link.ID {
		l, err := link.LoadPinnedLink(linkPin(pinDir, bpf.RedirectProgWeftConnect4), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		return info.ID
	}
	before := linkID()

	cookie, err := NetnsCookie(filepath.Join("/run/netns", tp.podNS["a"]))
	if err != nil {
		t.Fatal(err)
	}
	pod.send(fmt.Sprintf("loop tcp4 %s proxy n1 %s %d", vipMeshed, vipMeshed, cookie))
	waitConns(t, tp, pod, 200) // some connections before the kill
	agent.kill()               // SIGKILL
	waitConns(t, tp, pod, 200) // and while no agent runs
	tp.startAgent(spec)
	waitConns(t, tp, pod, 200)
	pod.send("stop")
	var ok, bad int
	var first string
	line := pod.read()
	if _, err := fmt.Sscanf(line, "loop %d %d", &ok, &bad); err != nil {
		t.Fatalf("loop result %q: %v", line, err)
	}
	first = strings.Join(strings.Fields(line)[3:], " ")
	t.Logf("connections across the restart: %d ok, %d failed", ok, bad)
	if bad != 0 || ok < 600 {
		t.Errorf("restart: %d ok, %d failed or not redirected (first: %s)", ok, bad, first)
	}
	if after := linkID(); after != before {
		t.Errorf("connect4 link re-created (%d -> %d), want the pinned one adopted", before, after)
	}
}

// waitConns waits until the proxy accepted n more connections (at most
// 30 s), so each phase of the restart really has traffic.
func waitConns(t *testing.T, tp *topo, pod *proc, n int64) {
	t.Helper()
	target := tp.accepted.Load() + n
	for range 3000 {
		if tp.accepted.Load() >= target {
			return
		}
		if pod.cmd.ProcessState != nil {
			t.Fatal("pod exited")
		}
		sleepMs(10)
	}
	t.Fatalf("proxy accepted %d connections, want %d", tp.accepted.Load(), target)
}

// Point 6: Cleanup leaves no link, pin, map or program behind.
func TestPrivilegedCleanupLeavesNothing(t *testing.T) {
	requirePrivileged(t)
	tp := newTopo(t, "a")
	dp, cfg := tp.openDP("n1", "n1/kubepods", proxyAddr1)
	pod := tp.startPod("a", "n1/kubepods/podaaaaaaaa-0000-0000-0000-00000000000b")
	tp.serveProxy("n1", proxyAddr1, dp.Lookup)
	mustSync(t, dp, Desired{Pods: []Pod{{UID: "aaaaaaaa-0000-0000-0000-00000000000b"}},
		Meshed: []netip.AddrPort{netip.MustParseAddrPort(vipMeshed)}})
	if greet, _ := pod.dial("tcp4", vipMeshed); !strings.HasPrefix(greet, "proxy n1 "+vipMeshed) {
		t.Fatalf("redirect before cleanup: %q", greet)
	}

	var linkIDs []link.ID
	var progIDs []ebpf.ProgramID
	for _, l := range dp.links {
		info, err := l.Info()
		if err != nil {
			t.Fatal(err)
		}
		linkIDs = append(linkIDs, info.ID)
		progIDs = append(progIDs, info.Program)
	}
	var mapIDs []ebpf.MapID
	for _, name := range pinnedMaps {
		info, err := dp.coll.Maps[name].Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		mapIDs = append(mapIDs, id)
	}
	dp.Close()
	pinned, err := Inspect(cfg)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	cgID, _ := cgroupID(filepath.Join(tp.cgRoot, "n1/kubepods"))
	if len(pinned.Links) != len(hooks) || pinned.Links[0].CgroupID != cgID || len(pinned.State.Enrolled) != 1 || len(pinned.State.Meshed) != 1 {
		t.Errorf("Inspect after Close = %+v, want %d links at cgroup %d, 1 pod, 1 VIP", pinned, len(hooks), cgID)
	}
	if err := Cleanup(cfg); err != nil {
		t.Fatalf("Cleanup: %v", err)
	}
	if _, err := Inspect(cfg); !errors.Is(err, ErrNotLoaded) {
		t.Errorf("Inspect after Cleanup = %v, want ErrNotLoaded", err)
	}
	if err := Cleanup(cfg); err != nil {
		t.Errorf("second Cleanup: %v", err)
	}
	if _, err := os.Stat(cfg.withDefaults().pinDir()); !isNotExist(err) {
		t.Errorf("pin dir still there: %v", err)
	}
	gone := func() bool {
		for _, id := range linkIDs {
			if l, err := link.NewFromID(id); err == nil {
				l.Close()
				return false
			}
		}
		for _, id := range progIDs {
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				p.Close()
				return false
			}
		}
		for _, id := range mapIDs {
			if m, err := ebpf.NewMapFromID(id); err == nil {
				m.Close()
				return false
			}
		}
		return true
	}
	if !eventually(gone) {
		t.Errorf("kernel objects left after Cleanup (links %v, programs %v, maps %v)", linkIDs, progIDs, mapIDs)
	}
	if greet, _ := pod.dial("tcp4", vipMeshed); !strings.Contains(greet, "refused") {
		t.Errorf("after cleanup the VIP must not be redirected: %q", greet)
	}
	entries, _ := os.ReadDir(tp.cg2)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "weft-preflight-") {
			t.Errorf("preflight cgroup left behind: %s", e.Name())
		}
	}
}

// After Close, Lookup says not found and Sync refuses; nothing panics.
func TestPrivilegedUseAfterClose(t *testing.T) {
	requirePrivileged(t)
	tp := newTopo(t)
	dp, _ := tp.openDP("n1", "n1/kubepods", proxyAddr1)
	dp.Close()
	if _, ok := dp.Lookup(netip.MustParseAddrPort("10.77.1.2:4000"), netip.MustParseAddrPort(proxyAddr1)); ok {
		t.Error("Lookup after Close found something")
	}
	if _, err := dp.Sync(Desired{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v, want ErrClosed", err)
	}
	if _, err := dp.Sync(Desired{Meshed: []netip.AddrPort{{}}}); !errors.Is(err, ErrInvalidVIP) {
		t.Errorf("Sync with an invalid VIP = %v, want ErrInvalidVIP", err)
	}
}

// Point 7: two agents for two nodes on one kernel, both attached at the same
// ancestor cgroup: each redirects only its own node's pods to its own proxy,
// and cleaning up one leaves the other working.
func TestPrivilegedTwoNodesOneKernel(t *testing.T) {
	requirePrivileged(t)
	tp := newTopo(t, "a", "b")
	dp1, cfg1 := tp.openDP("n1", "", proxyAddr1)
	dp2, _ := tp.openDP("n2", "", proxyAddr2)
	tp.serveProxy("n1", proxyAddr1, dp1.Lookup)
	tp.serveProxy("n2", proxyAddr2, dp2.Lookup)
	tp.serveDirect(vipMeshed)
	uidA := "aaaaaaaa-0000-0000-0000-00000000000c"
	uidB := "bbbbbbbb-0000-0000-0000-00000000000d"
	a := tp.startPod("a", "n1/kubepods/pod"+uidA)
	// node 2 uses the systemd driver's naming
	b := tp.startPod("b", "n2/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"+strings.ReplaceAll(uidB, "-", "_")+".slice/cri-containerd-0123.scope")
	meshed := []netip.AddrPort{netip.MustParseAddrPort(vipMeshed)}
	r1 := mustSync(t, dp1, Desired{Pods: []Pod{{UID: uidA}}, Meshed: meshed})
	r2 := mustSync(t, dp2, Desired{Pods: []Pod{{UID: uidB}}, Meshed: meshed})
	// Each agent finds pods in the whole attach subtree; a node's agent is
	// given only its own pods, which is what scopes enrollment.
	if r1.Pods[0].NetnsCookie == r2.Pods[0].NetnsCookie {
		t.Fatal("two pods got the same netns cookie")
	}

	if greet, _ := a.dial("tcp4", vipMeshed); greet != fmt.Sprintf("proxy n1 %s %d", vipMeshed, r1.Pods[0].NetnsCookie) {
		t.Errorf("node 1 pod: %q, want node 1's proxy", greet)
	}
	if greet, _ := b.dial("tcp4", vipMeshed); greet != fmt.Sprintf("proxy n2 %s %d", vipMeshed, r2.Pods[0].NetnsCookie) {
		t.Errorf("node 2 pod: %q, want node 2's proxy", greet)
	}
	// Node 1 syncing with no pods must not touch node 2's enrollment.
	mustSync(t, dp1, Desired{Meshed: meshed})
	if greet, _ := b.dial("tcp4", vipMeshed); !strings.HasPrefix(greet, "proxy n2 ") {
		t.Errorf("node 2 pod after node 1 resync: %q", greet)
	}
	if greet, _ := a.dial("tcp4", vipMeshed); greet != directGreet {
		t.Errorf("node 1 pod after unenroll: %q", greet)
	}
	dp1.Close()
	if err := Cleanup(cfg1); err != nil {
		t.Fatal(err)
	}
	if greet, _ := b.dial("tcp4", vipMeshed); !strings.HasPrefix(greet, "proxy n2 ") {
		t.Errorf("node 2 pod after node 1 cleanup: %q", greet)
	}
	if _, err := os.Stat(filepath.Join(testPinRoot, tp.id+"-n2", bpf.RedirectMapOrigDsts)); err != nil {
		t.Errorf("node 2 pins after node 1 cleanup: %v", err)
	}
}

// Reopening (what a restarted agent does) adopts pins and keeps map
// contents; a changed attach cgroup moves the links.
func TestPrivilegedReopenAdopts(t *testing.T) {
	requirePrivileged(t)
	tp := newTopo(t, "a")
	dp, cfg := tp.openDP("n1", "n1/kubepods", proxyAddr1)
	pod := tp.startPod("a", "n1/kubepods/podaaaaaaaa-0000-0000-0000-00000000000e")
	mustSync(t, dp, Desired{Pods: []Pod{{UID: "aaaaaaaa-0000-0000-0000-00000000000e"}},
		Meshed: []netip.AddrPort{netip.MustParseAddrPort(vipMeshed)}})
	dp.Close()

	cfg.CgroupPath = filepath.Join(tp.id, "n1")
	dp2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dp2.Close()
	st, err := dp2.State()
	if err != nil || len(st.Enrolled) != 1 || len(st.Meshed) != 1 {
		t.Fatalf("state after reopen = %+v, %v; want the pinned contents", st, err)
	}
	tp.serveProxy("n1", proxyAddr1, dp2.Lookup)
	if greet, _ := pod.dial("tcp4", vipMeshed); !strings.HasPrefix(greet, "proxy n1 "+vipMeshed) {
		t.Errorf("after moving the attach point: %q", greet)
	}
	// Nothing stays attached at the old cgroup.
	oldCg, err := os.Open(filepath.Join(tp.cgRoot, "n1/kubepods"))
	if err != nil {
		t.Fatal(err)
	}
	defer oldCg.Close()
	for _, h := range hooks {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(oldCg.Fd()), Attach: h.attach})
		if err != nil || len(q.Programs) != 0 {
			t.Errorf("old cgroup still has %s programs: %+v, %v", h.prog, q, err)
		}
	}
	id, _ := cgroupID(filepath.Join(tp.cg2, cfg.CgroupPath))
	for name, l := range dp2.links {
		if !sameCgroupLink(l, id, hookAttach(name)) {
			info, err := l.Info()
			t.Errorf("link %s not attached at the new cgroup %d: %+v %+v %v", name, id, info, info.Cgroup(), err)
		}
	}
}

func hookAttach(prog string) ebpf.AttachType {
	for _, h := range hooks {
		if h.prog == prog {
			return h.attach
		}
	}
	return 0
}

// BPF_PROG_TEST_RUN: cgroup/sock_addr and sockops programs cannot be test-run
// on this kernel generation; if a kernel gains it, run connect4 on a context
// from a non-enrolled netns and expect "allow, untouched".
func TestPrivilegedProgTestRun(t *testing.T) {
	requirePrivileged(t)
	spec, err := bpf.LoadRedirect()
	if err != nil {
		t.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	ret, err := coll.Programs[bpf.RedirectProgWeftConnect4].Run(&ebpf.RunOptions{Context: make([]byte, 80)})
	if errors.Is(err, ebpf.ErrNotSupported) {
		t.Skipf("kernel cannot BPF_PROG_TEST_RUN cgroup/sock_addr programs: %v", err)
	}
	if err != nil || ret != 1 {
		t.Errorf("connect4 test run = %d, %v; want 1 (allow)", ret, err)
	}
}

// Sync reports per pod: found pods are enrolled, a missing one carries the
// reason; a pod whose processes are gone keeps its earlier cookie.
func TestPrivilegedSyncPerPodResults(t *testing.T) {
	n := setupNode1(t)
	uidA := "aaaaaaaa-0000-0000-0000-000000000001"
	missing := "dddddddd-0000-0000-0000-000000000009"
	meshed := []netip.AddrPort{netip.MustParseAddrPort(vipMeshed)}
	res, err := n.dp.Sync(Desired{Pods: []Pod{{UID: missing}, {UID: uidA}}, Meshed: meshed})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Pods[0]; r.Enrolled || !errors.Is(r.Err, ErrPodNotFound) {
		t.Errorf("missing pod: %+v, want not enrolled with ErrPodNotFound", r)
	}
	if r := res.Pods[1]; !r.Enrolled || r.Err != nil || r.NetnsCookie != n.cookieA {
		t.Errorf("pod a: %+v", r)
	}
	// A pod given by netns path (how a CRI sandbox or the lab runtime knows it).
	res, err = n.dp.Sync(Desired{Pods: []Pod{{UID: uidA}, {UID: "bbbbbbbb-0000-0000-0000-000000000002", NetnsPath: "/run/netns/" + n.tp.podNS["b"]}}, Meshed: meshed})
	if err != nil || !res.Pods[1].Enrolled {
		t.Fatalf("pod b by netns path: %+v, %v", res.Pods, err)
	}
	if greet, _ := n.b.dial("tcp4", vipMeshed); !strings.HasPrefix(greet, "proxy n1 "+vipMeshed) {
		t.Errorf("pod b enrolled by path: %q", greet)
	}
	// A hostNetwork pod (the node netns, where the agent runs) is refused.
	res, err = n.dp.Sync(Desired{Pods: []Pod{{UID: uidA}, {UID: "x", NetnsPath: "/proc/self/ns/net"}}, Meshed: meshed})
	if err != nil || res.Pods[1].Enrolled || !errors.Is(res.Pods[1].Err, ErrNodeNetns) {
		t.Errorf("agent's own netns: %+v, %v; want ErrNodeNetns", res.Pods[1], err)
	}
	n.a.kill()
	res, err = n.dp.Sync(Desired{Pods: []Pod{{UID: uidA}}, Meshed: meshed})
	if err != nil || !res.Pods[0].Enrolled || res.Pods[0].NetnsCookie != n.cookieA {
		t.Errorf("pod a without processes: %+v, %v; want its cookie kept", res.Pods, err)
	}
	if st, _ := n.dp.State(); len(st.Enrolled) != 1 || st.Enrolled[0] != n.cookieA {
		t.Errorf("enrolled = %v, want only pod a's cookie", st.Enrolled)
	}
}

// The proxy's own address is never meshed: an enrolled pod dialing the
// capture port still gets no record.
func TestPrivilegedProxyAddressNeverMeshed(t *testing.T) {
	n := setupNode1(t)
	proxy := netip.MustParseAddrPort(proxyAddr1)
	res, err := n.dp.Sync(Desired{Pods: []Pod{{UID: "aaaaaaaa-0000-0000-0000-000000000001"}},
		Meshed: []netip.AddrPort{netip.MustParseAddrPort(vipMeshed), proxy, netip.MustParseAddrPort("[fd00::10]:80")}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.SkippedVIPs) != 2 || res.SkippedVIPs[1] != proxy {
		t.Errorf("skipped = %v, want the IPv6 VIP and the proxy address", res.SkippedVIPs)
	}
	if st, _ := n.dp.State(); len(st.Meshed) != 1 {
		t.Errorf("meshed = %v, want only %s", st.Meshed, vipMeshed)
	}
	if greet, _ := n.a.dial("tcp4", proxyAddr1); greet != "proxy n1 refused" {
		t.Errorf("enrolled pod straight to the proxy: %q", greet)
	}
}

// Preflight passes on this machine and leaves no temporary cgroup, at the root of
// the cgroup v2 mount and below an attach point.
func TestPrivilegedPreflight(t *testing.T) {
	requirePrivileged(t)
	cg2, _ := Cgroup2Root()
	under := fmt.Sprintf("weft-test-preflight-%d", os.Getpid())
	if err := os.Mkdir(filepath.Join(cg2, under), 0o755); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(filepath.Join(cg2, under))
	if r := Preflight(under); !r.OK() {
		t.Fatalf("preflight below %s:\n%s", under, r.Format())
	}
	if entries, _ := os.ReadDir(filepath.Join(cg2, under)); slices.ContainsFunc(entries, func(e os.DirEntry) bool { return e.IsDir() }) {
		t.Errorf("preflight left a cgroup below %s: %v", under, entries)
	}
	r := Preflight("")
	if !r.OK() {
		t.Fatalf("preflight:\n%s", r.Format())
	}
	names := map[string]bool{}
	for _, c := range r.Checks {
		names[c.Name] = c.OK
	}
	for _, want := range []string{"kernel", "cgroup v2", "program weft_connect4", "program weft_getpeername6",
		"attach cgroup/connect6", "attach sockops", "netns cookie"} {
		if !names[want] {
			t.Errorf("check %q missing or failed:\n%s", want, r.Format())
		}
	}
	if _, err := os.Stat(filepath.Join(cg2, fmt.Sprintf("weft-preflight-%d", os.Getpid()))); !isNotExist(err) {
		t.Errorf("preflight cgroup left: %v", err)
	}
}

// An upgrade that changed a map's layout: Open replaces the stale pin with
// a new map and keeps working.
func TestPrivilegedIncompatiblePinReplaced(t *testing.T) {
	requirePrivileged(t)
	tp := newTopo(t, "a")
	tp.cgroup("n1/kubepods")
	cfg := Config{Node: tp.id + "-n1", CgroupPath: filepath.Join(tp.id, "n1/kubepods"), PinRoot: testPinRoot,
		ProxyAddr: netip.MustParseAddrPort(proxyAddr1)}
	t.Cleanup(func() {
		if err := Cleanup(cfg); err != nil {
			t.Errorf("Cleanup: %v", err)
		}
	})
	dir := cfg.withDefaults().pinDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 8, ValueSize: 4, MaxEntries: 7})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Pin(filepath.Join(dir, bpf.RedirectMapEnrolled)); err != nil {
		t.Fatal(err)
	}
	old.Close()
	dp, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open over an incompatible pin: %v", err)
	}
	defer dp.Close()
	m, err := ebpf.LoadPinnedMap(filepath.Join(dir, bpf.RedirectMapEnrolled), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.MaxEntries() == 7 {
		t.Error("stale map still pinned")
	}
	pod := tp.startPod("a", "n1/kubepods/podaaaaaaaa-0000-0000-0000-0000000000ff")
	tp.serveProxy("n1", proxyAddr1, dp.Lookup)
	mustSync(t, dp, Desired{Pods: []Pod{{UID: "aaaaaaaa-0000-0000-0000-0000000000ff"}}, Meshed: []netip.AddrPort{netip.MustParseAddrPort(vipMeshed)}})
	if greet, _ := pod.dial("tcp4", vipMeshed); !strings.HasPrefix(greet, "proxy n1 "+vipMeshed) {
		t.Errorf("after replacing the stale pin: %q", greet)
	}
}
