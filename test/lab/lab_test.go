package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/weft-mesh/weft/test/lab/cluster"
)

func TestTopology(t *testing.T) {
	if NodeName(1) != "lab-node-1" || NodeIP(2).String() != "172.30.0.12" || PodCIDR(2).String() != "10.244.2.0/24" || KubeletPort(1) != 10251 {
		t.Errorf("topology: %s %s %s %d", NodeName(1), NodeIP(2), PodCIDR(2), KubeletPort(1))
	}
	p := PathsFor("/repo")
	cfgs := NodeConfigs(p, 2, "/sys/fs/cgroup", nil)
	if len(cfgs) != 2 || cfgs[1].Name != "lab-node-2" || cfgs[1].StateDir != "/repo/.cache/lab/nodes/lab-node-2" ||
		cfgs[0].APIServerVIP.String() != "172.30.255.1:6443" || cfgs[0].APIServerHost != "127.0.0.1:6443" ||
		cfgs[0].ClusterDNS.String() != "10.96.0.10" || cfgs[0].KubeProxyBin != "/repo/.cache/k8s/bin/kube-proxy" {
		t.Errorf("node configs: %+v", cfgs)
	}
	echo := cfgs[0].Images["ghcr.io/weft-mesh/echo:dev"]
	if echo.Entrypoint[0] != "/repo/.cache/bin/weft-echo" || echo.Cmd[0] != "serve" {
		t.Errorf("echo image = %+v", echo)
	}
	adv := cfgs[0].Images[EchoAdvancedImage]
	if len(adv.Entrypoint) != 2 || adv.Entrypoint[0] != "/repo/.cache/bin/weft-echo" || adv.Entrypoint[1] != "advanced" ||
		len(adv.Path) != 1 || adv.Path[0] != "/repo/.cache/bin/echo-advanced" {
		t.Errorf("echo-advanced image = %+v", adv)
	}
	for _, img := range []string{"ghcr.io/weft-mesh/toolbox:dev", "ghcr.io/weft-mesh/coredns:dev", EchoBasicImage} {
		if _, ok := cfgs[0].Images[img]; !ok {
			t.Errorf("image %s not mapped", img)
		}
	}
	// Weft's own components are pulled from the lab registry, never mapped to binaries.
	for _, img := range []string{"ghcr.io/weft-mesh/weft-controller:dev", "ghcr.io/weft-mesh/weft-agent:dev"} {
		if _, ok := cfgs[0].Images[img]; ok {
			t.Errorf("image %s mapped to a host binary: the lab must run the real image", img)
		}
	}
	if cfgs[0].ImageStore != "/repo/.cache/lab/images" || cfgs[1].ImageStore != cfgs[0].ImageStore {
		t.Errorf("image store %q, %q: want one shared by the nodes", cfgs[0].ImageStore, cfgs[1].ImageStore)
	}
	// The host's link into the fabric: an address no node of the largest lab has, the
	// allocator's pool.
	h := HostLink()
	if h.Name != "wl-host" || h.Addr.String() != "172.30.0.1/24" || h.LoadBalancerPool != cluster.LoadBalancerPool || h.LoadBalancerPool.String() != "172.30.200.0/24" {
		t.Errorf("host link = %+v", h)
	}
	if err := h.Validate(NodeConfigs(p, MaxNodes, "/sys/fs/cgroup", nil)); err != nil {
		t.Errorf("host link with %d nodes: %v", MaxNodes, err)
	}
	for _, n := range []int{0, -1, MaxNodes + 1} {
		if err := checkNodes(n); !errors.Is(err, ErrNodes) {
			t.Errorf("checkNodes(%d) = %v", n, err)
		}
	}
}

func TestLinkEchoAdvancedClient(t *testing.T) {
	p := PathsFor(t.TempDir())
	for range 2 { // idempotent
		if err := LinkEchoAdvancedClient(p); err != nil {
			t.Fatal(err)
		}
	}
	target, err := os.Readlink(filepath.Join(p.BinDir, "echo-advanced", "client"))
	if err != nil || target != "../weft-echo" {
		t.Errorf("client link -> %q, %v; want ../weft-echo", target, err)
	}
}

func TestParseCgroup2Root(t *testing.T) {
	hybrid := `25 30 0:22 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw shared:11 - cgroup cgroup rw,xattr,name=systemd
`
	got, err := parseCgroup2Root(strings.NewReader(hybrid))
	if err != nil || got != "/sys/fs/cgroup/unified" {
		t.Errorf("hybrid: %q %v", got, err)
	}
	if _, err := parseCgroup2Root(strings.NewReader("27 25 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw\n")); err == nil {
		t.Error("v1-only host: no error")
	}
}

func TestNodesReadyAndDeploymentAvailable(t *testing.T) {
	node := func(name string, s corev1.ConditionStatus) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: s}}}}
	}
	if msg := NodesReady([]corev1.Node{node("lab-node-1", "True"), node("lab-node-2", "True")}, 2); msg != "" {
		t.Errorf("all ready: %q", msg)
	}
	if msg := NodesReady([]corev1.Node{node("lab-node-1", "True"), node("lab-node-2", "Unknown")}, 2); !strings.Contains(msg, "lab-node-2") {
		t.Errorf("one unknown: %q", msg)
	}
	if msg := NodesReady([]corev1.Node{node("lab-node-1", "True")}, 2); !strings.Contains(msg, "lab-node-2") {
		t.Errorf("one missing: %q", msg)
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: 2}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)}}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}
	if !DeploymentAvailable(d) {
		t.Error("available deployment reported unavailable")
	}
	d.Status.ObservedGeneration = 1
	if DeploymentAvailable(d) {
		t.Error("stale status reported available")
	}
	d.Status.ObservedGeneration, d.Status.AvailableReplicas = 2, 1
	if DeploymentAvailable(d) {
		t.Error("1/2 available reported available")
	}
}

func TestStateAliveAndFindRoot(t *testing.T) {
	start, ok := cluster.ProcessStart(os.Getpid())
	if !ok || start == "" {
		t.Fatal("ProcessStart of this process")
	}
	if !(State{PID: os.Getpid(), Start: start}).Alive() {
		t.Error("this process is not alive")
	}
	if (State{PID: os.Getpid(), Start: start + "1"}).Alive() {
		t.Error("pid with another start time (reused pid) counted as alive")
	}
	if (State{}).Alive() {
		t.Error("zero state alive")
	}
	wd, _ := os.Getwd()
	root, err := FindRoot(wd)
	if err != nil || filepath.Join(root, "test", "lab") != wd {
		t.Errorf("FindRoot(%s) = %s, %v", wd, root, err)
	}
}

// The install tag names the build: the same images give the same tag, another image
// another tag, and a layout without Weft's images is an error that says what to run.
func TestBuildTag(t *testing.T) {
	dir := t.TempDir()
	write := func(agent string) {
		idx := fmt.Sprintf(`{"schemaVersion":2,"manifests":[
 {"digest":"sha256:aa","annotations":{"org.opencontainers.image.ref.name":"weft-controller:dev"}},
 {"digest":"%s","annotations":{"org.opencontainers.image.ref.name":"weft-agent:dev"}},
 {"digest":"sha256:cc","annotations":{"org.opencontainers.image.ref.name":"echo:dev"}}]}`, agent)
		if err := os.WriteFile(filepath.Join(dir, "index.json"), []byte(idx), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sha256:bb")
	a, err := buildTag(dir, "dev")
	if err != nil || !regexp.MustCompile(`^dev-[0-9a-f]{12}$`).MatchString(a) {
		t.Fatalf("buildTag = %q, %v", a, err)
	}
	if again, _ := buildTag(dir, "dev"); again != a {
		t.Errorf("same images, tags %q and %q", a, again)
	}
	write("sha256:bd")
	if b, _ := buildTag(dir, "dev"); b == a {
		t.Errorf("another agent image kept tag %q", b)
	}
	if _, err := buildTag(dir, "v2"); err == nil || !strings.Contains(err.Error(), "make images") {
		t.Errorf("missing tag: %v", err)
	}
}
