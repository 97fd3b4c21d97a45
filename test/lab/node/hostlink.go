package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
)

// HostLink is the host's one link into the fabric, so that the host reaches
// LoadBalancer addresses as a client outside a cluster would (see the package
// doc, Host link). The zero HostLink means none: SetupFabric then creates
// nothing in the host netns.
type HostLink struct {
	// Name is the host-side veth: "wl-" and at most 12 more bytes.
	Name string `json:"name"`
	// Addr is the host's address on the fabric, in the nodes' /24
	// (172.30.0.1/24 in the lab).
	Addr netip.Prefix `json:"addr"`
	// LoadBalancerPool is where LoadBalancer Services get their addresses
	// (172.30.200.0/24 in the lab): routed from the host via the first node,
	// and through eth0 in every node netns.
	LoadBalancerPool netip.Prefix `json:"loadBalancerPool"`
}

// fabricHostPeer is the fabric-side end of the host link, a bridge port.
const fabricHostPeer = "fhost"

var linkNameRE = regexp.MustCompile(`^wl-[a-zA-Z0-9_.-]{1,12}$`)

// enabled reports whether a host link is asked for.
func (h HostLink) enabled() bool { return h != HostLink{} }

// Validate checks the host link against the nodes it joins: the address in
// their /24 and none of theirs, a pool that overlaps nothing of the lab.
func (h HostLink) Validate(nodes []Config) error {
	if !h.enabled() {
		return nil
	}
	fabric := netip.PrefixFrom(nodes[0].NodeIP, 24).Masked()
	switch {
	case !linkNameRE.MatchString(h.Name):
		return fmt.Errorf("%w: host link name %q (wl- and 1 to 12 of [a-zA-Z0-9_.-], at most 15 bytes)", ErrConfig, h.Name)
	case !h.Addr.IsValid() || !h.Addr.Addr().Is4() || h.Addr.Masked() != fabric:
		return fmt.Errorf("%w: host link address %v is not an address in the fabric %v", ErrConfig, h.Addr, fabric)
	case h.Addr.Addr() == fabric.Addr() || !fabric.Contains(h.Addr.Addr().Next()):
		return fmt.Errorf("%w: host link address %v is the fabric's network or broadcast address", ErrConfig, h.Addr)
	case !h.LoadBalancerPool.IsValid() || !h.LoadBalancerPool.Addr().Is4() || h.LoadBalancerPool != h.LoadBalancerPool.Masked():
		return fmt.Errorf("%w: load-balancer pool %v is not an IPv4 prefix", ErrConfig, h.LoadBalancerPool)
	case h.LoadBalancerPool.Overlaps(fabric):
		return fmt.Errorf("%w: load-balancer pool %v overlaps the fabric %v", ErrConfig, h.LoadBalancerPool, fabric)
	}
	for _, n := range nodes {
		switch {
		case n.NodeIP == h.Addr.Addr():
			return fmt.Errorf("%w: host link address %v is node %s's IP", ErrConfig, h.Addr.Addr(), n.Name)
		case h.LoadBalancerPool.Overlaps(n.PodCIDR), h.LoadBalancerPool.Overlaps(n.ServiceCIDR), h.LoadBalancerPool.Contains(n.APIServerVIP.Addr()):
			return fmt.Errorf("%w: load-balancer pool %v overlaps node %s's PodCIDR %v, ServiceCIDR %v or APIServerVIP %v",
				ErrConfig, h.LoadBalancerPool, n.Name, n.PodCIDR, n.ServiceCIDR, n.APIServerVIP.Addr())
		}
	}
	return nil
}

// hostRoute is one route of the host's main table, as `ip -j route` prints it.
type hostRoute struct {
	Dst string `json:"dst"`
	Dev string `json:"dev"`
}

// prefix is the route's destination ("default" and bare addresses included).
func (r hostRoute) prefix() (netip.Prefix, bool) {
	if r.Dst == "default" {
		return netip.MustParsePrefix("0.0.0.0/0"), true
	}
	if p, err := netip.ParsePrefix(r.Dst); err == nil {
		return p, true
	}
	a, err := netip.ParseAddr(r.Dst)
	return netip.PrefixFrom(a, a.BitLen()), err == nil
}

// hostRoutes lists the host's IPv4 main-table routes.
func hostRoutes() ([]hostRoute, error) {
	out, err := exec.Command("ip", "-4", "-j", "route", "show", "table", "main").Output()
	if err != nil {
		return nil, fmt.Errorf("list host routes: %w", err)
	}
	var rs []hostRoute
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("parse host routes: %w", err)
	}
	return rs, nil
}

// conflictingRoute finds a host route (other than the default route) that
// overlaps what the host link would route: another lab, a VPN, a real
// network. Routes through the link itself are not conflicts.
func conflictingRoute(routes []hostRoute, link string, want ...netip.Prefix) (hostRoute, bool) {
	for _, r := range routes {
		p, ok := r.prefix()
		if !ok || p.Bits() == 0 || r.Dev == link {
			continue
		}
		for _, w := range want {
			if p.Overlaps(w) {
				return r, true
			}
		}
	}
	return hostRoute{}, false
}

// checkHostRoutes fails when a host route of another link overlaps the
// host link's prefixes.
func checkHostRoutes(h HostLink) error {
	if !h.enabled() {
		return nil
	}
	routes, err := hostRoutes()
	if err != nil {
		return err
	}
	if r, ok := conflictingRoute(routes, h.Name, h.Addr.Masked(), h.LoadBalancerPool); ok {
		return fmt.Errorf("host route %s dev %s overlaps the host link's %v or %v (another lab, or a network of this host?)",
			r.Dst, r.Dev, h.Addr.Masked(), h.LoadBalancerPool)
	}
	return nil
}

// setupHostLink creates the host link: the veth from the host into the
// fabric bridge, the host address, the pool route via the first node, and
// the pool route through eth0 in every node netns.
func setupHostLink(h HostLink, nodes []Config, fab string) error {
	steps := [][]string{
		{"link", "add", h.Name, "type", "veth", "peer", "name", fabricHostPeer, "netns", fab},
		{"-n", fab, "link", "set", fabricHostPeer, "master", "br0", "up"},
		{"addr", "add", h.Addr.String(), "dev", h.Name},
		{"link", "set", h.Name, "up"},
		{"route", "add", h.LoadBalancerPool.String(), "via", nodes[0].NodeIP.String(), "dev", h.Name},
	}
	for _, n := range nodes {
		steps = append(steps, []string{"-n", nodeNetns(n.Name), "route", "add", h.LoadBalancerPool.String(), "dev", "eth0", "src", n.NodeIP.String()})
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return fmt.Errorf("host link: %w", err)
		}
	}
	return nil
}

// cleanupHostLink removes the host link and its routes; what is already gone
// is not an error. Deleting the veth takes every route through it, the
// /32s of SetLoadBalancerRoutes too; the recorded pool route is deleted
// first all the same, in case the link went and a route stayed.
func cleanupHostLink(h HostLink) error {
	if !h.enabled() {
		return nil
	}
	if _, err := net.InterfaceByName(h.Name); err != nil {
		return nil
	}
	var errs []error
	if err := ip("route", "del", h.LoadBalancerPool.String(), "dev", h.Name); err != nil && !isGone(err) {
		errs = append(errs, err)
	}
	if err := ip("link", "del", h.Name); err != nil && !isGone(err) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// isGone reports whether an ip(8) error says the object does not exist.
func isGone(err error) bool {
	s := err.Error()
	return strings.Contains(s, "No such process") || strings.Contains(s, "Cannot find device") || strings.Contains(s, "No such device")
}
