package node

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cgroup2Mount finds the cgroup v2 mount point ("" when there is none).
func cgroup2Mount() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, " - ", 2)
		fields := strings.Fields(parts[0])
		if len(parts) == 2 && strings.HasPrefix(parts[1], "cgroup2 ") && len(fields) >= 5 {
			return fields[4]
		}
	}
	return ""
}

// privileged skips unless the test can create namespaces and cgroups.
func privileged(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, cgroups)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8) from iproute2")
	}
	if cgroup2Mount() == "" {
		t.Skip("needs a cgroup v2 mount")
	}
}

// testNodes returns n node configs with names unique to this test process.
// The nodes' CgroupRoot is a cgroup of its own below the cgroup v2 mount,
// so the test's processes never appear under the lab's <mount>/weft-lab.
func testNodes(t *testing.T, n int) (string, []Config) {
	root := t.TempDir()
	cgRoot := filepath.Join(cgroup2Mount(), fmt.Sprintf("wl-nodetest-%d", os.Getpid()))
	if err := os.MkdirAll(cgRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Rmdir(cgRoot); err != nil && !os.IsNotExist(err) {
			t.Errorf("remove test cgroup root: %v", err)
		}
	})
	var nodes []Config
	for i := 1; i <= n; i++ {
		nodes = append(nodes, Config{
			Name:          fmt.Sprintf("nt%d-%d", os.Getpid()%100000, i),
			Index:         i,
			StateDir:      filepath.Join(root, "nodes", fmt.Sprint(i)),
			NodeIP:        netip.AddrFrom4([4]byte{172, 30, 0, byte(10 + i)}),
			PodCIDR:       netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
			ServiceCIDR:   netip.MustParsePrefix("10.96.0.0/16"),
			ClusterDNS:    netip.MustParseAddr("10.96.0.10"),
			ClusterDomain: "cluster.local",
			APIServerVIP:  netip.MustParseAddrPort("172.30.255.1:6443"),
			APIServerHost: "127.0.0.1:6443",
			KubeletPort:   10250 + i,
			CgroupRoot:    cgRoot,
		})
	}
	t.Cleanup(func() {
		if err := Cleanup(root); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return root, nodes
}

// assertNothingLeft checks that no netns, cgroup or process of the nodes
// remains.
func assertNothingLeft(t *testing.T, nodes []Config, pids []int) {
	t.Helper()
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		for _, n := range nodes {
			if ownedNetns(n.Name, e.Name()) || e.Name() == fabricNetns(nodes[0].Name) {
				t.Errorf("netns %s left behind", e.Name())
			}
		}
	}
	for _, n := range nodes {
		if _, err := os.Stat(nodeCgroup(n.CgroupRoot, n.Name)); err == nil {
			t.Errorf("cgroup %s left behind", nodeCgroup(n.CgroupRoot, n.Name))
		}
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(b), ") Z ") {
				t.Errorf("process %d left running", pid)
			}
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, n := range nodes {
		if strings.Contains(string(mounts), nodeNetns(n.Name)) {
			t.Errorf("mount of %s left behind", nodeNetns(n.Name))
		}
	}
}

func TestPrivilegedFabricRoutesPodsAcrossNodes(t *testing.T) {
	privileged(t)
	root, nodes := testNodes(t, 2)
	if err := SetupFabric(nodes, HostLink{}); err != nil {
		t.Fatal(err)
	}
	ip1, ip2 := netip.MustParseAddr("10.244.1.2"), netip.MustParseAddr("10.244.2.2")
	sb1, err := createSandbox(nodes[0].Name, "uid-a", ip1)
	if err != nil {
		t.Fatal(err)
	}
	sb2, err := createSandbox(nodes[1].Name, "uid-b", ip2)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := listenInNetns(netnsPath(sb2.Netns), netip.AddrPortFrom(ip2, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s", c.RemoteAddr().(*net.TCPAddr).IP)
			c.Close()
		}
	}()
	// Pod to pod across nodes keeps the source IP; node to remote pod too.
	for _, tc := range []struct{ from, want string }{
		{sb1.Netns, ip1.String()},
		{nodeNetns(nodes[0].Name), nodes[0].NodeIP.String()},
	} {
		c, err := dialInNetns(t.Context(), netnsPath(tc.from), "tcp", netip.AddrPortFrom(ip2, 8080).String())
		if err != nil {
			t.Fatalf("dial from %s: %v", tc.from, err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != tc.want {
			t.Errorf("from %s: server saw %q, want %q", tc.from, b, tc.want)
		}
	}
	// Without a HostLink the host netns got nothing: no route to a pod CIDR,
	// and no link into this fabric (the bridge has only the nodes' ports).
	// Host routes to 172.30.0.0/24 may exist: those of a lab running beside
	// the test.
	if out, err := exec.Command("ip", "-o", "route", "show").Output(); err != nil {
		t.Fatal(err)
	} else if strings.Contains(string(out), "10.244.") {
		t.Errorf("host routes mention pod CIDRs:\n%s", out)
	}
	if out, err := exec.Command("ip", "-n", fabricNetns(nodes[0].Name), "-o", "link", "show").Output(); err != nil {
		t.Fatal(err)
	} else if n := strings.Count(string(out), "\n"); n != 4 || strings.Contains(string(out), fabricHostPeer) {
		t.Errorf("fabric links (want lo, br0 and two node ports):\n%s", out)
	}
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, nodes, nil)
	if err := Cleanup(root); err != nil {
		t.Fatalf("second cleanup: %v", err)
	}
}

func TestPrivilegedProcessRunsInNetnsCgroupAndMounts(t *testing.T) {
	privileged(t)
	root, nodes := testNodes(t, 1)
	if err := SetupFabric(nodes, HostLink{}); err != nil {
		t.Fatal(err)
	}
	sb, err := createSandbox(nodes[0].Name, "uid-p", netip.MustParseAddr("10.244.1.7"))
	if err != nil {
		t.Fatal(err)
	}
	cg := podCgroup(nodes[0].CgroupRoot, nodes[0].Name, "uid-p")
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 10.96.0.10\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	outFile, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	cmd, err := startProc(procSpec{
		Argv:   []string{"/bin/sh", "-c", "cat /etc/resolv.conf; cat /proc/self/cgroup; readlink /proc/self/ns/net; sleep 30"},
		Netns:  netnsPath(sb.Netns),
		Cgroup: cg,
		Binds:  []bindMount{{Source: resolv, Target: "/etc/resolv.conf", ReadOnly: true}},
		Stdout: outFile,
	})
	if err != nil {
		t.Fatal(err)
	}
	var nsIno syscall.Stat_t
	if err := syscall.Stat(netnsPath(sb.Netns), &nsIno); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	read := func() string { b, _ := os.ReadFile(outFile.Name()); return string(b) }
	for !strings.Contains(read(), "net:[") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := read()
	for _, want := range []string{
		"nameserver 10.96.0.10",
		"0::" + strings.TrimPrefix(cg, cgroup2Mount()) + "\n",
		fmt.Sprintf("net:[%d]", nsIno.Ino),
	} {
		if !strings.Contains(got, want) {
			t.Errorf("process output lacks %q:\n%s", want, got)
		}
	}
	// The bind mount stayed private to the process.
	if b, _ := os.ReadFile("/etc/resolv.conf"); strings.Contains(string(b), "10.96.0.10") {
		t.Error("host /etc/resolv.conf changed")
	}
	if pids := cgroupPids(cg); !slices.Contains(pids, cmd.Process.Pid) {
		t.Errorf("cgroup.procs = %v, want it to hold %d", pids, cmd.Process.Pid)
	}
	go cmd.Wait()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, nodes, []int{cmd.Process.Pid})
}
