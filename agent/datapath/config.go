package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/weft-mesh/weft/api/mesh"
)

// Defaults for Config fields left empty.
const (
	DefaultBPFFS   = "/sys/fs/bpf"
	DefaultPinRoot = DefaultBPFFS + "/weft"
	// DefaultCapturePort is the node proxy's outbound capture port.
	DefaultCapturePort = mesh.CapturePort
	// MinKernel is the oldest kernel with every hook the redirect needs
	// (getpeername4/6 arrived in 5.8).
	MinKernel = "5.8"
)

// Sentinel errors.
var (
	ErrInvalidConfig = errors.New("invalid datapath config")
	ErrInvalidVIP    = errors.New("invalid meshed destination")
	ErrNoCgroup2     = errors.New("no cgroup v2 mount")
	ErrPodNotFound   = errors.New("pod cgroup not found")
	ErrNoProcess     = errors.New("no process in pod cgroup")
	ErrClosed        = errors.New("datapath closed")
	ErrNodeNetns     = errors.New("pod shares the agent's network namespace (hostNetwork)")
)

// Config says where one node's datapath lives. Every path is per node, so
// several agents (one per node) can share one kernel, cgroup tree and bpffs.
type Config struct {
	// Node is the Kubernetes node name; it names the pin directory
	// <PinRoot>/<Node>. Required.
	Node string
	// CgroupPath is where the programs are attached: the node's pod parent
	// cgroup (lab: "weft-lab/<node>/kubepods"; real nodes: "kubepods" or
	// "kubepods.slice"), or empty for the cgroup v2 root. A relative path is
	// taken relative to the cgroup v2 mount. It is also where pod cgroups are
	// searched for enrollment.
	CgroupPath string
	// PinRoot holds one directory per node; default /sys/fs/bpf/weft.
	PinRoot string
	// BPFFS is the bpffs mount point; default /sys/fs/bpf. It must be a
	// bpffs already (the host's), or Open fails with ErrNoBPFFS.
	BPFFS string
	// AllowPrivateBPFFS lets Open mount a bpffs at BPFFS when there is
	// none. In a container's private mount namespace that mount dies with
	// the agent, and so does the redirect: for tests only.
	AllowPrivateBPFFS bool
	// ProxyAddr is the node proxy's outbound capture address (node IP and
	// port mesh.CapturePort by default): redirected connections go there. IPv4.
	ProxyAddr netip.AddrPort
	// NodeAddrs are the node's own IPv4 addresses, from which the proxy
	// and the kubelet reach pods: a SYN to a strict pod from any other
	// address is dropped. Nil: the IPv4 addresses of the agent's network
	// namespace, read at every Sync (right for a hostNetwork agent).
	NodeAddrs []netip.Addr
	// DialMark and DialMarkMask: a connect to a strict pod from this
	// node's pods passes only when (SO_MARK & DialMarkMask) == DialMark,
	// as the node proxy marks its dials. Zero: mesh.ProxyDialMark and
	// mesh.ProxyDialMarkMask.
	DialMark, DialMarkMask uint32
	// Logger for load/attach/adopt events; default slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.BPFFS == "" {
		c.BPFFS = DefaultBPFFS
	}
	if c.PinRoot == "" {
		c.PinRoot = filepath.Join(c.BPFFS, "weft")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DialMark == 0 && c.DialMarkMask == 0 {
		c.DialMark, c.DialMarkMask = mesh.ProxyDialMark, mesh.ProxyDialMarkMask
	}
	if c.NodeAddrs != nil {
		addrs := make([]netip.Addr, len(c.NodeAddrs))
		for i, a := range c.NodeAddrs {
			addrs[i] = a.Unmap()
		}
		c.NodeAddrs = addrs
	}
	if c.ProxyAddr.Addr().Is4In6() {
		c.ProxyAddr = netip.AddrPortFrom(c.ProxyAddr.Addr().Unmap(), c.ProxyAddr.Port())
	}
	return c
}

// validateNode checks a node name is usable as one path element.
func validateNode(node string) error {
	if node == "" || node == "." || node == ".." || strings.ContainsAny(node, "/\x00") {
		return fmt.Errorf("%w: node name %q must be one path element", ErrInvalidConfig, node)
	}
	return nil
}

func (c Config) validate() error {
	if err := validateNode(c.Node); err != nil {
		return err
	}
	if !c.ProxyAddr.IsValid() || !c.ProxyAddr.Addr().Is4() || c.ProxyAddr.Addr().IsUnspecified() || c.ProxyAddr.Port() == 0 {
		return fmt.Errorf("%w: proxy address %q must be a specific IPv4 address and port", ErrInvalidConfig, c.ProxyAddr)
	}
	if !filepath.IsAbs(c.PinRoot) || !filepath.IsAbs(c.BPFFS) {
		return fmt.Errorf("%w: pin root %q and bpffs %q must be absolute", ErrInvalidConfig, c.PinRoot, c.BPFFS)
	}
	if c.DialMark == 0 || c.DialMark&c.DialMarkMask != c.DialMark {
		return fmt.Errorf("%w: dial mark %#x must be non-zero and within its mask %#x", ErrInvalidConfig, c.DialMark, c.DialMarkMask)
	}
	for _, a := range c.NodeAddrs {
		if !a.Is4() || a.IsUnspecified() {
			return fmt.Errorf("%w: node address %q must be a specific IPv4 address", ErrInvalidConfig, a)
		}
	}
	if strings.Contains(c.CgroupPath, "..") {
		return fmt.Errorf("%w: cgroup path %q must not contain \"..\"", ErrInvalidConfig, c.CgroupPath)
	}
	return nil
}

// pinDir is the node's pin directory.
func (c Config) pinDir() string { return filepath.Join(c.PinRoot, c.Node) }

// cgroupDir resolves CgroupPath against the cgroup v2 mount.
func (c Config) cgroupDir(cgroup2 string) string {
	if filepath.IsAbs(c.CgroupPath) {
		return filepath.Clean(c.CgroupPath)
	}
	return filepath.Join(cgroup2, c.CgroupPath)
}
