package datapath

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestPlan(t *testing.T) {
	cases := []struct {
		name       string
		want, have State
		ops        []string
	}{
		{name: "empty"},
		{
			name: "fresh node",
			want: State{Enrolled: []uint64{7, 3}, Meshed: []netip.AddrPort{ap("10.96.0.20:80"), ap("10.96.0.10:53")}},
			ops:  []string{"enroll 3", "enroll 7", "mesh 10.96.0.10:53", "mesh 10.96.0.20:80"},
		},
		{
			name: "in sync",
			want: State{Enrolled: []uint64{3}, Meshed: []netip.AddrPort{ap("10.96.0.20:80")}},
			have: State{Enrolled: []uint64{3}, Meshed: []netip.AddrPort{ap("10.96.0.20:80")}},
		},
		{
			name: "puts before deletes",
			want: State{Enrolled: []uint64{4}, Meshed: []netip.AddrPort{ap("10.96.0.20:8080")}},
			have: State{Enrolled: []uint64{3}, Meshed: []netip.AddrPort{ap("10.96.0.20:80")}},
			ops:  []string{"enroll 4", "mesh 10.96.0.20:8080", "unmesh 10.96.0.20:80", "unenroll 3"},
		},
		{
			name: "leftovers of an earlier run are removed",
			have: State{Enrolled: []uint64{9, 1}, Meshed: []netip.AddrPort{ap("10.96.1.1:443")}},
			ops:  []string{"unmesh 10.96.1.1:443", "unenroll 1", "unenroll 9"},
		},
		{
			name: "duplicates collapse",
			want: State{Enrolled: []uint64{5, 5}, Meshed: []netip.AddrPort{ap("10.96.0.1:443"), ap("10.96.0.1:443")}},
			have: State{Enrolled: []uint64{5}},
			ops:  []string{"mesh 10.96.0.1:443"},
		},
		{
			name: "strict pods: node addresses first, changed cookie rewritten, removed ones last",
			want: State{
				NodeAddrs: []netip.Addr{ip("10.0.0.1")},
				Strict:    []StrictPod{{ip("10.244.1.5"), 7}, {ip("10.244.1.6"), 8}, {ip("10.244.1.6"), 9}},
			},
			have: State{
				NodeAddrs: []netip.Addr{ip("10.0.0.9")},
				Strict:    []StrictPod{{ip("10.244.1.6"), 3}, {ip("10.244.1.7"), 4}},
			},
			ops: []string{"node-addr 10.0.0.1", "strict 10.244.1.5 7", "strict 10.244.1.6 8",
				"unstrict 10.244.1.7", "unnode-addr 10.0.0.9"},
		},
		{
			name: "strict in sync",
			want: State{NodeAddrs: []netip.Addr{ip("10.0.0.1")}, Strict: []StrictPod{{ip("10.244.1.5"), 7}}},
			have: State{NodeAddrs: []netip.Addr{ip("10.0.0.1")}, Strict: []StrictPod{{ip("10.244.1.5"), 7}}},
		},
		{
			name: "same VIP other port is another destination",
			want: State{Meshed: []netip.AddrPort{ap("10.96.0.5:81")}},
			have: State{Meshed: []netip.AddrPort{ap("10.96.0.5:80")}},
			ops:  []string{"mesh 10.96.0.5:81", "unmesh 10.96.0.5:80"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, op := range Plan(c.want, c.have) {
				got = append(got, op.String())
			}
			if !slices.Equal(got, c.ops) {
				t.Fatalf("Plan:\n got %q\nwant %q", got, c.ops)
			}
		})
	}
}

func TestNormalizeVIPs(t *testing.T) {
	ok, skipped, err := NormalizeVIPs([]netip.AddrPort{ap("10.96.0.1:443"), ap("[::ffff:10.96.0.2]:80"), ap("[fd00::1]:80")})
	if err != nil {
		t.Fatal(err)
	}
	if want := []netip.AddrPort{ap("10.96.0.1:443"), ap("10.96.0.2:80")}; !slices.Equal(ok, want) {
		t.Errorf("ok = %v, want %v", ok, want)
	}
	if want := []netip.AddrPort{ap("[fd00::1]:80")}; !slices.Equal(skipped, want) {
		t.Errorf("skipped = %v, want %v", skipped, want)
	}
	for _, bad := range []netip.AddrPort{{}, ap("10.96.0.1:0"), ap("0.0.0.0:80"), ap("[fe80::1%eth0]:80")} {
		ok, skipped, err := NormalizeVIPs([]netip.AddrPort{ap("10.96.0.9:80"), bad})
		if !errors.Is(err, ErrInvalidVIP) || ok != nil || skipped != nil {
			t.Errorf("NormalizeVIPs(%v) = %v, %v, %v; want ErrInvalidVIP and nothing", bad, ok, skipped, err)
		}
	}
}

func TestKeysRoundTrip(t *testing.T) {
	v := ap("10.96.3.4:8443")
	k := vipKey(v)
	if got := vipFromKey(k); got != v {
		t.Errorf("vip round trip = %v, want %v", got, v)
	}
	// The map holds the address bytes in network order: the first byte in
	// memory is 10.
	var b [4]byte
	b[0], b[1], b[2], b[3] = byte(k.Ip), byte(k.Ip>>8), byte(k.Ip>>16), byte(k.Ip>>24)
	if b != [4]byte{10, 96, 3, 4} {
		t.Errorf("vip key address bytes = %v (little-endian host assumed)", b)
	}
	key, ok := tupleKey(ap("[::ffff:10.244.1.5]:40000"), ap("172.30.0.11:15001"))
	if !ok || key.ClientPort != 40000 || key.ProxyPort != 15001 || wordIP4(key.ClientIp) != netip.MustParseAddr("10.244.1.5") || wordIP4(key.ProxyIp) != netip.MustParseAddr("172.30.0.11") {
		t.Errorf("tupleKey = %+v, %v", key, ok)
	}
	if _, ok := tupleKey(ap("[fd00::5]:1"), ap("172.30.0.11:15001")); ok {
		t.Error("tupleKey accepted an IPv6 client")
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Node: "lab-node-1", ProxyAddr: ap("172.30.0.11:15001")}.withDefaults()
	if err := good.validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if good.pinDir() != "/sys/fs/bpf/weft/lab-node-1" {
		t.Errorf("pinDir = %s", good.pinDir())
	}
	if got := (Config{CgroupPath: "weft-lab/n1/kubepods"}).cgroupDir("/sys/fs/cgroup"); got != "/sys/fs/cgroup/weft-lab/n1/kubepods" {
		t.Errorf("cgroupDir relative = %s", got)
	}
	if got := (Config{CgroupPath: "/x/kubepods"}).cgroupDir("/sys/fs/cgroup"); got != "/x/kubepods" {
		t.Errorf("cgroupDir absolute = %s", got)
	}
	for _, bad := range []Config{
		{Node: "", ProxyAddr: ap("172.30.0.11:15001")},
		{Node: "../etc", ProxyAddr: ap("172.30.0.11:15001")},
		{Node: "n1"},
		{Node: "n1", ProxyAddr: ap("0.0.0.0:15001")},
		{Node: "n1", ProxyAddr: ap("[fd00::1]:15001")},
		{Node: "n1", ProxyAddr: ap("172.30.0.11:0")},
		{Node: "n1", ProxyAddr: ap("172.30.0.11:15001"), PinRoot: "relative"},
		{Node: "n1", ProxyAddr: ap("172.30.0.11:15001"), CgroupPath: "a/../../b"},
	} {
		if err := bad.withDefaults().validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("validate(%+v) = %v, want ErrInvalidConfig", bad, err)
		}
	}
	if _, err := Open(Config{Node: "n1"}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("Open without proxy = %v, want ErrInvalidConfig", err)
	}
	if err := Cleanup(Config{Node: "a/b"}); !errors.Is(err, ErrInvalidConfig) || strings.Contains(err.Error(), "remove") {
		t.Errorf("Cleanup(bad node) = %v, want ErrInvalidConfig", err)
	}
}
