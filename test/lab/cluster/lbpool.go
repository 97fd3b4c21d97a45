package cluster

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// The reasons of the Events the load-balancer allocator records on Services
// (MetalLB's words, which users of bare-metal clusters know).
const (
	// ReasonIPAllocated (Normal): the Service got an address of the pool.
	ReasonIPAllocated = "IPAllocated"
	// ReasonAllocationFailed (Warning): the Service has no address and why:
	// the pool is exhausted, its spec.loadBalancerIP cannot be had, or it
	// is IPv6-only.
	ReasonAllocationFailed = "AllocationFailed"
	// ReasonIPReleased (Normal): the Service is no longer of type
	// LoadBalancer (or asked for another address) and gave its address back.
	ReasonIPReleased = "IPReleased"
)

// LBService is what the load-balancer allocator reads of a Service.
type LBService struct {
	Key          string    // namespace/name
	Created      time.Time // older Services win contested addresses
	LoadBalancer bool      // spec.type is LoadBalancer
	Class        string    // spec.loadBalancerClass: another implementation's Service
	Families     []string  // spec.ipFamilies ("IPv4", "IPv6"); empty means IPv4
	Requested    string    // spec.loadBalancerIP
	Ingress      []LBIngress
	// Had is the pool address the allocator last saw the Service hold (the
	// apiserver empties status.loadBalancer itself when the type changes,
	// so the release can only be told from memory); it only adds Events.
	Had netip.Addr
}

// LBIngress is one status.loadBalancer.ingress entry.
type LBIngress struct {
	IP, Hostname, IPMode string
}

// LBEvent is an Event to record on a Service.
type LBEvent struct {
	Warning         bool
	Reason, Message string
}

// LBDecision is what the allocator does about one Service: write its status
// (Write; IP invalid means no ingress at all) and record an Event (if any).
type LBDecision struct {
	Key   string
	Write bool
	IP    netip.Addr
	Event *LBEvent
}

// PlanLoadBalancers decides, from every Service of the cluster, which
// Services of type LoadBalancer without a loadBalancerClass get which
// address of pool, and returns what to change: the Services whose status
// is to be written or that get an Event, in the order of svcs.
//
// Level-based and safe to run again at any time (after a restart, too): the
// allocation table is rebuilt from the statuses. An address is free only
// when no Service's status holds it, so one that a Service gives back in
// this round is handed out in the next round, after the release was
// written; if the write fails the address stays taken. A Service keeps the
// pool address its status holds (an older Service wins one held twice)
// unless it asks for another with spec.loadBalancerIP. Services with a
// loadBalancerClass are left alone, their addresses of the pool counted as
// taken. Other types give their pool address back (the apiserver of the lab
// already empties their status; an Event tells of it when Had says what
// was held).
func PlanLoadBalancers(pool netip.Prefix, svcs []LBService) []LBDecision {
	pool = pool.Masked()
	taken := map[netip.Addr]string{} // pool address -> the Service whose status holds it (the oldest)
	order := make([]int, len(svcs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		return cmp.Or(svcs[a].Created.Compare(svcs[b].Created), strings.Compare(svcs[a].Key, svcs[b].Key))
	})
	for _, i := range order {
		for _, ip := range svcs[i].poolIPs(pool) {
			if _, ok := taken[ip]; !ok {
				taken[ip] = svcs[i].Key
			}
		}
	}
	decisions := make([]*LBDecision, len(svcs))
	for _, i := range order {
		s := svcs[i]
		if s.Class != "" {
			continue // another implementation's
		}
		held := s.poolIPs(pool)
		if !s.LoadBalancer {
			released := s.Had
			if len(held) > 0 {
				released = held[0]
			}
			if released.IsValid() {
				decisions[i] = &LBDecision{Key: s.Key, Write: len(held) > 0, Event: &LBEvent{
					Reason:  ReasonIPReleased,
					Message: fmt.Sprintf("Released IP %s: the Service is no longer of type LoadBalancer", released),
				}}
			}
			continue
		}
		ip, event := s.allocate(pool, taken)
		d := &LBDecision{Key: s.Key, IP: ip, Write: !s.statusIs(ip), Event: event}
		if ip.IsValid() {
			taken[ip] = s.Key
			if !slices.Contains(held, ip) {
				d.Event = &LBEvent{Reason: ReasonIPAllocated, Message: fmt.Sprintf("Assigned IP [%q]", ip.String())}
			}
		}
		if d.Write || d.Event != nil {
			decisions[i] = d
		}
	}
	var out []LBDecision
	for _, d := range decisions {
		if d != nil {
			out = append(out, *d)
		}
	}
	return out
}

// allocate picks the Service's address: the requested one, else the one it
// holds, else the lowest free one. An invalid address comes with the
// Warning saying why there is none.
func (s LBService) allocate(pool netip.Prefix, taken map[netip.Addr]string) (netip.Addr, *LBEvent) {
	fail := func(format string, args ...any) (netip.Addr, *LBEvent) {
		return netip.Addr{}, &LBEvent{Warning: true, Reason: ReasonAllocationFailed,
			Message: fmt.Sprintf("Failed to allocate IP for %q: ", s.Key) + fmt.Sprintf(format, args...)}
	}
	if len(s.Families) > 0 && !slices.Contains(s.Families, "IPv4") {
		return fail("the lab's load-balancer pool %s is IPv4 only and ipFamilies is %v", pool, s.Families)
	}
	free := func(ip netip.Addr) bool { k, ok := taken[ip]; return !ok || k == s.Key }
	if s.Requested != "" {
		ip, err := netip.ParseAddr(s.Requested)
		switch {
		case err != nil:
			return fail("spec.loadBalancerIP %q is not an IP address", s.Requested)
		case !usable(pool, ip):
			return fail("spec.loadBalancerIP %s is not in the lab's load-balancer pool %s", ip, pool)
		case !free(ip):
			return fail("spec.loadBalancerIP %s is already in use by Service %q", ip, taken[ip])
		}
		return ip, nil
	}
	for _, ip := range s.poolIPs(pool) {
		if taken[ip] == s.Key {
			return ip, nil
		}
	}
	for ip := pool.Addr(); pool.Contains(ip); ip = ip.Next() {
		if usable(pool, ip) && free(ip) {
			return ip, nil
		}
	}
	return fail("no available IPs in the lab's load-balancer pool %s", pool)
}

// poolIPs are the addresses of pool the Service's status holds.
func (s LBService) poolIPs(pool netip.Prefix) []netip.Addr {
	var ips []netip.Addr
	for _, in := range s.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil && usable(pool, ip) && !slices.Contains(ips, ip) {
			ips = append(ips, ip)
		}
	}
	return ips
}

// statusIs reports whether the status is exactly what the allocator writes
// for ip: one ingress {ip, ipMode VIP}, or none for an invalid ip.
func (s LBService) statusIs(ip netip.Addr) bool {
	if !ip.IsValid() {
		return len(s.Ingress) == 0
	}
	return len(s.Ingress) == 1 && s.Ingress[0] == LBIngress{IP: ip.String(), IPMode: "VIP"}
}

// usable reports whether ip is an address of pool the allocator hands out:
// not the network or broadcast address (on a /30 or larger).
func usable(pool netip.Prefix, ip netip.Addr) bool {
	if !ip.Is4() || !pool.Contains(ip) {
		return false
	}
	if pool.Bits() >= 31 {
		return true
	}
	a := pool.Addr().As4()
	b := binary.BigEndian.Uint32(a[:]) | (1<<(32-pool.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], b)
	return ip != pool.Addr() && ip != netip.AddrFrom4(a)
}

// PoolSize is how many addresses of pool the allocator hands out.
func PoolSize(pool netip.Prefix) int {
	pool = pool.Masked()
	if !pool.Addr().Is4() {
		return 0
	}
	n := 1 << (32 - pool.Bits())
	if pool.Bits() < 31 {
		n -= 2
	}
	return n
}
