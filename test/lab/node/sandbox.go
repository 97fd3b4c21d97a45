package node

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
)

// Pod netns wiring: the pod's eth0 holds podIP/32 and a default route via
// podGateway; the node side of the veth has a /32 route to the pod. Both
// sides carry static neighbour entries, so no ARP or bridge is involved.
var podGateway = netip.MustParseAddr("169.254.1.1")

const nodeSideMAC = "ee:ee:ee:ee:ee:ee"

// podVeth is the node-side veth name of a pod (at most 15 bytes).
func podVeth(uid string) string {
	h := sha256.Sum256([]byte(uid))
	return "vp" + hex.EncodeToString(h[:])[:11]
}

// podMAC is the pod-side MAC: locally administered, derived from the IP.
func podMAC(a netip.Addr) string {
	b := a.As4()
	return fmt.Sprintf("0a:58:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
}

// allocateIP returns the lowest free host address of cidr, skipping the
// network address, the first address and the broadcast address.
func allocateIP(cidr netip.Prefix, used map[netip.Addr]bool) (netip.Addr, error) {
	cidr = cidr.Masked()
	a := cidr.Addr().Next().Next()
	for ; cidr.Contains(a); a = a.Next() {
		if !cidr.Contains(a.Next()) {
			break // broadcast
		}
		if !used[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("pod CIDR %v is exhausted", cidr)
}

// sandbox is a pod's network namespace and its link to the node.
type sandbox struct {
	Node  string
	UID   string
	IP    netip.Addr
	Netns string // name
}

// createSandbox creates the pod netns and its veth to the node netns.
// A leftover of the same pod is removed first.
func createSandbox(node, uid string, podIP netip.Addr) (sandbox, error) {
	sb := sandbox{Node: node, UID: uid, IP: podIP, Netns: podNetns(node, uid)}
	if err := deleteSandbox(sb); err != nil {
		return sb, err
	}
	nodeNS, veth := nodeNetns(node), podVeth(uid)
	if err := ip("netns", "add", sb.Netns); err != nil {
		return sb, err
	}
	steps := [][]string{
		{"-n", nodeNS, "link", "add", veth, "address", nodeSideMAC, "type", "veth", "peer", "name", "eth0", "address", podMAC(podIP), "netns", sb.Netns},
		{"-n", sb.Netns, "link", "set", "lo", "up"},
		{"-n", sb.Netns, "addr", "add", netip.PrefixFrom(podIP, 32).String(), "dev", "eth0"},
		{"-n", sb.Netns, "link", "set", "eth0", "up"},
		{"-n", sb.Netns, "route", "add", podGateway.String(), "dev", "eth0", "scope", "link"},
		{"-n", sb.Netns, "route", "add", "default", "via", podGateway.String(), "dev", "eth0", "src", podIP.String()},
		{"-n", sb.Netns, "neigh", "replace", podGateway.String(), "lladdr", nodeSideMAC, "dev", "eth0", "nud", "permanent"},
		{"-n", nodeNS, "link", "set", veth, "up"},
		{"-n", nodeNS, "route", "replace", netip.PrefixFrom(podIP, 32).String(), "dev", veth},
		{"-n", nodeNS, "neigh", "replace", podIP.String(), "lladdr", podMAC(podIP), "dev", veth, "nud", "permanent"},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			_ = deleteSandbox(sb)
			return sb, fmt.Errorf("wire pod netns %s: %w", sb.Netns, err)
		}
	}
	return sb, nil
}

// deleteSandbox removes the pod netns; the veth and the node's route to the
// pod go with it.
func deleteSandbox(sb sandbox) error {
	if _, err := os.Stat(netnsPath(sb.Netns)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return deleteNetns(sb.Netns)
}
