package e2e

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/metrics/stat"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/mesh"
)

// agentMetrics scrapes every agent through the API server's pod proxy, as
// Prometheus's Kubernetes discovery or weftctl stat would. Keyed by pod.
func (e *env) agentMetrics() map[string]stat.Families {
	e.t.Helper()
	pods := strings.Fields(e.kubectl("get", "pods", "-n", mesh.SystemNamespace, "-l", mesh.LabelName+"="+mesh.AgentName,
		"--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}"))
	if len(pods) == 0 {
		e.t.Fatal("no running agent to scrape")
	}
	out := map[string]stat.Families{}
	for _, p := range pods {
		raw := e.kubectl("get", "--raw", "/api/v1/namespaces/"+mesh.SystemNamespace+"/pods/"+p+":"+strconv.Itoa(mesh.MetricsPort)+"/proxy"+mesh.MetricsPath)
		f, err := stat.Parse(strings.NewReader(raw))
		if err != nil {
			e.t.Fatalf("metrics of %s: %v", p, err)
		}
		out[p] = f
	}
	return out
}

// requestsBetween returns, per backend, the requests the agents counted
// between two scrapes for a route and caller namespace.
func requestsBetween(before, after map[string]stat.Families, route, callerNS string) map[string]int {
	out := map[string]int{}
	for _, r := range stat.Window(stat.Pairs(before, after, 1), stat.Filter{Route: route, SourceNamespace: callerNS}) {
		if r.Requests > 0 {
			out[r.Backend] += int(r.Requests)
		}
	}
	return out
}

// checkCounted fails unless the agents counted exactly want per backend.
func checkCounted(t *testing.T, got map[string]int, want map[string]int, what string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: agents counted %v, the client saw %v", what, got, want)
		return
	}
	for b, n := range want {
		if got[b] != n {
			t.Errorf("%s: agents counted %v, the client saw %v", what, got, want)
			return
		}
	}
	t.Logf("%s: agents counted %v, as the client saw", what, got)
}

// testRefusedMTLSByReason opens three connections to the tunnel port of the
// node where the faces client runs, from the host: plaintext, TLS without
// a server name, and TLS asking for the client's identity without a client
// certificate. The node's agent must count each refusal under its reason.
func testRefusedMTLSByReason(t *testing.T, e *env) {
	out := e.kubectl("get", "pod", "-n", "faces", "client", "-o", "jsonpath={.spec.nodeName} {.spec.serviceAccountName}")
	node, sa, _ := strings.Cut(out, " ")
	out = e.kubectl("get", "pods", "-n", mesh.SystemNamespace, "-l", mesh.LabelName+"="+mesh.AgentName,
		"--field-selector=spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name} {.items[0].status.podIP}")
	pod, ip, _ := strings.Cut(out, " ")
	addr := net.JoinHostPort(ip, strconv.Itoa(mesh.TunnelPort))
	reasons := []string{"not_tls", "unknown_server_name", "no_client_certificate"}
	count := func() map[string]float64 {
		got := map[string]float64{}
		for _, m := range e.agentMetrics()[pod]["weft_inbound_connections_total"].GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					got[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
		return got
	}
	before := count()

	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.Read(make([]byte, 512))
	c.Close()

	id := spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(mesh.DefaultTrustDomain), "/ns/faces/sa/"+sa)
	for _, sni := range []string{"", tunnel.ServerName(id)} {
		tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
			&tls.Config{InsecureSkipVerify: true, ServerName: sni, NextProtos: []string{"h2"}})
		if err == nil {
			tc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = tc.Read(make([]byte, 1)) // TLS 1.3: the refusal arrives after the client's Finished
			tc.Close()
		}
		if err == nil {
			t.Fatalf("a TLS connection (server name %q) without a client certificate was not refused", sni)
		}
	}
	e.eventually(10*time.Second, "refusals counted by reason", func() string {
		after := count()
		for _, r := range reasons {
			if after[r]-before[r] != 1 {
				return fmt.Sprintf("%s counted %v, before %v", pod, after, before)
			}
		}
		return ""
	})
	t.Logf("%s counted one refusal each of %v", pod, reasons)
}
