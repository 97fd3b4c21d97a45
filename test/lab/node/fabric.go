package node

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
)

// nodeState is the state file SetupFabric writes into each StateDir; Cleanup
// uses it to find what a (possibly crashed) lab left behind.
type nodeState struct {
	Name       string `json:"name"`
	CgroupRoot string `json:"cgroupRoot"`
	Fabric     string `json:"fabric,omitempty"` // fabric netns name (first node only)
	// Host is the host link and its pool route (first node only).
	Host *HostLink `json:"hostLink,omitempty"`
	dir  string    // the StateDir holding the file
}

// hostLink is the recorded host link (the zero HostLink when none).
func (st nodeState) hostLink() HostLink {
	if st.Host == nil {
		return HostLink{}
	}
	return *st.Host
}

func writeState(st nodeState, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, stateFile), b, 0o644)
}

// fabricPeer is the fabric-side veth name of node i (0-based position).
func fabricPeer(i int) string { return fmt.Sprintf("fn%d", i) }

// SetupFabric creates one netns per node and the bridge linking them, so
// every node reaches every other node's IP and PodCIDR, and, unless host is
// the zero HostLink, the host's link into the fabric. Leftovers of the same
// node names (and host link name) are removed first. It records state files
// for Cleanup before it creates anything.
func SetupFabric(nodes []Config, host HostLink) error {
	if err := validateFabricSet(nodes); err != nil {
		return err
	}
	if err := host.Validate(nodes); err != nil {
		return err
	}
	if err := checkHostRoutes(host); err != nil {
		return fmt.Errorf("set up lab fabric: %w", err)
	}
	fab := fabricNetns(nodes[0].Name)
	for i, n := range nodes {
		st := nodeState{Name: n.Name, CgroupRoot: n.CgroupRoot, dir: n.StateDir}
		if i == 0 {
			st.Fabric = fab
			if host.enabled() {
				st.Host = &host
			}
		}
		if err := writeState(st, n.StateDir); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		if err := cleanupNode(st); err != nil {
			return fmt.Errorf("remove leftovers of node %s: %w", n.Name, err)
		}
	}
	if err := setupFabric(nodes, fab); err != nil {
		return fmt.Errorf("set up lab fabric: %w", err)
	}
	if host.enabled() {
		if err := setupHostLink(host, nodes, fab); err != nil {
			return fmt.Errorf("set up lab fabric: %w", err)
		}
	}
	return nil
}

func setupFabric(nodes []Config, fab string) error {
	if err := ip("netns", "add", fab); err != nil {
		return err
	}
	steps := [][]string{
		{"-n", fab, "link", "set", "lo", "up"},
		{"-n", fab, "link", "add", "br0", "type", "bridge"},
		{"-n", fab, "link", "set", "br0", "up"},
	}
	for i, n := range nodes {
		ns := nodeNetns(n.Name)
		if err := ip("netns", "add", ns); err != nil {
			return err
		}
		steps = append(steps,
			[]string{"-n", fab, "link", "add", fabricPeer(i), "type", "veth", "peer", "name", "eth0", "netns", ns},
			[]string{"-n", fab, "link", "set", fabricPeer(i), "master", "br0", "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
			[]string{"-n", ns, "addr", "add", netip.PrefixFrom(n.NodeIP, 24).String(), "dev", "eth0"},
			[]string{"-n", ns, "link", "set", "eth0", "up"},
			[]string{"-n", ns, "addr", "add", netip.PrefixFrom(n.APIServerVIP.Addr(), 32).String(), "dev", "lo"},
			[]string{"-n", ns, "route", "add", n.ServiceCIDR.Masked().String(), "dev", "eth0", "src", n.NodeIP.String()},
		)
		for _, m := range nodes {
			if m.Name != n.Name {
				steps = append(steps, []string{"-n", ns, "route", "add", m.PodCIDR.Masked().String(), "via", m.NodeIP.String(), "dev", "eth0"})
			}
		}
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return err
		}
	}
	for _, n := range nodes {
		if err := writeSysctl(netnsPath(nodeNetns(n.Name)), "net.ipv4.ip_forward", "1"); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}
