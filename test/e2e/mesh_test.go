package e2e

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/test/syncbuf"
)

const colorURL = "http://color.faces.svc.cluster.local/"

// TestPrivilegedMesh runs the end-to-end scenarios in order on one lab with
// weft installed from its images with the Helm chart.
func TestPrivilegedMesh(t *testing.T) {
	e := setup(t)
	steps := []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"SeedCanarySplitsAndIsEncrypted", testSeedCanary},
		{"HeaderCanary", testHeaderCanary},
		{"ExplainHeaderCanary", testExplainHeaderCanary},
		{"RefusedMTLSByReason", testRefusedMTLSByReason},
		{"DashboardShowsTheSplit", testDashboardShowsTheSplit},
		{"BlueGreenFlips", testBlueGreen},
		{"Statuses", testStatuses},
		{"NonEnrolledNamespaceUntouched", testNonEnrolled},
		{"ParentRefPortScopesTheRoute", testParentRefPort},
		{"OptedOutEndpointsReachedDirectly", testOptedOut},
		{"ConsumerRoute", testConsumerRoute},
		{"WeftCNIChained", testWeftCNIChained},
		{"FirstConnectionOfANewPodIsMeshed", testFirstConnectionMeshed},
		{"GRPCRoute", testGRPCRoute},
		{"SessionPersistence", testSessionPersistence},
		{"HeavyRegexRouteIsBounded", testHeavyRegexRoute},
		{"GatewayProgrammed", testGatewayProgrammed},
		{"GatewayHostnameRoute", testGatewayHostnameRoute},
		{"GatewaySplitByHostname", testGatewaySplit},
		{"GatewayHeaderCanary", testGatewayHeaderCanary},
		{"GatewayBlueGreenUnderLoad", testGatewayBlueGreen},
		{"GatewayTCPRoutes", testGatewayTCP},
		{"GatewayNamespaceSelector", testGatewayNamespaces},
		{"GatewayHTTPSTermination", testGatewayHTTPS},
		{"GatewayTLSPassthrough", testGatewayPassthrough},
		{"GatewayClientCertificates", testGatewayClientCertificates},
		{"GatewayBackendTLSPolicy", testGatewayBackendTLS},
		{"GatewayIntoTheMeshEncrypted", testGatewayIntoTheMesh},
		{"AuthzAllowAndApplicationDeny", testAuthzAllowAndApplicationDeny},
		{"AuthzDenyBeatsAllow", testAuthzDenyBeatsAllow},
		{"StrictMTLS", testStrictMTLS},
		{"ControllerOutage", testControllerOutage},
		{"AgentRestart", testAgentRestart},
		{"DestinationAgentRestart", testDestinationAgentRestart},
		// after the restarts: the Gateway sends its traffic through them
		{"GatewayDeletionRemovesItsDataPlane", testGatewayDeletion},
		{"AgentRestartWhileControllerDown", testAgentRestartControllerDown},
		{"AgentKill9RefusesNothing", testAgentKill9},
		{"APIServerCrash", testAPIServerCrash},
		{"HelmUpgradeUnderTraffic", testHelmUpgrade},
		{"LeastPrivilegeRBAC", testRBAC},
		{"UninstallRemovesTheRedirect", testUninstall},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			s.fn(t, &env{t: t, root: e.root})
		})
	}
}

// splitWithin checks that v2's share is want±tol points.
func splitWithin(t *testing.T, v1, v2 int, want, tol float64) {
	t.Helper()
	share := 100 * float64(v2) / float64(v1+v2)
	t.Logf("split: v1=%d v2=%d (v2 %.1f%%, want %.0f±%.0f)", v1, v2, share, want, tol)
	if math.Abs(share-want) > tol {
		t.Errorf("v2 share %.1f%%, want %.0f±%.0f", share, want, tol)
	}
}

func testSeedCanary(t *testing.T, e *env) {
	e.apply("canary.yaml")
	e.eventually(30*time.Second, "both versions answer", func() string {
		r := e.client("faces", "--url", colorURL, "--count", "40")
		if v1, v2, _ := versions(r); v1 == 0 || v2 == 0 || r.Errors > 0 {
			return fmt.Sprintf("%+v", r)
		}
		return ""
	})
	// Scraped outside the capture: the API server's pod proxy reaches the
	// other node's agent in plaintext on the fabric (control traffic).
	before := e.agentMetrics()
	capture := startCapture(t)
	r := e.client("faces", "--url", colorURL, "--count", "2000")
	seen := capture.stop()
	if r.Errors != 0 || r.Status["200"] != 2000 {
		t.Fatalf("2000 requests: %+v", r)
	}
	v1, v2, other := versions(r)
	if other != 0 {
		t.Fatalf("answers from pods outside color/color2: %v", r.Pods)
	}
	splitWithin(t, v1, v2, 50, 3)
	// Counted at the source node, exactly: every agent scraped through the
	// API server's pod proxy.
	checkCounted(t, requestsBetween(before, e.agentMetrics(), "faces/color-canary", "faces"),
		map[string]int{"faces/color:80": v1, "faces/color2:80": v2}, "seed canary, 2000 requests")

	// Inter-node traffic is TLS only: the bridge between the node
	// namespaces carried tunnel traffic, and none of it was plaintext HTTP.
	if seen.tunnelPackets == 0 {
		t.Fatalf("no packets to :%d seen on the fabric: the capture saw %d packets", mesh.TunnelPort, seen.packets)
	}
	if len(seen.plaintext) > 0 {
		t.Fatalf("plaintext HTTP on the inter-node link: %q", seen.plaintext[:min(3, len(seen.plaintext))])
	}
	t.Logf("fabric capture: %d packets, %d to or from :%d, no plaintext HTTP", seen.packets, seen.tunnelPackets, mesh.TunnelPort)
}

func testHeaderCanary(t *testing.T, e *env) {
	e.apply("header-canary.yaml")
	e.eventually(30*time.Second, "header canary programmed", func() string {
		r := e.client("faces", "--url", colorURL, "--count", "20", "--header", "traffic:test")
		if _, v2, _ := versions(r); v2 != 20 {
			return fmt.Sprintf("with header: %+v", r)
		}
		return ""
	})
	before := e.agentMetrics()
	with := e.client("faces", "--url", colorURL, "--count", "200", "--header", "traffic:test")
	without := e.client("faces", "--url", colorURL, "--count", "200")
	checkCounted(t, requestsBetween(before, e.agentMetrics(), "faces/color-canary", "faces"),
		map[string]int{"faces/color:80": 200, "faces/color2:80": 200}, "header canary, 200 with the header and 200 without")
	if v1, v2, _ := versions(with); v1 != 0 || v2 != 200 {
		t.Errorf("traffic: test went to v1=%d v2=%d, want all v2", v1, v2)
	}
	if v1, v2, _ := versions(without); v1 != 200 || v2 != 0 {
		t.Errorf("no header went to v1=%d v2=%d, want all v1", v1, v2)
	}
}

// testBlueGreen flips 50/50 -> 0/100 and back five times while a client
// keeps sending, and reports how long each flip took to land everywhere.
func testBlueGreen(t *testing.T, e *env) {
	route := func(w1, w2 int) string {
		return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: color-canary, namespace: faces}
spec:
  parentRefs: [{group: "", kind: Service, name: color, port: 80}]
  rules:
  - backendRefs: [{name: color, port: 80, weight: %d}, {name: color2, port: 80, weight: %d}]
`, w1, w2)
	}
	applyYAML(t, route(50, 50))
	var failed, sent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // background load: every request must succeed
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r := e.clientNoFatal("faces", "--url", colorURL, "--count", "50")
			sent.Add(int64(r.Requests))
			failed.Add(int64(r.Errors + r.Requests - r.Status["200"]))
		}
	}()
	var took []time.Duration
	for i := 0; i < 5; i++ {
		for _, w := range [][2]int{{0, 100}, {50, 50}} {
			start := time.Now()
			applyYAML(t, route(w[0], w[1]))
			e.eventually(30*time.Second, fmt.Sprintf("weights %v land", w), func() string {
				r := e.client("faces", "--url", colorURL, "--count", "20")
				v1, v2, _ := versions(r)
				if w[0] == 0 && v1 != 0 {
					return fmt.Sprintf("v1 still answers: %+v", r)
				}
				if w[0] != 0 && (v1 == 0 || v2 == 0) {
					return fmt.Sprintf("not split yet: %+v", r)
				}
				return ""
			})
			if w[0] == 0 {
				took = append(took, time.Since(start))
			}
		}
	}
	close(stop)
	wg.Wait()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	t.Logf("blue/green: apply -> every request on v2: p50 %s, max %s over %d flips; background load %d requests, %d failed",
		took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), len(took), sent.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d of %d requests failed during the flips", failed.Load(), sent.Load())
	}
	applyYAML(t, route(50, 50))
}

func testStatuses(t *testing.T, e *env) {
	for _, c := range []string{"Accepted", "ResolvedRefs"} {
		e.eventually(30*time.Second, "color-canary "+c, func() string {
			st, reason, msg := e.routeCondition("httproute", "faces", "color-canary", c)
			if st != "True" {
				return fmt.Sprintf("%s=%s (%s) %s", c, st, reason, msg)
			}
			return ""
		})
	}
	e.apply("missing-backend.yaml")
	defer e.remove("missing-backend.yaml")
	e.eventually(30*time.Second, "missing backend explained", func() string {
		st, reason, msg := e.routeCondition("httproute", "faces", "broken", "ResolvedRefs")
		if st != "False" || reason != "BackendNotFound" || !strings.Contains(msg, "does-not-exist") {
			return fmt.Sprintf("ResolvedRefs=%s reason=%s message=%q", st, reason, msg)
		}
		t.Logf("broken route: ResolvedRefs=False BackendNotFound: %s", msg)
		return ""
	})
}

func testNonEnrolled(t *testing.T, e *env) {
	e.apply("plain.yaml")
	e.kubectl("-n", "plain", "wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
	// The 50/50 route is in force for the mesh; a plain caller gets the
	// Service as kube-proxy serves it: color pods only.
	r := e.client("plain", "--url", colorURL, "--count", "200")
	if v1, v2, _ := versions(r); v1 != 200 || v2 != 0 || r.Errors != 0 {
		t.Errorf("plain namespace: %+v, want all 200 from v1 (no mesh routing)", r)
	}
	out := e.kubectl("-n", "plain", "get", "pod", "client", "-o", "jsonpath={.status.conditions[?(@.type=='"+string(mesh.ConditionEnrolled)+"')].status}")
	if strings.TrimSpace(out) != "" {
		t.Errorf("pod in a plain namespace has an Enrolled condition: %q", out)
	}
}

func testParentRefPort(t *testing.T, e *env) {
	// The 50/50 route is on port 80 only; port 8080 of the same Service is
	// plain color.
	r := e.client("faces", "--url", "http://color.faces.svc.cluster.local:8080/", "--count", "200")
	if v1, v2, _ := versions(r); v1 != 200 || v2 != 0 || r.Errors != 0 {
		t.Errorf("port 8080: %+v, want all 200 from v1", r)
	}
}

// testOptedOut: a meshed caller reaches a Service of its enrolled namespace
// whose pods (on both nodes) opted out of the mesh; the proxy connects to
// them directly since no proxy answers for them.
func testOptedOut(t *testing.T, e *env) {
	e.apply("opted-out.yaml")
	defer e.remove("opted-out.yaml")
	e.kubectl("-n", "faces", "rollout", "status", "deployment/legacy", "--timeout=120s")
	e.eventually(30*time.Second, "both opted-out pods answer meshed callers", func() string {
		r := e.client("faces", "--url", "http://legacy.faces.svc.cluster.local/", "--count", "200")
		if r.Errors != 0 || r.Status["200"] != 200 || len(r.Pods) != 2 {
			return fmt.Sprintf("legacy: %+v", r)
		}
		return ""
	})
}

func testConsumerRoute(t *testing.T, e *env) {
	e.apply("consumer.yaml")
	defer e.remove("consumer.yaml")
	e.kubectl("-n", "consumer", "wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
	e.waitEnrolled("consumer", "client")
	e.eventually(30*time.Second, "consumer route programmed", func() string {
		r := e.client("consumer", "--url", colorURL, "--count", "100")
		if v1, v2, _ := versions(r); v1 != 0 || v2 != 100 {
			return fmt.Sprintf("consumer: %+v", r)
		}
		return ""
	})
	// Producer-side callers keep the 50/50 producer route.
	r := e.client("faces", "--url", colorURL, "--count", "400")
	v1, v2, _ := versions(r)
	if v1 == 0 || v2 == 0 {
		t.Errorf("faces callers changed by the consumer route: %+v", r)
	}
}

func testGRPCRoute(t *testing.T, e *env) {
	e.apply("grpc.yaml")
	defer e.remove("grpc.yaml")
	target := "color.faces.svc.cluster.local:9090"
	e.eventually(30*time.Second, "GRPCRoute programmed", func() string {
		r := e.client("faces", "--grpc", "--url", target, "--method", "Ping", "--count", "20")
		if _, v2, _ := versions(r); v2 != 20 {
			return fmt.Sprintf("Ping: %+v", r)
		}
		return ""
	})
	before := e.agentMetrics()
	echoR := e.client("faces", "--grpc", "--url", target, "--method", "Echo", "--count", "200")
	pingR := e.client("faces", "--grpc", "--url", target, "--method", "Ping", "--count", "200")
	checkCounted(t, requestsBetween(before, e.agentMetrics(), "faces/color-grpc", "faces"),
		map[string]int{"faces/color:9090": 200, "faces/color2:9090": 200}, "gRPC route, 200 Echo and 200 Ping")
	if v1, v2, _ := versions(echoR); v1 != 200 || v2 != 0 {
		t.Errorf("Echo: v1=%d v2=%d, want all v1 (%+v)", v1, v2, echoR)
	}
	if v1, v2, _ := versions(pingR); v1 != 0 || v2 != 200 {
		t.Errorf("Ping: v1=%d v2=%d, want all v2 (%+v)", v1, v2, pingR)
	}
	streamR := e.client("faces", "--grpc", "--url", target, "--method", "Stream", "--count", "1000")
	v1, v2, _ := versions(streamR)
	if streamR.Errors != 0 {
		t.Errorf("Stream calls failed: %+v", streamR)
	}
	splitWithin(t, v1, v2, 50, 5)
}

func testSessionPersistence(t *testing.T, e *env) {
	e.apply("sticky.yaml")
	defer e.remove("sticky.yaml")
	e.kubectl("-n", "faces", "rollout", "status", "deployment/sticky", "--timeout=180s")
	url := "http://sticky.faces.svc.cluster.local/"
	e.eventually(30*time.Second, "sticky route programmed", func() string {
		st, reason, msg := e.routeCondition("httproute", "faces", "sticky-cookie", "Accepted")
		if st != "True" {
			return fmt.Sprintf("Accepted=%s %s %s", st, reason, msg)
		}
		return ""
	})
	// Without cookies, the 3 pods share the load; with them, one pod
	// answers all 200 requests.
	e.eventually(30*time.Second, "requests spread without a cookie", func() string {
		if r := e.client("faces", "--url", url, "--count", "60"); len(r.Pods) < 2 {
			return fmt.Sprintf("%+v", r)
		}
		return ""
	})
	r := e.client("faces", "--url", url, "--count", "200", "--cookies")
	if len(r.Pods) != 1 || r.Errors != 0 {
		t.Errorf("cookie session: %+v, want one pod for all 200", r)
	}
	// A Session-lifetime cookie carries no Expires or Max-Age.
	hdrs, err := e.exec("faces", "client", "curl", "-s", "-D", "-", "-o", "/dev/null", url)
	if err != nil {
		t.Fatalf("curl: %v: %s", err, hdrs)
	}
	cookie := headerLine(hdrs, "set-cookie")
	if !strings.HasPrefix(cookie, "sticky-session=") || strings.Contains(strings.ToLower(cookie), "max-age") || strings.Contains(strings.ToLower(cookie), "expires") {
		t.Errorf("session cookie = %q, want sticky-session=... without Expires/Max-Age", cookie)
	}
	// Header type: one x-session value sticks to one pod.
	hr := e.client("faces", "--url", "http://sticky.faces.svc.cluster.local:8080/", "--count", "100", "--header", "x-session:abc")
	if len(hr.Pods) != 1 || hr.Errors != 0 {
		t.Errorf("header session: %+v, want one pod for all 100", hr)
	}

	// Two backends at 50/50, each with its own cookie: weights still pick
	// the backend per request; inside each backend one pod answers.
	e.apply("canary.yaml")
	e.apply("sticky-split.yaml")
	defer e.remove("sticky-split.yaml")
	time.Sleep(2 * time.Second) // let the policies' status settle before counting
	sr := e.client("faces", "--url", colorURL, "--count", "1000", "--cookies")
	v1, v2, _ := versions(sr)
	splitWithin(t, v1, v2, 50, 5)
	pods := map[string]int{}
	for p := range sr.Pods {
		pods[strings.SplitN(p, "-", 2)[0]]++
	}
	if pods["color"] != 1 || pods["color2"] != 1 {
		t.Errorf("each backend should answer from one pod: %v", sr.Pods)
	}
	// The Permanent cookie expires at absoluteTimeout (5s). Only color2's
	// answers carry it, and the split is 50/50: ask until one of them
	// answers (32 tries: all missing it is a 2^-32 chance, not 1/256).
	hdrs, err = e.exec("faces", "client", "sh", "-c", "for i in $(seq 32); do h=$(curl -s -D - -o /dev/null "+colorURL+"); echo \"$h\"; case \"$h\" in *color2-session=*) break;; esac; done")
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	perm := ""
	for _, l := range strings.Split(hdrs, "\n") {
		if strings.HasPrefix(strings.ToLower(l), "set-cookie: color2-session=") {
			perm = strings.TrimSpace(l)
		}
	}
	if perm == "" || !strings.Contains(strings.ToLower(perm), "max-age=5") {
		t.Errorf("permanent cookie = %q, want color2-session=...; Max-Age=5", perm)
	}
}

func headerLine(resp, name string) string {
	for _, l := range strings.Split(resp, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func testControllerOutage(t *testing.T, e *env) {
	e.apply("canary.yaml")
	e.kubectl("-n", "weft-system", "scale", "deployment/weft-controller", "--replicas=0")
	e.kubectl("-n", "weft-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=weft-controller", "--timeout=120s")
	deadline := time.Now().Add(60 * time.Second)
	total, v2total := 0, 0
	for time.Now().Before(deadline) {
		r := e.client("faces", "--url", colorURL, "--count", "100")
		if r.Errors != 0 || r.Status["200"] != r.Requests {
			t.Errorf("requests failed with the controller down: %+v", r)
		}
		_, v2, _ := versions(r)
		total += r.Requests
		v2total += v2
	}
	t.Logf("controller down for 60s: %d requests, 0 failed expected; v2 share %.1f%%", total, 100*float64(v2total)/float64(total))
	if share := 100 * float64(v2total) / float64(total); math.Abs(share-50) > 5 {
		t.Errorf("routing changed while the controller was down: v2 %.1f%%", share)
	}
	e.kubectl("-n", "weft-system", "scale", "deployment/weft-controller", "--replicas=2")
	e.kubectl("-n", "weft-system", "rollout", "status", "deployment/weft-controller", "--timeout=180s")
	routeChangeTakesEffect(e, "route change after the controller is back")
}

// routeChangeTakesEffect applies the header canary, waits until every
// request without the header lands on v1, and puts the 50/50 canary back.
func routeChangeTakesEffect(e *env, what string) {
	e.apply("header-canary.yaml")
	took := e.eventually(30*time.Second, what, func() string {
		r := e.client("faces", "--url", colorURL, "--count", "20")
		if v1, v2, _ := versions(r); v1 != 20 || v2 != 0 {
			return fmt.Sprintf("%+v", r)
		}
		return ""
	})
	e.t.Logf("%s: took effect in %s", what, took.Round(100*time.Millisecond))
	e.apply("canary.yaml")
}

// testAgentRestart deletes node 1's agent pod under load: every request
// must succeed (the replacement agent takes the old one's listening sockets
// over, see agent/handoff), and traffic must go on afterwards.
func testAgentRestart(t *testing.T, e *env) {
	restartAgentUnderLoad(t, e, "lab-node-1")
}

// testDestinationAgentRestart restarts the agent of node 2, where half of
// color's pods run, while the client on node 1 sends requests: node 1's
// agent keeps running and must move its traffic off the draining agent's
// tunnel (its pooled gRPC connections included) so that the old agent's
// drain ends with the work in flight, before its grace period would cut it.
// The Gateway's data plane, which sends into the same tunnel, must do the
// same (see underLoad).
func testDestinationAgentRestart(t *testing.T, e *env) {
	restartAgentUnderLoad(t, e, "lab-node-2")
}

// testAgentRestartControllerDown restarts node 1's agent while no
// controller runs: the new agent restores the policy from disk and gets
// the SVIDs from the old one over the handoff socket, so it takes over
// without a controller and no request fails.
func testAgentRestartControllerDown(t *testing.T, e *env) {
	e.kubectl("-n", "weft-system", "scale", "deployment/weft-controller", "--replicas=0")
	e.kubectl("-n", "weft-system", "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=weft-controller", "--timeout=120s")
	scaledBack := false
	scaleBack := func() {
		if !scaledBack {
			scaledBack = true
			e.kubectl("-n", "weft-system", "scale", "deployment/weft-controller", "--replicas=2")
			e.kubectl("-n", "weft-system", "rollout", "status", "deployment/weft-controller", "--timeout=180s")
		}
	}
	defer scaleBack()
	logs := restartAgentUnderLoad(t, e, "lab-node-1")
	if m := regexp.MustCompile(`"msg":"identities handed over","taken":(\d+)`).FindStringSubmatch(logs); m == nil || m[1] == "0" {
		t.Errorf("the new agent did not take the SVIDs over:\n%s", logs)
	}
	scaleBack()
	routeChangeTakesEffect(e, "route change reaches the restarted agent once the controller is back")
}

// underLoad runs act while the faces client sends requests through the mesh,
// HTTP/1.1 and gRPC side by side (and the host through the Gateway, while
// there is one), and returns how many were sent, how many
// failed and the last tally with a failure. Precondition, so that what is counted
// is act: the mesh serves every request before (right after an install the agents
// may still be fetching their SVIDs).
func (e *env) underLoad(what string, act func()) (sent, failed int64, lastBad string) {
	const grpcTarget = "color.faces.svc.cluster.local:9090"
	e.eventually(2*time.Minute, "traffic flows before "+what, func() string {
		if r := e.client("faces", "--url", colorURL, "--count", "20"); r.Errors != 0 || r.Status["200"] != 20 {
			return fmt.Sprintf("%+v", r)
		}
		if r := e.client("faces", "--grpc", "--url", grpcTarget, "--method", "Ping", "--count", "20"); r.Errors != 0 || r.Status["OK"] != 20 {
			return fmt.Sprintf("gRPC: %+v", r)
		}
		if edge.addr != "" {
			if a, err := edgeGet(edgeClient(nil), "http://"+edge.addr+"/", "faces.example.com", nil); err != nil || a.status != 200 {
				return fmt.Sprintf("through the Gateway: %d %v", a.status, err)
			}
		}
		return ""
	})
	// gRPC calls share the source's HTTP/2 connections to the pods, which
	// live across client connections and so across the agents' handoffs
	ld := startLoad(func() echoResult { return e.clientNoFatal("faces", "--url", colorURL, "--count", "20") })
	gl := startLoad(func() echoResult {
		return e.clientNoFatal("faces", "--grpc", "--url", grpcTarget, "--method", "Ping", "--count", "20")
	})
	var el *load // through the Gateway, while there is one: it reaches color's pods through the agents' tunnels
	if edge.addr != "" {
		c := edgeClient(nil)
		defer c.CloseIdleConnections()
		el = startLoad(func() echoResult {
			r := echoResult{Status: map[string]int{}}
			for range 20 {
				r.Requests++
				a, err := edgeGet(c, "http://"+edge.addr+"/", "faces.example.com", nil)
				if err != nil {
					r.Errors++
					r.LastError = err.Error()
					continue
				}
				r.Status[strconv.Itoa(a.status)]++
			}
			return r
		})
	}
	time.Sleep(2 * time.Second)
	act()
	time.Sleep(3 * time.Second)
	sent, failed, lastBad = ld.stop()
	gs, gf, gb := gl.stop()
	sent, failed = sent+gs, failed+gf
	if gb != "" {
		lastBad = "gRPC " + gb
	}
	if el != nil {
		es, ef, eb := el.stop()
		e.t.Logf("through the Gateway: %d requests, %d failed", es, ef)
		sent, failed = sent+es, failed+ef
		if eb != "" {
			lastBad = "Gateway " + eb
		}
	}
	if failed > 0 {
		e.t.Logf("warnings of the weft pods that run now (those that went are gone):\n%s", e.weftWarnings(60))
	}
	return sent, failed, lastBad
}

// followLog follows a weft-system pod's container log from now on; the
// returned func gives what was logged so far (all of it once the pod is
// gone, which ends the follow).
func (e *env) followLog(pod, container string) func() string {
	cmd := exec.Command("kubectl", "--kubeconfig", lab.Kubeconfig(), "-n", "weft-system", "logs", "-f", "--tail=20", pod, "-c", container)
	buf := new(syncbuf.Buffer)
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		return func() string { return "follow log: " + err.Error() }
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	e.t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return buf.String
}

// weftWarnings returns the last n WARN and ERROR lines of the weft pods' logs, each
// prefixed with its pod.
func (e *env) weftWarnings(n int) string {
	out, _ := e.kubectlErr("-n", "weft-system", "logs", "-l", "app.kubernetes.io/part-of=weft", "--prefix", "--tail=-1", "--max-log-requests=10")
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// restartAgentUnderLoad deletes node's agent pod while the client on node 1
// sends requests, and waits for the old pod to be gone; it checks that no
// request failed and that the new agent took the sockets over, and returns
// the new agent's log.
func restartAgentUnderLoad(t *testing.T, e *env, node string) string {
	agentOn := func(node string) []string {
		return strings.Fields(e.kubectl("-n", "weft-system", "get", "pod", "-l", "app.kubernetes.io/name=weft-agent",
			"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[*].metadata.name}"))
	}
	old := agentOn(node)
	if len(old) != 1 {
		t.Fatalf("agent pods on %s: %v, want one", node, old)
	}
	start := time.Now()
	oldLog := e.followLog(old[0], "agent") // gone with its pod: kept for a failure
	sent, failed, lastErr := e.underLoad("the restart", func() {
		e.kubectl("-n", "weft-system", "delete", "pod", old[0], "--wait=true")
		e.kubectl("-n", "weft-system", "rollout", "status", "daemonset/weft-agent", "--timeout=180s")
	})
	t.Logf("agent restart on %s (old pod gone after %s): %d requests, %d failed (HTTP/1.1 and gRPC; transport errors and answers other than 200 or OK; goal 0)",
		node, time.Since(start).Round(100*time.Millisecond), sent, failed)
	// the old agent's drain ends with the work in flight: had a source kept
	// sending into its tunnel, the grace period would have ended it
	if l := oldLog(); strings.Contains(l, "drain grace period ended with work in flight") {
		t.Errorf("the old agent %s drained until its grace period ended:\n%s", old[0], l)
	}
	logs := ""
	now := agentOn(node)
	if len(now) == 1 && now[0] != old[0] {
		logs = e.kubectl("-n", "weft-system", "logs", now[0])
	}
	if failed != 0 {
		t.Errorf("%d of %d requests failed while the agent restarted; last bad tally: %s", failed, sent, lastErr)
		t.Logf("log of the old agent %s:\n%s\nlog of the new agent:\n%s", old[0], oldLog(), logs)
	}
	if len(now) == 1 && now[0] != old[0] {
		if !strings.Contains(logs, "took the listeners over") {
			t.Errorf("agent %s did not take the listeners over from %s:\n%s", now[0], old[0], logs)
		}
	} else {
		t.Errorf("agent pods on %s after the restart: %v", node, now)
	}
	r := e.client("faces", "--url", colorURL, "--count", "100")
	if r.Errors != 0 || r.Status["200"] != 100 {
		t.Errorf("traffic did not recover after the agent restart: %+v", r)
	}
	return logs
}

// clientNoFatal is client for background goroutines: errors count as
// failed requests instead of stopping the test.
func (e *env) clientNoFatal(ns string, args ...string) echoResult {
	out, err := e.exec(ns, "client", append([]string{"weft-echo", "client"}, args...)...)
	if err != nil {
		return echoResult{Requests: 1, Errors: 1}
	}
	return parseResult(out)
}

func applyYAML(t *testing.T, doc string) {
	t.Helper()
	cmd := exec.Command("kubectl", "--kubeconfig", lab.Kubeconfig(), "apply", "--server-side", "--force-conflicts", "-f", "-")
	cmd.Stdin = strings.NewReader(doc)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// capture watches the fabric bridge between the node namespaces.
type capture struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	seen captured
	done chan struct{}
}

type captured struct {
	packets, tunnelPackets int
	plaintext              []string
}

// startCapture runs tcpdump on every port of the fabric bridge and scans its ASCII dump
// for plaintext HTTP; filter is tcpdump's ("tcp" when empty).
func startCapture(t *testing.T, filter ...string) *capture {
	t.Helper()
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("tcpdump is needed to check the inter-node link (apt-get install tcpdump; .ci/run installs it): %v", err)
	}
	fab := fabricNetns(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	if len(filter) == 0 {
		filter = []string{"tcp"}
	}
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", fab, "tcpdump", "-i", "any", "-nn", "-l", "-A", "-s", "256", strings.Join(filter, " "))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("tcpdump: %v (is tcpdump installed?)", err)
	}
	c := &capture{cmd: cmd, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		defer cancel()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			switch {
			case strings.Contains(line, " > ") && strings.Contains(line, " IP "):
				c.seen.packets++
				if tp := "." + strconv.Itoa(mesh.TunnelPort); strings.Contains(line, tp+" ") || strings.Contains(line, tp+":") {
					c.seen.tunnelPackets++
				}
			case strings.Contains(line, "HTTP/1.1") || strings.Contains(line, `"pod"`) || strings.Contains(line, "GET / "):
				c.seen.plaintext = append(c.seen.plaintext, line)
			}
			c.mu.Unlock()
		}
	}()
	time.Sleep(time.Second) // tcpdump is listening
	return c
}

func (c *capture) stop() captured {
	time.Sleep(time.Second)
	c.cmd.Process.Signal(interruptSignal)
	<-c.done
	c.cmd.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen
}

// testRBAC checks the install's least privilege with kubectl auth can-i.
func testRBAC(t *testing.T, e *env) {
	agent := "system:serviceaccount:weft-system:weft-agent"
	ctl := "system:serviceaccount:weft-system:weft-controller"
	for _, c := range []struct {
		as, verb, resource, ns string
		want                   bool
	}{
		{agent, "get", "secrets", "weft-system", false},
		{agent, "list", "secrets", "faces", false},
		{agent, "create", "httproutes.gateway.networking.k8s.io", "faces", false},
		{agent, "update", "httproutes.gateway.networking.k8s.io", "faces", false},
		{agent, "patch", "httproutes.gateway.networking.k8s.io", "faces", false},
		{agent, "delete", "grpcroutes.gateway.networking.k8s.io", "faces", false},
		{agent, "patch", "pods/status", "faces", true},
		{agent, "patch", "pods", "faces", false},
		{ctl, "create", "pods/exec", "faces", false},
		{ctl, "get", "pods/exec", "faces", false},
		// Gateways name their certificates and CAs in Secrets of any namespace
		// (certificateRefs, ReferenceGrant): the controller reads them, never
		// writes one outside weft-system.
		{ctl, "get", "secrets", "faces", true},
		{ctl, "create", "secrets", "faces", false},
		{ctl, "update", "secrets", "faces", false},
		{ctl, "delete", "secrets", "faces", false},
		{ctl, "patch", "httproutes.gateway.networking.k8s.io/status", "faces", true},
		{ctl, "update", "httproutes.gateway.networking.k8s.io", "faces", false},
		{ctl, "create", "tokenreviews.authentication.k8s.io", "", true},
		// AuthorizationPolicies: the controller reads them and writes their
		// status only; the agent never reads them (its policy is pushed)
		{ctl, "list", "authorizationpolicies.policy.weft.dev", "faces", true},
		{ctl, "patch", "authorizationpolicies.policy.weft.dev/status", "faces", true},
		{ctl, "update", "authorizationpolicies.policy.weft.dev", "faces", false},
		{ctl, "delete", "authorizationpolicies.policy.weft.dev", "faces", false},
		{agent, "list", "authorizationpolicies.policy.weft.dev", "faces", false},
		{agent, "list", "serviceaccounts", "faces", false},
		// weft-cni: the agent reads a new pod and its namespace, one get
		// each; it lists and watches nothing
		{agent, "get", "pods", "faces", true},
		{agent, "get", "namespaces", "", true},
		{agent, "list", "pods", "faces", false},
		{agent, "watch", "namespaces", "", false},
	} {
		resource, sub, _ := strings.Cut(c.resource, "/")
		args := []string{"auth", "can-i", c.verb, resource, "--as", c.as}
		if sub != "" {
			args = append(args, "--subresource", sub)
		}
		if c.ns != "" {
			args = append(args, "-n", c.ns)
		}
		out, _ := e.kubectlErr(args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		got := strings.TrimSpace(lines[len(lines)-1]) == "yes"
		if got != c.want {
			t.Errorf("%s can-i %s %s -n %s = %q, want %v", c.as, c.verb, c.resource, c.ns, strings.TrimSpace(out), c.want)
		}
	}
}
