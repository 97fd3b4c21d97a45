package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	corev1 "k8s.io/api/core/v1"
)

// The node's CNI, as a kubelet's runtime (containerd, CRI-O) runs it: each
// node has its own config and plugin directories (its /etc/cni/net.d and
// /opt/cni/bin, see hostPathOf), the runtime executes the first config file's
// plugin chain with libcni, in the node's network namespace, for every
// non-hostNetwork pod: ADD once the pod's netns exists and before any of
// its containers starts, DEL when the pod's network is torn down.

// Node-local CNI paths, below Config.StateDir.
const (
	cniConfSub  = "cni/net.d" // the node's /etc/cni/net.d
	cniBinSub   = "cni/bin"   // the node's /opt/cni/bin
	cniCacheSub = "cni/cache" // libcni's result cache (/var/lib/cni)
	cniIPAMSub  = "cni/ipam"  // host-local's allocations
	cniConfName = "10-weft-lab.conflist"
	cniNetName  = "weft-lab"
)

// cniPlugins are the reference plugins the lab's primary CNI uses.
var cniPlugins = []string{"ptp", "host-local"}

// hostPathOf maps a hostPath volume path to the node's own directory: the
// CNI directories are per node (every lab node shares the host filesystem,
// but a real node has its own /etc/cni/net.d and /opt/cni/bin).
func hostPathOf(cfg Config, p string) string {
	if cfg.CNIPluginDir == "" {
		return p
	}
	clean := filepath.Clean(p)
	for host, sub := range map[string]string{"/etc/cni/net.d": cniConfSub, "/opt/cni/bin": cniBinSub} {
		if clean == host || strings.HasPrefix(clean, host+"/") {
			return filepath.Join(cfg.StateDir, sub, strings.TrimPrefix(clean, host))
		}
	}
	return p
}

// primaryConflist is the node's primary CNI config: ptp with host-local
// over the node's PodCIDR (gateway .1 on the node side of every veth, a
// /32 route to each pod, a default route in the pod). It is written once:
// a restarted node keeps what was chained into it.
func primaryConflist(cfg Config) ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       cniNetName,
		"plugins": []any{map[string]any{
			"type": "ptp",
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": cfg.PodCIDR.Masked().String()}}},
				"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
				"dataDir": filepath.Join(cfg.StateDir, cniIPAMSub),
			},
		}},
	}, "", "  ")
}

// setupCNI makes the node's CNI directories, installs the reference
// plugins into its bin dir and writes its primary config when absent.
func setupCNI(cfg Config) error {
	if cfg.CNIPluginDir == "" {
		return nil
	}
	for _, sub := range []string{cniConfSub, cniBinSub, cniCacheSub, cniIPAMSub} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, sub), 0o755); err != nil {
			return err
		}
	}
	for _, p := range cniPlugins {
		if err := copyFile(filepath.Join(cfg.CNIPluginDir, p), filepath.Join(cfg.StateDir, cniBinSub, p), 0o755); err != nil {
			return fmt.Errorf("install CNI plugin %s (run `make cni-plugins`): %w", p, err)
		}
	}
	files, err := libcni.ConfFiles(filepath.Join(cfg.StateDir, cniConfSub), []string{".conf", ".conflist", ".json"})
	if err != nil || len(files) > 0 {
		return err
	}
	data, err := primaryConflist(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(cfg.StateDir, cniConfSub, cniConfName), append(data, '\n'), 0o644)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// nodeNetnsExec runs plugins inside the node's network namespace, where a
// kubelet's runtime runs them (the host's, on a real node): the node side
// of each pod's veth and its routes belong there.
type nodeNetnsExec struct {
	invoke.RawExec               // FindInPath
	version.PluginDecoder        // Decode
	netns                 string // name
}

// ExecPlugin implements invoke.Exec.
func (e *nodeNetnsExec) ExecPlugin(ctx context.Context, pluginPath string, stdinData []byte, environ []string) ([]byte, error) {
	stdout, stderr := &bytes.Buffer{}, &bytes.Buffer{}
	c := exec.CommandContext(ctx, "ip", "netns", "exec", e.netns, pluginPath)
	c.Env = environ
	c.Stdin = bytes.NewReader(stdinData)
	c.Stdout, c.Stderr = stdout, stderr
	if err := c.Run(); err != nil {
		var te types.Error
		if json.Unmarshal(stdout.Bytes(), &te) == nil && te.Msg != "" {
			return nil, &te
		}
		return nil, fmt.Errorf("netns %s: %s: %w (stderr: %s)", e.netns, filepath.Base(pluginPath), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// cniNetwork loads the node's primary config and a libcni runner.
func (k *kubelet) cniNetwork() (*libcni.NetworkConfigList, *libcni.CNIConfig, error) {
	cfg := k.cfg
	dir := filepath.Join(cfg.StateDir, cniConfSub)
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, nil, err
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("no CNI config in %s", dir)
	}
	// libcni reads conflists only (a runtime of CNI 1.x does the same).
	list, err := libcni.NetworkConfFromFile(files[0])
	if err != nil {
		return nil, nil, fmt.Errorf("CNI config %s: %w", files[0], err)
	}
	rt := libcni.NewCNIConfigWithCacheDir([]string{filepath.Join(cfg.StateDir, cniBinSub)},
		filepath.Join(cfg.StateDir, cniCacheSub), &nodeNetnsExec{netns: nodeNetns(cfg.Name)})
	return list, rt, nil
}

// runtimeConf is what a kubelet's runtime passes for a pod sandbox.
func runtimeConf(pod *corev1.Pod, netns string, prevIP netip.Addr) *libcni.RuntimeConf {
	args := [][2]string{
		{"IgnoreUnknown", "1"},
		{"K8S_POD_NAMESPACE", pod.Namespace},
		{"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", sandboxID(pod)},
		{"K8S_POD_UID", string(pod.UID)},
	}
	if prevIP.IsValid() {
		args = append(args, [2]string{"IP", prevIP.String()}) // host-local: keep a restarted node's pod IPs
	}
	return &libcni.RuntimeConf{ContainerID: sandboxID(pod), NetNS: netns, IfName: "eth0", Args: args}
}

// sandboxID names a pod's sandbox (the "infra container") for CNI.
func sandboxID(pod *corev1.Pod) string { return "wl-" + string(pod.UID) }

// cniAdd creates the pod's netns and runs the chain's ADD in it; it
// returns the pod's IP from the result.
func (k *kubelet) cniAdd(ctx context.Context, pod *corev1.Pod) (sandbox, error) {
	sb := sandbox{Node: k.cfg.Name, UID: string(pod.UID), Netns: podNetns(k.cfg.Name, string(pod.UID))}
	if err := deleteSandbox(sb); err != nil {
		return sb, err
	}
	if err := ip("netns", "add", sb.Netns); err != nil {
		return sb, err
	}
	list, rt, err := k.cniNetwork()
	if err == nil {
		var prev netip.Addr
		if a, perr := netip.ParseAddr(pod.Status.PodIP); perr == nil && k.cfg.PodCIDR.Contains(a) {
			prev = a
		}
		var res types.Result
		res, err = rt.AddNetworkList(ctx, list, runtimeConf(pod, netnsPath(sb.Netns), prev))
		if err == nil {
			sb.IP, err = resultIP(res)
		}
	}
	if err != nil {
		_ = k.cniDel(context.WithoutCancel(ctx), pod, sb)
		return sb, fmt.Errorf("CNI ADD: %w", err)
	}
	return sb, nil
}

// cniDel runs the chain's DEL for the pod and removes its netns.
func (k *kubelet) cniDel(ctx context.Context, pod *corev1.Pod, sb sandbox) error {
	var errs []error
	if list, rt, err := k.cniNetwork(); err != nil {
		errs = append(errs, err)
	} else if err := rt.DelNetworkList(ctx, list, runtimeConf(pod, netnsPath(sb.Netns), netip.Addr{})); err != nil {
		errs = append(errs, fmt.Errorf("CNI DEL: %w", err))
	}
	return errors.Join(append(errs, deleteSandbox(sb))...)
}

// resultIP is the pod's IPv4 address in a CNI result.
func resultIP(res types.Result) (netip.Addr, error) {
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, c := range r.IPs {
		if a, ok := netip.AddrFromSlice(c.Address.IP.To4()); ok && c.Address.IP.To4() != nil {
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("CNI result has no IPv4 address")
}
