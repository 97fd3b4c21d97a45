package cluster

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"
)

func TestPlanLoadBalancers(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }
	vip := func(ip string) []LBIngress { return []LBIngress{{IP: ip, IPMode: "VIP"}} }
	lb := func(key string, created int, ingress ...LBIngress) LBService {
		return LBService{Key: key, Created: at(created), LoadBalancer: true, Ingress: ingress}
	}
	with := func(s LBService, f func(*LBService)) LBService { f(&s); return s }
	ip := netip.MustParseAddr
	allocated := func(key, addr string) LBDecision {
		return LBDecision{Key: key, Write: true, IP: ip(addr), Event: &LBEvent{Reason: ReasonIPAllocated, Message: fmt.Sprintf("Assigned IP [%q]", addr)}}
	}
	failed := func(key string, write bool, why string) LBDecision {
		return LBDecision{Key: key, Write: write, Event: &LBEvent{Warning: true, Reason: ReasonAllocationFailed,
			Message: fmt.Sprintf("Failed to allocate IP for %q: %s", key, why)}}
	}
	pool := netip.MustParsePrefix("172.30.200.0/29") // hands out .1 to .6
	for _, tc := range []struct {
		name string
		pool netip.Prefix // default: pool
		svcs []LBService
		want []LBDecision
	}{{
		name: "lowest free address, never the network address",
		svcs: []LBService{lb("ns/a", 0)},
		want: []LBDecision{allocated("ns/a", "172.30.200.1")},
	}, {
		name: "a Service keeps its address: nothing to do",
		svcs: []LBService{lb("ns/a", 0, vip("172.30.200.4")...), lb("ns/b", 1)},
		want: []LBDecision{allocated("ns/b", "172.30.200.1")},
	}, {
		name: "status without ipMode VIP, or with more entries, is rewritten without an Event",
		svcs: []LBService{
			lb("ns/a", 0, LBIngress{IP: "172.30.200.2"}),
			lb("ns/b", 1, append(vip("172.30.200.3"), LBIngress{Hostname: "lb.example"})...),
		},
		want: []LBDecision{{Key: "ns/a", Write: true, IP: ip("172.30.200.2")}, {Key: "ns/b", Write: true, IP: ip("172.30.200.3")}},
	}, {
		name: "an address outside the pool in the status is replaced",
		svcs: []LBService{lb("ns/a", 0, vip("192.0.2.7")...)},
		want: []LBDecision{allocated("ns/a", "172.30.200.1")},
	}, {
		name: "spec.loadBalancerIP is honoured when free",
		svcs: []LBService{lb("ns/a", 0, vip("172.30.200.1")...), with(lb("ns/b", 1), func(s *LBService) { s.Requested = "172.30.200.5" })},
		want: []LBDecision{allocated("ns/b", "172.30.200.5")},
	}, {
		name: "spec.loadBalancerIP changed: the Service moves, its old address is free next round",
		svcs: []LBService{
			with(lb("ns/a", 0, vip("172.30.200.1")...), func(s *LBService) { s.Requested = "172.30.200.6" }),
			lb("ns/b", 1),
		},
		want: []LBDecision{allocated("ns/a", "172.30.200.6"), allocated("ns/b", "172.30.200.2")},
	}, {
		name: "spec.loadBalancerIP held by another Service, outside the pool, not an address",
		svcs: []LBService{
			lb("ns/a", 0, vip("172.30.200.1")...),
			with(lb("ns/b", 1, vip("172.30.200.2")...), func(s *LBService) { s.Requested = "172.30.200.1" }),
			with(lb("ns/c", 2), func(s *LBService) { s.Requested = "10.1.2.3" }),
			with(lb("ns/d", 3), func(s *LBService) { s.Requested = "172.30.200.7" }), // broadcast
			with(lb("ns/e", 4), func(s *LBService) { s.Requested = "lb.example" }),
		},
		want: []LBDecision{
			failed("ns/b", true, `spec.loadBalancerIP 172.30.200.1 is already in use by Service "ns/a"`),
			failed("ns/c", false, "spec.loadBalancerIP 10.1.2.3 is not in the lab's load-balancer pool 172.30.200.0/29"),
			failed("ns/d", false, "spec.loadBalancerIP 172.30.200.7 is not in the lab's load-balancer pool 172.30.200.0/29"),
			failed("ns/e", false, `spec.loadBalancerIP "lb.example" is not an IP address`),
		},
	}, {
		name: "a Service with a loadBalancerClass is another implementation's: left alone, its pool address taken",
		svcs: []LBService{
			with(lb("ns/a", 0, vip("172.30.200.1")...), func(s *LBService) { s.Class = "example.com/lb" }),
			with(lb("ns/b", 1), func(s *LBService) { s.Class = "example.com/lb" }),
			lb("ns/c", 2),
		},
		want: []LBDecision{allocated("ns/c", "172.30.200.2")},
	}, {
		name: "type changed: status cleared, the address free only next round",
		pool: netip.MustParsePrefix("172.30.200.0/30"), // .1 and .2
		svcs: []LBService{
			with(lb("ns/a", 0, vip("172.30.200.1")...), func(s *LBService) { s.LoadBalancer = false }),
			lb("ns/b", 1, vip("172.30.200.2")...),
			lb("ns/c", 2),
			{Key: "ns/d", Created: at(3)}, // a ClusterIP Service: nothing
		},
		want: []LBDecision{
			{Key: "ns/a", Write: true, Event: &LBEvent{Reason: ReasonIPReleased, Message: "Released IP 172.30.200.1: the Service is no longer of type LoadBalancer"}},
			failed("ns/c", false, "no available IPs in the lab's load-balancer pool 172.30.200.0/30"),
		},
	}, {
		name: "type changed and status already emptied by the apiserver: only the Event, from Had",
		svcs: []LBService{
			{Key: "ns/a", Created: at(0), Had: ip("172.30.200.1")},
			{Key: "ns/b", Created: at(1)},                                                                  // never had one
			with(lb("ns/c", 2, vip("172.30.200.2")...), func(s *LBService) { s.Had = ip("172.30.200.2") }), // still holds it
		},
		want: []LBDecision{{Key: "ns/a", Event: &LBEvent{Reason: ReasonIPReleased, Message: "Released IP 172.30.200.1: the Service is no longer of type LoadBalancer"}}},
	}, {
		name: "exhausted: the older Services get the addresses, whatever the list order",
		pool: netip.MustParsePrefix("172.30.200.0/30"),
		svcs: []LBService{lb("ns/young", 9), lb("ns/b", 1), lb("ns/a", 1)},
		want: []LBDecision{
			failed("ns/young", false, "no available IPs in the lab's load-balancer pool 172.30.200.0/30"),
			allocated("ns/b", "172.30.200.2"),
			allocated("ns/a", "172.30.200.1"),
		},
	}, {
		name: "an address held twice stays with the older Service; the other gets a new one",
		svcs: []LBService{lb("ns/new", 5, vip("172.30.200.3")...), lb("ns/old", 1, vip("172.30.200.3")...)},
		want: []LBDecision{allocated("ns/new", "172.30.200.1")},
	}, {
		name: "IPv6-only is refused; dual-stack gets an IPv4 address",
		svcs: []LBService{
			with(lb("ns/v6", 0), func(s *LBService) { s.Families = []string{"IPv6"} }),
			with(lb("ns/dual", 1), func(s *LBService) { s.Families = []string{"IPv6", "IPv4"} }),
		},
		want: []LBDecision{
			failed("ns/v6", false, "the lab's load-balancer pool 172.30.200.0/29 is IPv4 only and ipFamilies is [IPv6]"),
			allocated("ns/dual", "172.30.200.1"),
		},
	}, {
		name: "a /32 pool hands out its one address",
		pool: netip.MustParsePrefix("172.30.200.9/32"),
		svcs: []LBService{lb("ns/a", 0), lb("ns/b", 1)},
		want: []LBDecision{allocated("ns/a", "172.30.200.9"), failed("ns/b", false, "no available IPs in the lab's load-balancer pool 172.30.200.9/32")},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pool
			if !p.IsValid() {
				p = pool
			}
			got := PlanLoadBalancers(p, tc.svcs)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got:\n%s\nwant:\n%s", dumpDecisions(got), dumpDecisions(tc.want))
			}
		})
	}
}

// TestPlanLoadBalancersConverges applies each plan to the statuses and plans
// again, as the controller does after its writes: a released address goes to
// the Service waiting for one, nothing is handed out twice, and the last
// plan has nothing to do.
func TestPlanLoadBalancersConverges(t *testing.T) {
	pool := netip.MustParsePrefix("172.30.200.0/30")
	svcs := []LBService{
		{Key: "ns/a", LoadBalancer: false, Ingress: []LBIngress{{IP: "172.30.200.1", IPMode: "VIP"}}},
		{Key: "ns/b", LoadBalancer: true, Ingress: []LBIngress{{IP: "172.30.200.2", IPMode: "VIP"}}},
		{Key: "ns/c", LoadBalancer: true},
		{Key: "ns/d", LoadBalancer: true, Requested: "172.30.200.2"},
	}
	var rounds int
	for rounds = 1; rounds < 10; rounds++ {
		plan := PlanLoadBalancers(pool, svcs)
		writes := 0
		for _, d := range plan {
			if !d.Write {
				continue
			}
			writes++
			for i := range svcs {
				if svcs[i].Key == d.Key {
					svcs[i].Ingress = nil
					if d.IP.IsValid() {
						svcs[i].Ingress = []LBIngress{{IP: d.IP.String(), IPMode: "VIP"}}
					}
				}
			}
		}
		seen := map[string]string{}
		for _, s := range svcs {
			for _, in := range s.Ingress {
				if other, ok := seen[in.IP]; ok {
					t.Fatalf("round %d: %s held by %s and %s", rounds, in.IP, other, s.Key)
				}
				seen[in.IP] = s.Key
			}
		}
		if writes == 0 {
			break
		}
	}
	want := map[string]string{"ns/a": "", "ns/b": "172.30.200.2", "ns/c": "172.30.200.1", "ns/d": ""}
	for _, s := range svcs {
		got := ""
		if len(s.Ingress) > 0 {
			got = s.Ingress[0].IP
		}
		if got != want[s.Key] {
			t.Errorf("after %d rounds %s holds %q, want %q", rounds, s.Key, got, want[s.Key])
		}
	}
	if rounds != 3 {
		t.Errorf("converged after %d rounds, want 3 (release, then allocate, then nothing)", rounds)
	}
}

func TestPoolSize(t *testing.T) {
	for pool, want := range map[string]int{"172.30.200.0/24": 254, "172.30.200.0/30": 2, "172.30.200.0/31": 2, "172.30.200.9/32": 1, "fd00::/120": 0} {
		if got := PoolSize(netip.MustParsePrefix(pool)); got != want {
			t.Errorf("PoolSize(%s) = %d, want %d", pool, got, want)
		}
	}
}

func dumpDecisions(ds []LBDecision) string {
	s := ""
	for _, d := range ds {
		s += fmt.Sprintf("  %s write=%v ip=%v", d.Key, d.Write, d.IP)
		if d.Event != nil {
			s += fmt.Sprintf(" event=%+v", *d.Event)
		}
		s += "\n"
	}
	return s
}
