package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// labHostLink is the lab's host link (lab.HostLink), for the validation
// tests.
var labHostLink = HostLink{
	Name:             "wl-host",
	Addr:             netip.MustParsePrefix("172.30.0.1/24"),
	LoadBalancerPool: netip.MustParsePrefix("172.30.200.0/24"),
}

func fabricNodes(n int) []Config {
	var nodes []Config
	for i := 1; i <= n; i++ {
		nodes = append(nodes, Config{
			Name:         fmt.Sprintf("lab-node-%d", i),
			NodeIP:       netip.AddrFrom4([4]byte{172, 30, 0, byte(10 + i)}),
			PodCIDR:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
			ServiceCIDR:  netip.MustParsePrefix("10.96.0.0/16"),
			APIServerVIP: netip.MustParseAddrPort("172.30.255.1:6443"),
		})
	}
	return nodes
}

func TestHostLinkValidate(t *testing.T) {
	with := func(f func(*HostLink)) HostLink { h := labHostLink; f(&h); return h }
	for _, tc := range []struct {
		name string
		host HostLink
		ok   bool
	}{
		{"the lab's", labHostLink, true},
		{"none", HostLink{}, true},
		{"long name", with(func(h *HostLink) { h.Name = "wl-host-01234567" }), false}, // 16 bytes
		{"longest name", with(func(h *HostLink) { h.Name = "wl-host-0123456" }), true},
		{"name without prefix", with(func(h *HostLink) { h.Name = "host0" }), false},
		{"name with slash", with(func(h *HostLink) { h.Name = "wl-a/b" }), false},
		{"address outside the fabric", with(func(h *HostLink) { h.Addr = netip.MustParsePrefix("172.30.1.1/24") }), false},
		{"address with another mask", with(func(h *HostLink) { h.Addr = netip.MustParsePrefix("172.30.0.1/16") }), false},
		{"address of a node", with(func(h *HostLink) { h.Addr = netip.MustParsePrefix("172.30.0.12/24") }), false},
		{"network address", with(func(h *HostLink) { h.Addr = netip.MustParsePrefix("172.30.0.0/24") }), false},
		{"broadcast address", with(func(h *HostLink) { h.Addr = netip.MustParsePrefix("172.30.0.255/24") }), false},
		{"IPv6 address", with(func(h *HostLink) { h.Addr = netip.MustParsePrefix("fd00::1/64") }), false},
		{"no pool", with(func(h *HostLink) { h.LoadBalancerPool = netip.Prefix{} }), false},
		{"pool not masked", with(func(h *HostLink) { h.LoadBalancerPool = netip.MustParsePrefix("172.30.200.1/24") }), false},
		{"pool over the fabric", with(func(h *HostLink) { h.LoadBalancerPool = netip.MustParsePrefix("172.30.0.0/16") }), false},
		{"pool over a pod CIDR", with(func(h *HostLink) { h.LoadBalancerPool = netip.MustParsePrefix("10.244.2.0/25") }), false},
		{"pool over the Service CIDR", with(func(h *HostLink) { h.LoadBalancerPool = netip.MustParsePrefix("10.96.8.0/24") }), false},
		{"pool over the apiserver VIP", with(func(h *HostLink) { h.LoadBalancerPool = netip.MustParsePrefix("172.30.255.0/24") }), false},
		{"IPv6 pool", with(func(h *HostLink) { h.LoadBalancerPool = netip.MustParsePrefix("fd00:1::/64") }), false},
	} {
		err := tc.host.Validate(fabricNodes(2))
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%s: validate = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestConflictingRoute(t *testing.T) {
	var routes []hostRoute
	if err := json.Unmarshal([]byte(`[{"dst":"default","gateway":"192.0.2.1","dev":"eth0"},
		{"dst":"192.0.2.0/24","dev":"eth0"},{"dst":"172.30.0.0/24","dev":"wl-host"},
		{"dst":"172.30.200.0/24","gateway":"172.30.0.11","dev":"wl-host"},{"dst":"10.8.0.7","dev":"tun0"}]`), &routes); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		link string
		want []netip.Prefix
		conf string // the conflicting route's dst, "" for none
	}{
		{"wl-host", []netip.Prefix{labHostLink.Addr.Masked(), labHostLink.LoadBalancerPool}, ""}, // its own routes, and the default route
		{"wl-t1", []netip.Prefix{netip.MustParsePrefix("172.30.100.0/24"), netip.MustParsePrefix("172.30.201.0/24")}, ""},
		{"wl-t1", []netip.Prefix{netip.MustParsePrefix("172.30.0.0/24")}, "172.30.0.0/24"}, // a running lab's fabric
		{"wl-t1", []netip.Prefix{netip.MustParsePrefix("172.30.100.0/24"), netip.MustParsePrefix("172.30.200.0/23")}, "172.30.200.0/24"},
		{"wl-t1", []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25")}, "192.0.2.0/24"},
		{"wl-t1", []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24")}, "10.8.0.7"}, // a bare host route
	} {
		r, ok := conflictingRoute(routes, tc.link, tc.want...)
		if ok != (tc.conf != "") || r.Dst != tc.conf {
			t.Errorf("conflictingRoute(%s, %v) = %+v %v, want %q", tc.link, tc.want, r, ok, tc.conf)
		}
	}
}

// The host-link tests put addresses into the host netns: a fabric /24 and a
// pool that no lab uses (the lab's are 172.30.0.0/24 and 172.30.200.0/24),
// so they run beside a lab; hostLinkTestLock keeps two test processes from
// taking them at once.
const hostLinkTestLock = "/run/weft-lab-hostlink-test.lock"

var (
	testFabric = netip.MustParsePrefix("172.30.100.0/24")
	testPool   = netip.MustParsePrefix("172.30.201.0/24")
)

// testHostLink moves the nodes onto the test fabric and returns a host link
// named after this test process, holding the host-link test lock until the
// test ends.
func testHostLink(t *testing.T, nodes []Config) HostLink {
	t.Helper()
	f, err := os.OpenFile(hostLinkTestLock, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("lock %s: %v", hostLinkTestLock, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	base := testFabric.Addr().As4()
	for i := range nodes {
		nodes[i].NodeIP = netip.AddrFrom4([4]byte{base[0], base[1], base[2], byte(11 + i)})
	}
	h := HostLink{
		Name:             fmt.Sprintf("wl-t%d", os.Getpid()%100000),
		Addr:             netip.PrefixFrom(testFabric.Addr().Next(), 24),
		LoadBalancerPool: testPool,
	}
	t.Cleanup(func() {
		// The link goes before the lock, whatever the order of the other
		// cleanups (testNodes' Cleanup also removes it).
		if err := cleanupHostLink(h); err != nil {
			t.Errorf("remove host link: %v", err)
		}
		f.Close()
	})
	return h
}

// routeLines lists the host's routes mentioning s.
func routeLines(t *testing.T, s string) []string {
	t.Helper()
	out, err := exec.Command("ip", "-4", "-o", "route", "show", "table", "main").Output()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(l, s) {
			lines = append(lines, strings.TrimSpace(l))
		}
	}
	return lines
}

// remoteServer accepts connections on ln and writes each peer's address.
func remoteServer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprint(c, c.RemoteAddr().String())
		c.Close()
	}
}

// dialRemote connects from the host netns and returns what the server saw
// as the connection's source.
func dialRemote(ctx context.Context, addr netip.AddrPort) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	host, _, _ := net.SplitHostPort(string(b))
	return host, nil
}

// TestPrivilegedHostLinkReachesPool proves the host link's routing and
// return paths with one nft DNAT rule standing in for kube-proxy in node 1
// (TestPrivilegedLoadBalancerThroughKubeProxy runs the real one): the host
// connects to a pool address, node 1 translates it to a pod on node 1 (the
// pod answers the host directly over the fabric) or, masquerading as
// kube-proxy does for externalTrafficPolicy Cluster, to a pod on node 2.
// Then Cleanup, from the state files alone, removes the link and routes.
func TestPrivilegedHostLinkReachesPool(t *testing.T) {
	privileged(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft(8) for the DNAT rule standing in for kube-proxy")
	}
	root, nodes := testNodes(t, 2)
	host := testHostLink(t, nodes)
	if err := SetupFabric(nodes, host); err != nil {
		t.Fatal(err)
	}
	node1 := nodes[0].NodeIP

	// The host holds the link and its two routes, and nothing more.
	hostAddr := host.Addr.Addr().String()
	got := strings.Join(routeLines(t, host.Name), "|")
	for _, want := range []string{
		testFabric.String() + " dev " + host.Name + " proto kernel scope link src " + hostAddr,
		testPool.String() + " via " + node1.String() + " dev " + host.Name,
	} {
		if strings.Count(got, "|") != 1 || !strings.Contains(got, want) {
			t.Errorf("host routes through %s: %q, want two: %q and the fabric's", host.Name, got, want)
		}
	}
	for _, n := range nodes {
		out, err := exec.Command("ip", "-n", nodeNetns(n.Name), "-4", "-o", "route", "show", testPool.String()).Output()
		if err != nil || !strings.Contains(string(out), "dev eth0") || !strings.Contains(string(out), "src "+n.NodeIP.String()) {
			t.Errorf("node %s: pool route %q, %v; want it through eth0", n.Name, out, err)
		}
	}

	// Pods on both nodes, listening on 8080.
	pod1, pod2 := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.2.2")
	for i, p := range []netip.Addr{pod1, pod2} {
		sb, err := createSandbox(nodes[i].Name, fmt.Sprintf("uid-lb%d", i), p)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := listenInNetns(netnsPath(sb.Netns), netip.AddrPortFrom(p, 8080).String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go remoteServer(ln)
	}
	vipLocal := netip.AddrPortFrom(testPool.Addr().Next(), 80)         // .1: to the pod on node 1
	vipRemote := netip.AddrPortFrom(testPool.Addr().Next().Next(), 80) // .2: to the pod on node 2
	rules := fmt.Sprintf(`table ip lbtest {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr %s tcp dport 80 dnat to %s:8080
		ip daddr %s tcp dport 80 ct mark set 1 dnat to %s:8080
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ct mark 1 masquerade
	}
}
`, vipLocal.Addr(), pod1, vipRemote.Addr(), pod2)
	cmd := exec.Command("ip", "netns", "exec", nodeNetns(nodes[0].Name), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	ctx := t.Context()
	for _, tc := range []struct {
		to         netip.AddrPort
		wantSource string
	}{
		{vipLocal, hostAddr},        // the pod sees the host and answers it over the fabric
		{vipRemote, node1.String()}, // masqueraded: back through node 1
	} {
		got, err := dialRemote(ctx, tc.to)
		if err != nil {
			t.Errorf("host -> %v: %v", tc.to, err)
		} else if got != tc.wantSource {
			t.Errorf("host -> %v: the pod saw %s, want %s", tc.to, got, tc.wantSource)
		}
	}
	// A crash: only the state files are left to find the link with.
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(host.Name); err == nil {
		t.Errorf("host link %s left behind", host.Name)
	}
	for _, p := range []string{"172.30.100.", "172.30.201."} {
		if got := routeLines(t, p); len(got) > 0 {
			t.Errorf("host routes left behind: %q", got)
		}
	}
	assertNothingLeft(t, nodes, nil)
	if err := Cleanup(root); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
}

// TestPrivilegedHostLinkRefusesOverlappingRoute: a host route of another
// link over the pool (another lab, a network of the host) makes SetupFabric
// fail before it creates anything.
func TestPrivilegedHostLinkRefusesOverlappingRoute(t *testing.T) {
	privileged(t)
	_, nodes := testNodes(t, 1)
	host := testHostLink(t, nodes)
	other := fmt.Sprintf("wl-o%d", os.Getpid()%100000)
	// A veth pair (both ends here; no dummy module on every kernel).
	if err := ip("link", "add", other, "type", "veth", "peer", "name", other+"p"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ip("link", "del", other); err != nil {
			t.Errorf("remove %s: %v", other, err)
		}
	})
	for _, s := range [][]string{{"link", "set", other, "up"}, {"route", "add", "172.30.201.128/25", "dev", other}} {
		if err := ip(s...); err != nil {
			t.Fatal(err)
		}
	}
	err := SetupFabric(nodes, host)
	if err == nil || !strings.Contains(err.Error(), "host route 172.30.201.128/25 dev "+other+" overlaps") {
		t.Fatalf("SetupFabric = %v, want the overlapping route named", err)
	}
	if _, err := net.InterfaceByName(host.Name); err == nil {
		t.Errorf("host link %s created anyway", host.Name)
	}
	if _, err := os.Stat(netnsPath(nodeNetns(nodes[0].Name))); err == nil {
		t.Errorf("netns %s created anyway", nodeNetns(nodes[0].Name))
	}
}
