// Package lab is the local Kubernetes cluster Weft is tested and demoed on: the control
// plane of package cluster and one node runtime (package node) per node, run by a
// detached supervisor process (`weft-lab serve`) that `weft-lab up` starts and
// `weft-lab down` stops.
//
// Everything lives under <repo>/.cache/lab:
//
//	kubeconfig       admin kubeconfig (https://127.0.0.1:6443)
//	state.json       the supervisor's PID, node count and phase
//	supervisor.log   the supervisor's log
//	cp/              control-plane PKI, etcd data, logs (cp/logs/*.log)
//	nodes/<name>/    each node runtime's state, pod logs and volumes
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/weft-mesh/weft/test/lab/cluster"
	"github.com/weft-mesh/weft/test/lab/node"
)

// Paths are the lab's files, derived from the repository root.
type Paths struct {
	Root       string // repository root
	Dir        string // .cache/lab
	Kubeconfig string
	State      string
	Log        string
	CPDir      string
	NodesDir   string
	BinDir     string // .cache/bin (weft binaries)
	K8sBinDir  string // .cache/k8s/bin
	CNIBinDir  string // .cache/cni/bin (the reference CNI plugins, `make cni-plugins`)
}

// PathsFor returns the lab paths of a repository root.
func PathsFor(root string) Paths {
	dir := filepath.Join(root, ".cache", "lab")
	return Paths{
		Root:       root,
		Dir:        dir,
		Kubeconfig: filepath.Join(dir, "kubeconfig"),
		State:      filepath.Join(dir, "state.json"),
		Log:        filepath.Join(dir, "supervisor.log"),
		CPDir:      filepath.Join(dir, "cp"),
		NodesDir:   filepath.Join(dir, "nodes"),
		BinDir:     filepath.Join(root, ".cache", "bin"),
		K8sBinDir:  filepath.Join(root, ".cache", "k8s", "bin"),
		CNIBinDir:  filepath.Join(root, ".cache", "cni", "bin"),
	}
}

// cliLock serializes weft-lab up and down of one repository's lab.
func (p Paths) cliLock() string { return filepath.Join(p.Dir, ".lock") }

// FindRoot walks up from dir to the directory holding the weft go.mod.
func FindRoot(dir string) (string, error) {
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/weft-mesh/weft\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no weft go.mod above the working directory")
		}
		dir = parent
	}
}

// Phase of the supervisor.
type Phase string

const (
	PhaseStarting Phase = "starting"
	PhaseRunning  Phase = "running"
	PhaseStopping Phase = "stopping"
	PhaseFailed   Phase = "failed"
)

// State is what the supervisor records in state.json.
type State struct {
	PID     int       `json:"pid"`
	Start   string    `json:"start"` // the supervisor's /proc start time (see cluster.ProcessStart)
	Nodes   int       `json:"nodes"`
	Phase   Phase     `json:"phase"`
	Started time.Time `json:"started"`
	Error   string    `json:"error,omitempty"`
}

// ReadState reads state.json; a missing file gives os.ErrNotExist.
func ReadState(p Paths) (State, error) {
	var st State
	b, err := os.ReadFile(p.State)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("parse %s: %w", p.State, err)
	}
	return st, nil
}

func writeState(p Paths, st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := p.State + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p.State)
}

// Alive reports whether the recorded supervisor still runs (same pid and start time,
// not a zombie).
func (st State) Alive() bool {
	start, ok := cluster.ProcessStart(st.PID)
	return ok && st.Start != "" && start == st.Start
}

// NodeName is the name of node i (1-based).
func NodeName(i int) string { return fmt.Sprintf("lab-node-%d", i) }

// NodeIP is the fabric address of node i: 172.30.0.(10+i).
func NodeIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{172, 30, 0, byte(10 + i)}) }

// PodCIDR is node i's pod range: 10.244.i.0/24.
func PodCIDR(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
}

// HostLink is the host's link into the fabric: wl-host with 172.30.0.1/24 (no node
// uses .1), and a route for the LoadBalancer pool into the nodes, so a client on the
// host reaches LoadBalancer Services as it would reach a cloud's load balancer.
func HostLink() node.HostLink {
	return node.HostLink{
		Name:             "wl-host",
		Addr:             netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 30, 0, 1}), 24),
		LoadBalancerPool: cluster.LoadBalancerPool,
	}
}

// KubeletPort is node i's kubelet API port on host 127.0.0.1.
func KubeletPort(i int) int { return 10250 + i }

// MaxNodes bounds --nodes: node IPs, pod CIDRs and kubelet ports stay distinct.
const MaxNodes = 20

// ErrNodes reports an unusable node count.
var ErrNodes = fmt.Errorf("node count must be 1..%d", MaxNodes)

func checkNodes(n int) error {
	if n < 1 || n > MaxNodes {
		return fmt.Errorf("%w, got %d", ErrNodes, n)
	}
	return nil
}
