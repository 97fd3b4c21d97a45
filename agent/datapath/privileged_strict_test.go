package datapath

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/api/mesh"
)

// strictNode is node n1 with a strict pod a listening on :8080, a
// permissive pod c listening on :8080, a non-enrolled pod b, a hostNetwork
// process in n1's kubepods (where a real node proxy also runs), and a
// client "far" on another node: its own netns (10.77.4.2) routed through
// n1 and its own cgroup outside n1's kubepods.
type strictNode struct {
	tp            *topo
	dp            *Datapath
	cfg           Config
	a, b, c, host *proc
	far           *proc
	uidA, uidC    string
	ipA, ipC      netip.Addr
	addrA, addrC  string
	nodeAddrs     []netip.Addr
}

func setupStrict(t *testing.T) *strictNode {
	requirePrivileged(t)
	tp := newTopo(t, "a", "b", "c", "far")
	run(t, "ip", "netns", "exec", tp.nodeNS, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	n := &strictNode{tp: tp, uidA: "aaaaaaaa-0000-0000-0000-0000000000a1", uidC: "cccccccc-0000-0000-0000-0000000000c1"}
	for _, a := range []string{"10.77.0.1", "10.77.0.2", "10.96.0.50", "10.96.0.51", "10.77.1.1", "10.77.2.1", "10.77.3.1", "10.77.4.1"} {
		n.nodeAddrs = append(n.nodeAddrs, netip.MustParseAddr(a))
	}
	n.dp, n.cfg = tp.openDP("n1", "n1/kubepods", proxyAddr1, func(c *Config) { c.NodeAddrs = n.nodeAddrs })
	n.a = tp.startPod("a", "n1/kubepods/pod"+n.uidA)
	n.b = tp.startPod("b", "n1/kubepods/podbbbbbbbb-0000-0000-0000-0000000000b1")
	n.c = tp.startPod("c", "n1/kubepods/pod"+n.uidC)
	n.host = tp.startPod("", "n1/kubepods/podhhhhhhhh-0000-0000-0000-0000000000d1")
	n.far = tp.startPod("far", "n2/kubepods/podffffffff-0000-0000-0000-0000000000f1")
	n.ipA, n.ipC = netip.MustParseAddr(tp.podIP["a"]), netip.MustParseAddr(tp.podIP["c"])
	n.addrA, n.addrC = tp.podIP["a"]+":8080", tp.podIP["c"]+":8080"
	for _, p := range []*proc{n.a, n.c} {
		p.send("listen 0.0.0.0:8080")
		if got := p.read(); got != "listening" {
			t.Fatalf("pod listener: %q", got)
		}
	}
	n.sync(t, true)
	return n
}

// sync enrolls a and c; a is strict when strictA.
func (n *strictNode) sync(t *testing.T, strictA bool) {
	t.Helper()
	mustSync(t, n.dp, Desired{Pods: []Pod{
		{UID: n.uidA, Strict: strictA, IPs: []netip.Addr{n.ipA, netip.MustParseAddr("fd00::a")}},
		{UID: n.uidC, IPs: []netip.Addr{n.ipC}},
	}})
}

// stats returns a pod listener's accepted connections and bytes read.
func stats(t *testing.T, p *proc) (accepted, bytes int) {
	t.Helper()
	p.send("stats")
	line := p.read()
	if _, err := fmt.Sscanf(line, "stats %d %d", &accepted, &bytes); err != nil {
		t.Fatalf("stats %q: %v", line, err)
	}
	return accepted, bytes
}

// kubeletDial connects from the node netns from this test process, which is
// outside every kubepods cgroup, as the kubelet is.
func (n *strictNode) kubeletDial(addr string) (string, error) {
	var greet string
	err := inNetns(n.tp.nodeNS, func() error {
		c, err := net.DialTimeout("tcp4", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		greet = strings.TrimSpace(line)
		return err
	})
	return greet, err
}

func wantRefused(t *testing.T, what, greet string) {
	t.Helper()
	if !strings.HasPrefix(greet, "err") || !strings.Contains(greet, "operation not permitted") {
		t.Errorf("%s: %q, want the connect refused with EPERM", what, greet)
	}
}

// A strict pod: plaintext from this node's other pods (enrolled or not,
// hostNetwork) is refused at connect, a SYN from another node is dropped,
// and nothing reaches the listener. The node proxy's marked dial, the pod
// itself and the kubelet get through; a permissive pod is untouched; and
// removing the strict entry restores plaintext.
func TestPrivilegedStrictMTLS(t *testing.T) {
	n := setupStrict(t)
	podGreet := "pod " + n.addrA

	// Refused before any packet: same-node plaintext callers.
	greet, _ := n.b.dial("tcp4", n.addrA)
	wantRefused(t, "non-enrolled pod -> strict pod", greet)
	greet, _ = n.b.dial("tcp6", "[::ffff:"+n.ipA.String()+"]:8080")
	wantRefused(t, "non-enrolled pod (AF_INET6, v4-mapped) -> strict pod", greet)
	greet, _ = n.host.dial("tcp4", n.addrA)
	wantRefused(t, "hostNetwork pod -> strict pod", greet)
	n.host.send(fmt.Sprintf("dialmark %#x %s", 0x4000, n.addrA))
	wantRefused(t, "hostNetwork pod with kube-proxy's mark -> strict pod", n.host.read())
	greet, _ = n.c.dial("tcp4", n.addrA)
	wantRefused(t, "enrolled permissive pod dialing the strict pod's IP directly", greet)

	// Dropped at the strict pod: a SYN from another node.
	if greet, _ := n.far.dial("tcp4", n.addrA); !strings.HasPrefix(greet, "err") || !strings.Contains(greet, "timeout") {
		t.Errorf("other node -> strict pod: %q, want the SYN dropped (dial timeout)", greet)
	}
	if acc, bytes := stats(t, n.a); acc != 0 || bytes != 0 {
		t.Fatalf("strict pod's listener accepted %d connections (%d bytes) from plaintext callers, want none", acc, bytes)
	}
	cnt, err := n.dp.StrictCounters()
	if err != nil {
		t.Fatal(err)
	}
	if cnt.Connect != 5 || cnt.SYN == 0 {
		t.Errorf("refusal counters %+v, want 5 connects and at least one SYN", cnt)
	}

	// Allowed: the node proxy's marked dial, the pod itself, the kubelet.
	n.host.send(fmt.Sprintf("dialmark %#x %s", mesh.ProxyDialMark|0x4000, n.addrA))
	if got := n.host.read(); !strings.HasPrefix(got, "ok "+podGreet) {
		t.Errorf("node proxy's marked dial (with kube-proxy's bit too): %q, want %q", got, podGreet)
	}
	if greet, _ := n.a.dial("tcp4", n.addrA); greet != podGreet {
		t.Errorf("strict pod -> itself on its own IP: %q, want %q", greet, podGreet)
	}
	if greet, err := n.kubeletDial(n.addrA); err != nil || greet != podGreet {
		t.Errorf("kubelet (node netns, outside kubepods) -> strict pod: %q %v, want %q", greet, err, podGreet)
	}
	if acc, _ := stats(t, n.a); acc != 3 {
		t.Errorf("strict pod accepted %d connections, want 3 (proxy, itself, kubelet)", acc)
	}

	// A permissive pod is reachable as before, from every side.
	for name, p := range map[string]*proc{"non-enrolled pod": n.b, "hostNetwork pod": n.host, "other node": n.far} {
		if greet, _ := p.dial("tcp4", n.addrC); greet != "pod "+n.addrC {
			t.Errorf("%s -> permissive pod: %q", name, greet)
		}
	}

	// Permissive again: plaintext works.
	n.sync(t, false)
	if st, _ := n.dp.State(); len(st.Strict) != 0 {
		t.Fatalf("strict entries left after the pod turned permissive: %+v", st.Strict)
	}
	for name, p := range map[string]*proc{"non-enrolled pod": n.b, "hostNetwork pod": n.host, "other node": n.far} {
		if greet, _ := p.dial("tcp4", n.addrA); greet != podGreet {
			t.Errorf("after strict removed, %s -> pod: %q, want %q", name, greet, podGreet)
		}
	}
	if after, _ := n.dp.StrictCounters(); after.Connect != cnt.Connect {
		t.Errorf("refusals counted after strict was removed: %+v -> %+v", cnt, after)
	}
}

// Through a Service: kube-proxy's DNAT (emulated with an nftables rule in
// the node netns, output hook: VIP 10.96.0.60:80 -> pod a :8080) hides the
// strict pod from connect4, and a hostNetwork caller's SYN carries a node
// address. The egress check drops it after NAT; the node proxy's marked
// dial through the same VIP passes, as does everything once a is
// permissive.
func TestPrivilegedStrictThroughService(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft to emulate kube-proxy's DNAT")
	}
	n := setupStrict(t)
	rule := "ip daddr 10.96.0.60 tcp dport 80 dnat to " + n.addrA
	rules := "table ip kp {\n" +
		"chain out { type nat hook output priority -100; " + rule + "; }\n" +
		"chain pre { type nat hook prerouting priority -100; " + rule + "; }\n}\n"
	cmd := exec.Command("ip", "netns", "exec", n.tp.nodeNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	run(t, "ip", "-n", n.tp.nodeNS, "route", "add", "10.96.0.60/32", "dev", "va") // as a ServiceCIDR route
	const vip = "10.96.0.60:80"
	podGreet := "pod " + n.addrA
	if greet, _ := n.host.dial("tcp4", vip); !strings.HasPrefix(greet, "err") || !strings.Contains(greet, "timeout") {
		t.Errorf("hostNetwork pod -> Service -> strict pod: %q, want its SYN dropped (dial timeout)", greet)
	}
	if greet, _ := n.b.dial("tcp4", vip); !strings.HasPrefix(greet, "err") {
		t.Errorf("non-enrolled pod -> Service -> strict pod: %q, want it refused", greet)
	}
	if acc, _ := stats(t, n.a); acc != 0 {
		t.Fatalf("strict pod accepted %d connections through the Service, want none", acc)
	}
	cnt, err := n.dp.StrictCounters()
	if err != nil || cnt.Egress == 0 {
		t.Errorf("counters %+v (%v), want egress drops", cnt, err)
	}
	n.host.send(fmt.Sprintf("dialmark %#x %s", mesh.ProxyDialMark, vip))
	if got := n.host.read(); !strings.HasPrefix(got, "ok "+podGreet) {
		t.Errorf("marked dial through the Service: %q, want %q", got, podGreet)
	}
	if greet, err := n.kubeletDial(vip); err != nil || greet != podGreet {
		t.Errorf("node process outside kubepods through the Service: %q %v, want %q", greet, err, podGreet)
	}
	n.sync(t, false)
	if greet, _ := n.host.dial("tcp4", vip); greet != podGreet {
		t.Errorf("permissive again, hostNetwork pod -> Service: %q, want %q", greet, podGreet)
	}
}

// The strict map holds what Sync was told, keyed by IPv4 address with the
// pod's netns cookie; IPv6 addresses are left out; the node's addresses
// are written.
func TestPrivilegedStrictState(t *testing.T) {
	n := setupStrict(t)
	st, err := n.dp.State()
	if err != nil {
		t.Fatal(err)
	}
	cookie, err := NetnsCookie("/run/netns/" + n.tp.podNS["a"])
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Strict) != 1 || st.Strict[0] != (StrictPod{IP: n.ipA, NetnsCookie: cookie}) {
		t.Errorf("strict map = %+v, want only %s with cookie %d", st.Strict, n.ipA, cookie)
	}
	if len(st.NodeAddrs) != len(n.nodeAddrs) {
		t.Errorf("node_addrs = %v, want %v", st.NodeAddrs, n.nodeAddrs)
	}
	pinned, err := Inspect(n.cfg)
	if err != nil || len(pinned.State.Strict) != 1 || pinned.State.Strict[0].IP != n.ipA || len(pinned.State.NodeAddrs) != len(n.nodeAddrs) {
		t.Errorf("Inspect: strict %+v node addrs %v (%v)", pinned.State.Strict, pinned.State.NodeAddrs, err)
	}
	// Nothing to do on a second identical Sync.
	res, err := n.dp.Sync(Desired{Pods: []Pod{
		{UID: n.uidA, Strict: true, IPs: []netip.Addr{n.ipA}},
		{UID: n.uidC, IPs: []netip.Addr{n.ipC}},
	}})
	if err != nil || len(res.Applied) != 0 {
		t.Errorf("second Sync applied %v (%v), want nothing", res.Applied, err)
	}
}
