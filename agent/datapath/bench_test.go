package datapath

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkPrivilegedRedirect measures what the redirect alone adds: a pod
// process talks to the same stand-in proxy listener either by dialing its
// address directly ("direct": hooks run, nothing matches) or by dialing a
// meshed VIP ("redirect": connect4 rewrite, sockops record, Lookup hit).
// The proxy does its Lookup in both cases. "connect" opens a connection per
// request; "keepalive" does line round trips on one connection.
//
//	go test -run '^$' -bench PrivilegedRedirect ./agent/datapath/
//
// ns/req is wall time per request in the pod; cpu-ns/req adds the pod's and
// this process's (the proxy's) CPU time. Ratios redirect/direct are the
// figures to read; absolute numbers depend on the machine.
func BenchmarkPrivilegedRedirect(b *testing.B) {
	pod := benchSetup(b)
	for _, mode := range []string{"connect", "keepalive"} {
		for _, path := range []struct{ name, addr string }{{"direct", proxyAddr1}, {"redirect", vipMeshed}} {
			b.Run(mode+"/"+path.name, func(b *testing.B) {
				cpu0 := cpuTime()
				pod.send(fmt.Sprintf("bench %s %s %d", mode, path.addr, b.N))
				line := pod.read()
				serverCPU := cpuTime() - cpu0
				var elapsed, clientCPU int64
				if _, err := fmt.Sscanf(line, "bench %d %d", &elapsed, &clientCPU); err != nil {
					b.Fatalf("bench answer %q: %v", line, err)
				}
				b.ReportMetric(float64(elapsed)/float64(b.N), "ns/req")
				b.ReportMetric(float64(time.Duration(clientCPU)+serverCPU)/float64(b.N), "cpu-ns/req")
			})
		}
	}
}

// BenchmarkPrivilegedRedirectRatio reports redirect/direct ratios from one
// run: the pod alternates blocks of requests on both paths, so machine load
// hits both alike. latency-ratio is wall time, cpu-ratio the pod process's
// CPU time (user + system: the cgroup hooks run in its connect calls).
//
//	go test -run '^$' -bench PrivilegedRedirectRatio -benchtime 20000x ./agent/datapath/
func BenchmarkPrivilegedRedirectRatio(b *testing.B) {
	pod := benchSetup(b)
	for _, mode := range []string{"connect", "keepalive"} {
		b.Run(mode, func(b *testing.B) {
			pod.send(fmt.Sprintf("pair %s %s %s %d", mode, proxyAddr1, vipMeshed, b.N))
			line := pod.read()
			var wd, cd, wr, cr int64
			if _, err := fmt.Sscanf(line, "pair %d %d %d %d", &wd, &cd, &wr, &cr); err != nil {
				b.Fatalf("pair answer %q: %v", line, err)
			}
			b.ReportMetric(float64(wd)/float64(b.N), "direct-ns/req")
			b.ReportMetric(float64(wr)/float64(b.N), "redirect-ns/req")
			b.ReportMetric(float64(wr)/float64(wd), "latency-ratio")
			b.ReportMetric(float64(cr)/float64(cd), "cpu-ratio")
		})
	}
}

// benchSetup: node netns, one enrolled pod, the stand-in proxy serving both
// redirected and direct connections.
func benchSetup(b *testing.B) *proc {
	requirePrivileged(b)
	tp := newTopo(b, "a")
	dp, _ := tp.openDP("n1", "n1/kubepods", proxyAddr1)
	tp.serveProxy("n1", proxyAddr1, func(c, p netip.AddrPort) (Original, bool) {
		o, _ := dp.Lookup(c, p)
		return o, true // serve direct connections too: same work on both paths
	})
	uid := "aaaaaaaa-0000-0000-0000-0000000000bb"
	pod := tp.startPod("a", "n1/kubepods/pod"+uid)
	mustSync(b, dp, Desired{Pods: []Pod{{UID: uid}}, Meshed: []netip.AddrPort{netip.MustParseAddrPort(vipMeshed)}})
	return pod
}
