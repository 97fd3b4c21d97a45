package proxy_test

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// notInMesh turns a test pod into one that is not enrolled: no workload
// entry (so no inbound proxy would deliver to it) and a node without a
// tunnel address. The only way to reach it is the direct plaintext path.
func (e *env) notInMesh(ep *weftv1.Endpoint) *weftv1.Endpoint {
	e.pol.Workloads = slices.DeleteFunc(e.pol.Workloads, func(w *weftv1.Workload) bool { return slices.Contains(w.Ips, ep.Ip) })
	ep.Node = "node-without-weft"
	ep.Plaintext = true
	return ep
}

// TestPlaintextEndpointsAreDialledDirectly: endpoints of a meshed Service
// whose pods are not in the mesh are reached directly, at L7 (HTTP routing
// still applies) and at L4.
func TestPlaintextEndpointsAreDialledDirectly(t *testing.T) {
	e := newEnv(t)
	web := e.notInMesh(e.httpPod("legacy", "web"))
	db := e.notInMesh(e.tcpPod("legacy", "db", func(c net.Conn) { io.Copy(c, c) }))
	e.cluster("legacy/web:80", weftv1.Protocol_PROTOCOL_HTTP, web)
	e.cluster("legacy/db:5432", weftv1.Protocol_PROTOCOL_TCP, db)
	e.service("legacy", "web", "10.96.0.10", 80, weftv1.Protocol_PROTOCOL_HTTP, "legacy/web:80")
	e.service("legacy", "db", "10.96.0.20", 5432, weftv1.Protocol_PROTOCOL_TCP, "legacy/db:5432")
	e.apply()
	caller := e.caller("app")

	c := e.client(caller, vip)
	for range 3 { // a kept-alive direct connection serves the next requests
		resp, a := get(t, c, "http://"+vip+"/x")
		if resp.StatusCode != 200 || a.Pod != web.Pod {
			t.Fatalf("L7 to a pod outside the mesh: %d %+v", resp.StatusCode, a)
		}
	}

	conn := e.dial(caller, "10.96.0.20:5432")
	defer conn.Close()
	conn.Write([]byte("ping"))
	conn.(*net.TCPConn).CloseWrite()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != "ping" {
		t.Fatalf("L4 to a pod outside the mesh: %q %v", got, err)
	}
}
