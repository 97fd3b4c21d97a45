package node

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
)

// Config describes one lab node.
type Config struct {
	Name          string       // Node name, e.g. "lab-node-1"
	Index         int          // 1-based node number
	Kubeconfig    string       // host-side kubeconfig (server reachable from the host)
	StateDir      string       // per-node directory for state, logs and volumes
	NodeIP        netip.Addr   // 172.30.0.(10+Index) on the fabric
	PodCIDR       netip.Prefix // 10.244.Index.0/24
	ServiceCIDR   netip.Prefix // 10.96.0.0/16
	ClusterDNS    netip.Addr   // 10.96.0.10
	ClusterDomain string       // cluster.local
	// APIServerVIP is where the apiserver is reached inside the node netns
	// (172.30.255.1:6443); Run listens there and forwards to APIServerHost.
	APIServerVIP  netip.AddrPort
	APIServerHost string // host-side apiserver address, "127.0.0.1:6443"
	KubeletPort   int    // 10250+Index, served on host 127.0.0.1
	// PEM file paths for the kubelet API: serving pair and the CA that signs
	// the apiserver's kubelet client certificate.
	KubeletServingCert, KubeletServingKey, ClientCA string
	Images                                          map[string]Image // image reference -> what to run
	PathDirs                                        []string         // prepended to every container's PATH
	CgroupRoot                                      string           // cgroup v2 mount (or a cgroup below it), e.g. /sys/fs/cgroup/unified
	KubeProxyBin                                    string           // kube-proxy binary
	// ImageStore is the directory pulled images are unpacked into, shared
	// by the nodes of a lab and kept by Run and Cleanup (see the package
	// doc, Images). Images not in Images are pulled into it; "" disables
	// pulls (such images then fail with ErrImagePull).
	ImageStore string
	// CNIPluginDir holds the reference CNI plugins (ptp, host-local; built
	// by `make cni-plugins`): the node installs them into its own CNI bin
	// dir and sets pods' networks up through its CNI config (cni.go). ""
	// wires each pod's veth directly (sandbox.go; the package's own tests).
	CNIPluginDir string
}

// Image is what a container image runs: like an OCI image config.
type Image struct {
	Entrypoint []string
	Cmd        []string
	// Path lists directories the image puts first on PATH (like an image's ENV PATH):
	// the container's PATH and the lookup of exec'd commands search them before
	// Config.PathDirs.
	Path []string
}

// pathDirs is the command search path of a container of image.
func (c Config) pathDirs(image string) []string {
	return append(append(append([]string{}, c.Images[image].Path...), c.PathDirs...), systemPath...)
}

// ErrConfig marks an invalid Config.
var ErrConfig = errors.New("invalid node config")

var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,40}[a-z0-9])?$`)

// validateFabric checks what SetupFabric and Cleanup need.
func (c Config) validateFabric() error {
	switch {
	case !nodeNameRE.MatchString(c.Name):
		return fmt.Errorf("%w: node name %q (lowercase DNS label, at most 42 characters)", ErrConfig, c.Name)
	case c.StateDir == "":
		return fmt.Errorf("%w: node %s: StateDir is empty", ErrConfig, c.Name)
	case !c.NodeIP.Is4():
		return fmt.Errorf("%w: node %s: NodeIP %v is not IPv4", ErrConfig, c.Name, c.NodeIP)
	case !c.PodCIDR.IsValid() || !c.PodCIDR.Addr().Is4() || c.PodCIDR.Bits() > 30:
		return fmt.Errorf("%w: node %s: PodCIDR %v (IPv4, /30 or larger)", ErrConfig, c.Name, c.PodCIDR)
	case !c.ServiceCIDR.IsValid() || !c.ServiceCIDR.Addr().Is4():
		return fmt.Errorf("%w: node %s: ServiceCIDR %v", ErrConfig, c.Name, c.ServiceCIDR)
	case !c.APIServerVIP.IsValid() || !c.APIServerVIP.Addr().Is4():
		return fmt.Errorf("%w: node %s: APIServerVIP %v", ErrConfig, c.Name, c.APIServerVIP)
	case c.CgroupRoot == "" || !filepath.IsAbs(c.CgroupRoot):
		return fmt.Errorf("%w: node %s: CgroupRoot %q is not an absolute path", ErrConfig, c.Name, c.CgroupRoot)
	}
	return nil
}

// validate checks everything Run needs.
func (c Config) validate() error {
	if err := c.validateFabric(); err != nil {
		return err
	}
	switch {
	case c.Kubeconfig == "":
		return fmt.Errorf("%w: node %s: Kubeconfig is empty", ErrConfig, c.Name)
	case !c.ClusterDNS.IsValid():
		return fmt.Errorf("%w: node %s: ClusterDNS is unset", ErrConfig, c.Name)
	case c.ClusterDomain == "":
		return fmt.Errorf("%w: node %s: ClusterDomain is empty", ErrConfig, c.Name)
	case c.APIServerHost == "":
		return fmt.Errorf("%w: node %s: APIServerHost is empty", ErrConfig, c.Name)
	case c.KubeletPort <= 0 || c.KubeletPort > 65535:
		return fmt.Errorf("%w: node %s: KubeletPort %d", ErrConfig, c.Name, c.KubeletPort)
	case c.KubeletServingCert == "" || c.KubeletServingKey == "" || c.ClientCA == "":
		return fmt.Errorf("%w: node %s: kubelet serving cert, key and client CA are required", ErrConfig, c.Name)
	case c.ImageStore != "" && (!filepath.IsAbs(c.ImageStore) || !filepath.IsAbs(c.StateDir)):
		return fmt.Errorf("%w: node %s: ImageStore %q and StateDir %q must be absolute paths", ErrConfig, c.Name, c.ImageStore, c.StateDir)
	case c.ImageStore != "" && (!validOverlayPath(c.ImageStore) || !validOverlayPath(c.StateDir)):
		return fmt.Errorf("%w: node %s: ImageStore %q and StateDir %q must not hold ',', ':' or '\\' (overlay mount options)", ErrConfig, c.Name, c.ImageStore, c.StateDir)
	}
	return nil
}

// validateFabricSet checks a whole fabric: names, IPs and pod CIDRs unique.
func validateFabricSet(nodes []Config) error {
	if len(nodes) == 0 {
		return fmt.Errorf("%w: no nodes", ErrConfig)
	}
	names := map[string]bool{}
	ips := map[netip.Addr]bool{}
	for i, n := range nodes {
		if err := n.validateFabric(); err != nil {
			return err
		}
		if names[n.Name] || ips[n.NodeIP] {
			return fmt.Errorf("%w: node %s: duplicate name or NodeIP", ErrConfig, n.Name)
		}
		names[n.Name], ips[n.NodeIP] = true, true
		if netip.PrefixFrom(n.NodeIP, 24).Masked() != netip.PrefixFrom(nodes[0].NodeIP, 24).Masked() {
			return fmt.Errorf("%w: node %s: NodeIP %v not in the /24 of %v", ErrConfig, n.Name, n.NodeIP, nodes[0].NodeIP)
		}
		for _, m := range nodes[:i] {
			if m.PodCIDR.Overlaps(n.PodCIDR) {
				return fmt.Errorf("%w: nodes %s and %s: PodCIDRs %v and %v overlap", ErrConfig, m.Name, n.Name, m.PodCIDR, n.PodCIDR)
			}
		}
	}
	return nil
}

const (
	nsPrefix     = "wl-"
	netnsDir     = "/run/netns"
	cgroupTop    = "weft-lab"
	stateFile    = "weft-node.json"
	fabricSuffix = "_fabric"
)

// nodeNetns is the name of a node's network namespace.
func nodeNetns(node string) string { return nsPrefix + node }

// fabricNetns is the name of the namespace holding the fabric bridge.
func fabricNetns(first string) string { return nsPrefix + first + fabricSuffix }

// podNetns is the name of a pod's network namespace.
func podNetns(node, uid string) string { return nsPrefix + node + "_" + uid }

// ownedNetns reports whether a netns name belongs to the node.
func ownedNetns(node, name string) bool {
	p := nodeNetns(node)
	return name == p || strings.HasPrefix(name, p+"_")
}

// nodeCgroup is the node's cgroup directory.
func nodeCgroup(root, node string) string { return filepath.Join(root, cgroupTop, node) }

// podCgroup is a pod's cgroup directory.
func podCgroup(root, node, uid string) string {
	return filepath.Join(root, cgroupTop, node, "kubepods", "pod"+uid)
}
