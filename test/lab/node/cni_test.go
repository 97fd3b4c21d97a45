package node

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestHostPathOf(t *testing.T) {
	cfg := Config{StateDir: "/lab/nodes/n1", CNIPluginDir: "/cache/cni/bin"}
	for _, tc := range []struct{ in, want string }{
		{"/etc/cni/net.d", "/lab/nodes/n1/cni/net.d"},
		{"/etc/cni/net.d/", "/lab/nodes/n1/cni/net.d"},
		{"/etc/cni/net.d/10-x.conflist", "/lab/nodes/n1/cni/net.d/10-x.conflist"},
		{"/opt/cni/bin", "/lab/nodes/n1/cni/bin"},
		{"/opt/cni/binaries", "/opt/cni/binaries"}, // not below /opt/cni/bin
		{"/etc/cni", "/etc/cni"},
		{"/var/lib/weft", "/var/lib/weft"},
	} {
		if got := hostPathOf(cfg, tc.in); got != tc.want {
			t.Errorf("hostPathOf(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// Without CNI plugins the node maps nothing.
	if got := hostPathOf(Config{StateDir: "/s"}, "/etc/cni/net.d"); got != "/etc/cni/net.d" {
		t.Errorf("without CNIPluginDir: %q", got)
	}
}

func TestPrimaryConflist(t *testing.T) {
	cfg := Config{StateDir: "/lab/nodes/n1", PodCIDR: netip.MustParsePrefix("10.244.1.0/24")}
	data, err := primaryConflist(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		CNIVersion string `json:"cniVersion"`
		Plugins    []struct {
			Type string `json:"type"`
			IPAM struct {
				Type    string                `json:"type"`
				Ranges  [][]map[string]string `json:"ranges"`
				DataDir string                `json:"dataDir"`
			} `json:"ipam"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Plugins) != 1 || list.Plugins[0].Type != "ptp" || list.Plugins[0].IPAM.Type != "host-local" ||
		list.Plugins[0].IPAM.Ranges[0][0]["subnet"] != "10.244.1.0/24" || list.Plugins[0].IPAM.DataDir != "/lab/nodes/n1/cni/ipam" {
		t.Errorf("primary conflist: %s", data)
	}
}

func TestRuntimeConf(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u1"}}
	rc := runtimeConf(pod, "/run/netns/x", netip.MustParseAddr("10.244.1.7"))
	args := map[string]string{}
	for _, a := range rc.Args {
		args[a[0]] = a[1]
	}
	want := map[string]string{"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p",
		"K8S_POD_INFRA_CONTAINER_ID": "wl-u1", "K8S_POD_UID": "u1", "IP": "10.244.1.7"}
	for k, v := range want {
		if args[k] != v {
			t.Errorf("CNI_ARGS %s = %q, want %q (all: %v)", k, args[k], v, rc.Args)
		}
	}
	if rc.IfName != "eth0" || rc.NetNS != "/run/netns/x" || !strings.HasPrefix(rc.ContainerID, "wl-") {
		t.Errorf("runtime conf %+v", rc)
	}
	if rc := runtimeConf(pod, "/run/netns/x", netip.Addr{}); len(rc.Args) != 5 {
		t.Errorf("no previous IP: args %v", rc.Args)
	}
}

// TestPrivilegedCNIAddDel runs the node's CNI (the reference ptp and
// host-local plugins, `make cni-plugins`) for one pod: ADD wires the pod's
// netns to a node netns, the node reaches the pod, DEL removes it and frees
// the address, and a second ADD asked for the old address gets it.
func TestPrivilegedCNIAddDel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	plugins := cniPluginsDir(t)
	cfg := Config{Name: fmt.Sprintf("cnit%d", os.Getpid()%100000), StateDir: t.TempDir(),
		PodCIDR: netip.MustParsePrefix("10.250.7.0/24"), CNIPluginDir: plugins}
	node := nodeNetns(cfg.Name)
	if err := ip("netns", "add", node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNetns(node) })
	if err := setupCNI(cfg); err != nil {
		t.Fatal(err)
	}
	k := &kubelet{cfg: cfg, log: slog.Default()}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "0b5e6f1c-0000-4000-8000-000000000001"}}
	ctx := context.Background()
	sb, err := k.cniAdd(ctx, pod)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	t.Cleanup(func() { _ = deleteSandbox(sb) })
	if sb.IP != netip.MustParseAddr("10.250.7.2") {
		t.Errorf("pod IP %v, want the first host-local address 10.250.7.2", sb.IP)
	}
	// The node reaches the pod (TCP from the node netns to a listener in
	// the pod netns), and the pod sees the node-side gateway as source.
	ln, err := listenInNetns(netnsPath(sb.Netns), netip.AddrPortFrom(sb.IP, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan string, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c.RemoteAddr().String()
			c.Close()
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dialInNetns(dctx, netnsPath(node), "tcp", netip.AddrPortFrom(sb.IP, 8080).String())
	if err != nil {
		t.Fatalf("node cannot reach the pod at %v: %v", sb.IP, err)
	}
	c.Close()
	if from := <-accepted; !strings.HasPrefix(from, "10.250.7.1:") {
		t.Errorf("the pod saw the node's connection from %s, want the gateway 10.250.7.1", from)
	}
	if err := k.cniDel(ctx, pod, sb); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if _, err := os.Stat(netnsPath(sb.Netns)); err == nil {
		t.Error("pod netns left after DEL")
	}
	if out, _ := exec.Command("ip", "-n", node, "route", "show", sb.IP.String()).CombinedOutput(); strings.TrimSpace(string(out)) != "" {
		t.Errorf("node route to the pod left after DEL: %s", out)
	}
	// A restarted node asks for the pod's old address and gets it.
	pod.Status.PodIP = "10.250.7.9"
	sb, err = k.cniAdd(ctx, pod)
	if err != nil {
		t.Fatalf("second ADD: %v", err)
	}
	if sb.IP.String() != "10.250.7.9" {
		t.Errorf("second ADD got %v, want the requested 10.250.7.9", sb.IP)
	}
	if err := k.cniDel(ctx, pod, sb); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	// DEL of a pod whose network is already gone succeeds (idempotent).
	if err := k.cniDel(ctx, pod, sb); err != nil {
		t.Errorf("repeated DEL: %v", err)
	}
}

// cniPluginsDir finds .cache/cni/bin of the repository.
func cniPluginsDir(t *testing.T) string {
	dir, _ := os.Getwd()
	for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		p := filepath.Join(dir, ".cache", "cni", "bin")
		if _, err := os.Stat(filepath.Join(p, "ptp")); err == nil {
			return p
		}
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && filepath.Base(dir) != "k8s" {
			break
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the reference CNI plugins are not built: run `make cni-plugins`")
	}
	t.Skip("the reference CNI plugins are not built: run `make cni-plugins`")
	return ""
}
