package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/weft-mesh/weft/agent/datapath"
	"github.com/weft-mesh/weft/agent/datapath/bpffstest"
)

// The privileged tests run this test binary as the plugin (pluginEnv set),
// exactly as a runtime runs weft-cni: environment and stdin in, result out.
const pluginEnv = "WEFT_CNI_TEST_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(pluginEnv) != "" {
		skel.PluginMainFuncs(Funcs(), Versions, About)
		os.Exit(0)
	}
	// A fresh host may have no bpffs: mount one as the DaemonSet's init
	// container does, shared with the other packages' tests running at
	// the same time, and leave the host as it was found.
	release := func() {}
	if os.Geteuid() == 0 {
		var err error
		if release, err = bpffstest.Hold(datapath.DefaultBPFFS, func() (bool, error) { return datapath.MountBPFFSIn(os.Getpid(), datapath.DefaultBPFFS) }); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	release()
	os.Exit(code)
}

// staticDecider enrolls pods of namespace "mesh" only.
type staticDecider struct{}

func (staticDecider) Decide(_ context.Context, r Request) (Decision, error) {
	if r.Namespace == "mesh" {
		return Decision{Enroll: true}, nil
	}
	return Decision{Reason: "namespace not enrolled"}, nil
}

func cgroup2Mount(t *testing.T) string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no mountinfo: %v", err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 8 && strings.Contains(l, " - cgroup2 ") {
			return f[4]
		}
	}
	t.Skip("no cgroup v2 mount")
	return ""
}

// rig is a real datapath (private cgroup and pins), an agent socket and a
// test netns.
type rig struct {
	dp     *datapath.Datapath
	socket string
	netns  string // path
	conf   []byte
}

func newRig(t *testing.T) *rig {
	if os.Geteuid() != 0 {
		t.Skip("needs root (BPF maps, network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2's ip")
	}
	name := fmt.Sprintf("weft-cni-test-%d", os.Getpid())
	cg := filepath.Join(cgroup2Mount(t), name)
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Skipf("cannot create a cgroup: %v", err)
	}
	t.Cleanup(func() { os.Remove(cg) })
	dcfg := datapath.Config{Node: "n1", CgroupPath: name, PinRoot: "/sys/fs/bpf/" + name,
		ProxyAddr: netip.MustParseAddrPort("127.0.0.1:15001")}
	dp, err := datapath.Open(dcfg)
	if err != nil {
		t.Fatalf("datapath: %v", err)
	}
	t.Cleanup(func() {
		dp.Close()
		if err := datapath.Cleanup(dcfg); err != nil {
			t.Errorf("cleanup pins: %v", err)
		}
		os.RemoveAll(dcfg.PinRoot)
	})
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	dir := t.TempDir()
	en, err := NewEnroller(EnrollerConfig{Holder: dp, Decider: staticDecider{}, Store: filepath.Join(dir, "holds.json")})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{dp: dp, socket: filepath.Join(dir, "cni.sock"), netns: "/run/netns/" + name}
	srv, err := Serve(r.socket, "n1", en, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	r.conf = r.config(r.socket)
	t.Setenv(pluginEnv, "1")
	return r
}

var prev = json.RawMessage(`{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.9.0.5/24","gateway":"10.9.0.1","interface":0}]}`)

func (r *rig) config(socket string) []byte {
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "test", "type": PluginType,
		"node": "n1", "socket": socket, "timeout": "5s", "prevResult": prev})
	return b
}

// run executes the plugin (this binary) with one verb.
func (r *rig) run(t *testing.T, verb, ns, uid string, conf []byte) (types.Result, error) {
	t.Helper()
	self, _ := os.Executable()
	args := &invoke.Args{Command: verb, ContainerID: "sandbox-" + uid, NetNS: r.netns, IfName: "eth0",
		PluginArgsStr: fmt.Sprintf("IgnoreUnknown=1;K8S_POD_NAMESPACE=%s;K8S_POD_NAME=p-%s;K8S_POD_UID=%s;K8S_POD_INFRA_CONTAINER_ID=sandbox-%s", ns, uid, uid, uid),
		Path:          filepath.Dir(self)}
	ex := &invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}}
	if verb == "ADD" {
		return invoke.ExecPluginWithResult(context.Background(), self, conf, args, ex)
	}
	return nil, invoke.ExecPluginWithoutResult(context.Background(), self, conf, args, ex)
}

func (r *rig) enrolled(t *testing.T) []uint64 {
	t.Helper()
	st, err := r.dp.State()
	if err != nil {
		t.Fatal(err)
	}
	return st.Enrolled
}

func TestPrivilegedPluginAddCheckDel(t *testing.T) {
	r := newRig(t)
	cookie, err := datapath.NetnsCookie(r.netns)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.run(t, "ADD", "mesh", "uid-1", r.conf)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	got, err := current.NewResultFromResult(res)
	if err != nil || len(got.IPs) != 1 || got.IPs[0].Address.String() != "10.9.0.5/24" {
		t.Fatalf("ADD result is not the prevResult passed through: %+v (%v)", res, err)
	}
	if e := r.enrolled(t); !slices.Equal(e, []uint64{cookie}) {
		t.Fatalf("after ADD the enrolled map holds %v, want [%d]", e, cookie)
	}
	// A repeated ADD (the runtime retried) changes nothing.
	if _, err := r.run(t, "ADD", "mesh", "uid-1", r.conf); err != nil {
		t.Fatalf("repeated ADD: %v", err)
	}
	if e := r.enrolled(t); !slices.Equal(e, []uint64{cookie}) {
		t.Fatalf("after a repeated ADD the enrolled map holds %v, want [%d]", e, cookie)
	}
	// The socket file removed (an agent of the node that stopped unlinked
	// it): the agent binds it again and the plugin's ADD waits for that.
	if err := os.Remove(r.socket); err != nil {
		t.Fatal(err)
	}
	if _, err := r.run(t, "ADD", "mesh", "uid-1", r.conf); err != nil {
		t.Fatalf("ADD after the socket file went: %v", err)
	}
	// A policy sync that does not name the pod yet keeps it enrolled.
	if _, err := r.dp.Sync(datapath.Desired{}); err != nil {
		t.Fatal(err)
	}
	if e := r.enrolled(t); !slices.Equal(e, []uint64{cookie}) {
		t.Fatalf("a Sync without the pod dropped the CNI enrollment: %v", e)
	}
	if _, err := r.run(t, "CHECK", "mesh", "uid-1", r.conf); err != nil {
		t.Fatalf("CHECK: %v", err)
	}
	if _, err := r.run(t, "DEL", "mesh", "uid-1", r.conf); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if e := r.enrolled(t); len(e) != 0 {
		t.Fatalf("after DEL the enrolled map holds %v", e)
	}
	if _, err := r.run(t, "CHECK", "mesh", "uid-1", r.conf); err == nil {
		t.Fatal("CHECK after DEL passed: the pod should be enrolled and is not")
	}
	// DEL again, and DEL of a pod never seen: success.
	if _, err := r.run(t, "DEL", "mesh", "uid-1", r.conf); err != nil {
		t.Fatalf("second DEL: %v", err)
	}
	if _, err := r.run(t, "DEL", "mesh", "never-added", r.conf); err != nil {
		t.Fatalf("DEL of an unknown pod: %v", err)
	}
}

func TestPrivilegedPluginNotEnrolledNamespace(t *testing.T) {
	r := newRig(t)
	res, err := r.run(t, "ADD", "plain", "uid-2", r.conf)
	if err != nil {
		t.Fatalf("ADD in a namespace outside the mesh: %v", err)
	}
	if res == nil {
		t.Fatal("no result")
	}
	if e := r.enrolled(t); len(e) != 0 {
		t.Fatalf("a pod outside the mesh was enrolled: %v", e)
	}
	if _, err := r.run(t, "CHECK", "plain", "uid-2", r.conf); err != nil {
		t.Fatalf("CHECK of a pod outside the mesh: %v", err)
	}
}

func TestPrivilegedPluginAgentUnreachable(t *testing.T) {
	r := newRig(t)
	for name, sock := range map[string]string{
		"no socket file":   filepath.Join(t.TempDir(), "absent.sock"),
		"nobody listening": deadSocket(t),
	} {
		_, err := r.run(t, "ADD", "mesh", "uid-3", r.config(sock))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "unreachable") {
			t.Errorf("%s: ADD = %v, want CNI error %d (agent unreachable)", name, err, types.ErrTryAgainLater)
		}
		if e := r.enrolled(t); len(e) != 0 {
			t.Errorf("%s: enrolled %v", name, e)
		}
	}
	// The mesh's own namespace is excluded: its pods start without an agent.
	var conf map[string]any
	json.Unmarshal(r.config(filepath.Join(t.TempDir(), "absent.sock")), &conf)
	conf["excludeNamespaces"] = []string{"weft-system"}
	excl, _ := json.Marshal(conf)
	if _, err := r.run(t, "ADD", "weft-system", "uid-4", excl); err != nil {
		t.Errorf("ADD in an excluded namespace without an agent: %v", err)
	}
	if _, err := r.run(t, "ADD", "mesh", "uid-4", excl); err == nil {
		t.Errorf("ADD in a namespace not excluded passed without an agent")
	}
	// Bad config and missing pod arguments are refused with their codes.
	_, err := r.run(t, "ADD", "mesh", "uid-3", []byte(`{"cniVersion":"1.0.0","name":"x","type":"weft-cni","socket":"rel"}`))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("ADD with a bad config = %v, want code %d", err, types.ErrInvalidNetworkConfig)
	}
	noPrev, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "x", "type": PluginType, "node": "n1", "socket": r.socket})
	if _, err := r.run(t, "ADD", "mesh", "uid-3", noPrev); !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig {
		t.Errorf("ADD not chained (no prevResult) = %v, want code %d", err, types.ErrInvalidNetworkConfig)
	}
	if e := r.enrolled(t); len(e) != 0 {
		t.Errorf("enrolled %v", e)
	}
}

// deadSocket is a unix socket file nobody accepts on.
func deadSocket(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "dead.sock")
	srv, err := Serve(p, "n1", nil, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	srv.Close() // the file stays, nobody accepts
	return p
}
