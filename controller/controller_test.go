package controller

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/resolve"
	"github.com/weft-mesh/weft/test/kubetest"
)

// tokens is a table authenticator (token -> node) for tests; production
// wires controller/agentauth (TokenReview).
type tokens map[string]string

func (t tokens) Authenticate(_ context.Context, token string) (string, error) {
	if n, ok := t[token]; ok {
		return n, nil
	}
	return "", errors.New("unknown token")
}

const appNS = "app"

func ptr[T any](v T) *T { return &v }

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fixture creates nodes, an enrolled namespace, a client pod and the
// backends echo-v1 and echo-v2 behind the parent Service echo.
func fixture(t *testing.T, ctx context.Context, kube kubernetes.Interface) {
	t.Helper()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "weft-system"}}, metav1.CreateOptions{}))
	must(kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: appNS, Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}}, metav1.CreateOptions{}))
	for i := 1; i <= 2; i++ {
		must(kube.CoreV1().Nodes().Create(ctx, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i)},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.30.0.%d", 10+i)}}},
		}, metav1.CreateOptions{}))
	}
	pod := func(name, sa, node, ip string) {
		p, err := kube.CoreV1().Pods(appNS).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: sa,
				Containers: []corev1.Container{{Name: "c", Image: "ghcr.io/weft-mesh/echo:dev"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		must(kube.CoreV1().Pods(appNS).UpdateStatus(ctx, p, metav1.UpdateOptions{}))
	}
	pod("client", "client", "node-1", "10.244.1.5")
	pod("echo-v1", "echo-v1", "node-1", "10.244.1.10")
	pod("echo-v2", "echo-v2", "node-2", "10.244.2.10")
	svc := func(name string) {
		must(kube.CoreV1().Services(appNS).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), AppProtocol: ptr("http")}}},
		}, metav1.CreateOptions{}))
	}
	svc("echo")
	svc("echo-v1")
	svc("echo-v2")
	slice := func(svcName, pod, node, ip string) {
		must(kube.DiscoveryV1().EndpointSlices(appNS).Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: svcName + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: svcName}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, NodeName: ptr(node),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: appNS, Name: pod}}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP)}},
		}, metav1.CreateOptions{}))
	}
	slice("echo-v1", "echo-v1", "node-1", "10.244.1.10")
	slice("echo-v2", "echo-v2", "node-2", "10.244.2.10")
}

func splitRoute(name string, w1, w2 int32) *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: name},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Name: "echo"}}},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{
				{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "echo-v1", Port: ptr(gwv1.PortNumber(80))}, Weight: ptr(w1)}},
				{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{Name: "echo-v2", Port: ptr(gwv1.PortNumber(80))}, Weight: ptr(w2)}},
			}}},
		},
	}
}

// eventually polls cond every 50 ms for up to 20 s.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, msg := cond()
		if ok {
			return
		}
		last = msg
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not reached in 20s; last: %s", what, last)
}

// ourParent returns the route's parent status written by Weft.
func ourParent(r *gwv1.HTTPRoute) *gwv1.RouteParentStatus {
	for i := range r.Status.Parents {
		if r.Status.Parents[i].ControllerName == resolve.ControllerName {
			return &r.Status.Parents[i]
		}
	}
	return nil
}

func condIs(p *gwv1.RouteParentStatus, typ string, st metav1.ConditionStatus, gen int64) bool {
	for _, c := range p.Conditions {
		if c.Type == typ {
			return c.Status == st && c.ObservedGeneration == gen
		}
	}
	return false
}

// waitAccepted waits until the route's Weft parent status says Accepted and
// ResolvedRefs for the route's current generation.
func waitAccepted(t *testing.T, ctx context.Context, gw gwclient.Interface, name string) *gwv1.HTTPRoute {
	t.Helper()
	var got *gwv1.HTTPRoute
	eventually(t, "route "+name+" accepted", func() (bool, string) {
		r, err := gw.GatewayV1().HTTPRoutes(appNS).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		p := ourParent(r)
		if p == nil {
			return false, fmt.Sprintf("no weft parent in %+v", r.Status.Parents)
		}
		got = r
		return condIs(p, "Accepted", metav1.ConditionTrue, r.Generation) && condIs(p, "ResolvedRefs", metav1.ConditionTrue, r.Generation), fmt.Sprintf("%+v", p.Conditions)
	})
	return got
}

type agent struct {
	stream grpc.BidiStreamingClient[weftv1.PolicyRequest, weftv1.PolicySnapshot]
	snaps  chan *weftv1.PolicySnapshot
	errs   chan error
}

// subscribe connects a test agent to the controller's real listener.
func subscribe(t *testing.T, ctx context.Context, addr, token, node string) *agent {
	t.Helper()
	return subscribeWith(t, ctx, addr, token, &weftv1.PolicyRequest{Node: node, Deltas: true})
}

// subscribeWith is subscribe with any first message (a Gateway's).
func subscribeWith(t *testing.T, ctx context.Context, addr, token string, first *weftv1.PolicyRequest) *agent {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	st, err := weftv1.NewPolicyClient(conn).Stream(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(first); err != nil {
		t.Fatal(err)
	}
	a := &agent{stream: st, snaps: make(chan *weftv1.PolicySnapshot, 100), errs: make(chan error, 1)}
	go func() {
		// a delta on the version before is applied, as an agent does, so
		// that every snapshot read carries the whole policy
		var cur *weftv1.PolicySnapshot
		for {
			s, err := st.Recv()
			if err != nil {
				a.errs <- err
				return
			}
			if s.Delta != nil && cur != nil && s.BaseVersion == cur.Version && s.ControllerNonce == cur.ControllerNonce {
				if p, err := weftv1.ApplyDelta(cur.Policy, s.Delta); err == nil {
					s.Policy = p
				}
			}
			if s.Policy != nil {
				cur = s
			}
			a.snaps <- s
		}
	}()
	return a
}

// next waits for a snapshot satisfying ok, skipping others.
func (a *agent) next(t *testing.T, what string, ok func(*weftv1.PolicySnapshot) bool) *weftv1.PolicySnapshot {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s := <-a.snaps:
			if ok(s) {
				return s
			}
		case err := <-a.errs:
			t.Fatalf("%s: stream ended: %v", what, err)
		case <-timeout:
			t.Fatalf("%s: no matching snapshot in 20s", what)
		}
	}
}

// weights returns the backend weights of the producer table of app/echo.
func weights(p *weftv1.NodePolicy) []uint32 {
	for _, sp := range p.GetServices() {
		if sp.Namespace != appNS || sp.Name != "echo" || sp.Producer == nil {
			continue
		}
		var w []uint32
		for _, r := range sp.Producer.Rules {
			for _, b := range r.Backends {
				w = append(w, b.Weight)
			}
		}
		return w
	}
	return nil
}

func hasWeights(w ...uint32) func(*weftv1.PolicySnapshot) bool {
	return func(s *weftv1.PolicySnapshot) bool { return fmt.Sprint(weights(s.Policy)) == fmt.Sprint(w) }
}

func startController(t testing.TB, ctx context.Context, cfg Config) (*Controller, context.CancelFunc, chan error) {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c, cancel, done
}

// startFixture starts an apiserver with the test fixture (ending with the
// test) and returns it, a context ending with the test and a Gateway API
// client.
func startFixture(t *testing.T) (*kubetest.Cluster, context.Context, gwclient.Interface) {
	t.Helper()
	kc := kubetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	gw, err := gwclient.NewForConfig(kc.Config)
	if err != nil {
		t.Fatal(err)
	}
	fixture(t, ctx, kc.Client)
	return kc, ctx, gw
}

func TestIntegrationController(t *testing.T) {
	kc, ctx, gw := startFixture(t)

	// A route that another controller already has an opinion about.
	r, err := gw.GatewayV1().HTTPRoutes(appNS).Create(ctx, splitRoute("split", 70, 30), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.Status.Parents = []gwv1.RouteParentStatus{{ParentRef: gwv1.ParentReference{Name: "some-gateway"}, ControllerName: "example.com/other",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: "theirs", LastTransitionTime: metav1.Now()}}}}
	if _, err := gw.GatewayV1().HTTPRoutes(appNS).UpdateStatus(ctx, r, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("StatusPushAckNack", func(t *testing.T) {
		c, stop, done := startController(t, ctx, Config{
			Kube: kc.Config, GRPCAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
			Authenticator: tokens{"tok-1": "node-1", "tok-2": "node-2"}, Logger: testLogger(t),
		})

		got := waitAccepted(t, ctx, gw, "split")
		if len(got.Status.Parents) != 2 || got.Status.Parents[0].ControllerName != "example.com/other" {
			t.Fatalf("the other controller's entry did not survive: %+v", got.Status.Parents)
		}
		eventually(t, "readyz", func() (bool, string) {
			resp, err := http.Get("http://" + c.HealthAddr().String() + "/readyz")
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})

		// An agent of node-1 gets its node's policy with the 70/30 split.
		a := subscribe(t, ctx, c.GRPCAddr().String(), "tok-1", "node-1")
		s1 := a.next(t, "first snapshot", hasWeights(70, 30))
		if s1.Policy.Node != "node-1" || s1.ControllerNonce == "" {
			t.Fatalf("snapshot %v", s1)
		}
		var client bool
		for _, w := range s1.Policy.Workloads {
			client = client || (w.Name == "client" && w.Identity == "spiffe://cluster.local/ns/app/sa/client")
		}
		if !client {
			t.Fatalf("node-1 workloads lack the client pod: %v", s1.Policy.Workloads)
		}
		if err := a.stream.Send(&weftv1.PolicyRequest{Node: "node-1", Version: s1.Version}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "ACK recorded", func() (bool, string) {
			for _, n := range c.Nodes() {
				if n.Node == "node-1" {
					return n.AckedVersion == s1.Version, fmt.Sprintf("%+v", n)
				}
			}
			return false, "node-1 unknown"
		})

		// A token of another node cannot subscribe to node-1.
		bad := subscribe(t, ctx, c.GRPCAddr().String(), "tok-2", "node-1")
		select {
		case err := <-bad.errs:
			if err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
				t.Fatalf("cross-node subscribe: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("cross-node subscribe not refused")
		}

		// The statuses have settled: metadata resolution does not read
		// (an annotation here) is seen but resolves nothing and writes
		// nothing.
		eventually(t, "status writes settle", func() (bool, string) {
			w := c.Stats().StatusWrites
			time.Sleep(500 * time.Millisecond)
			return c.Stats().StatusWrites == w, fmt.Sprint(w)
		})
		before := c.Stats()
		writes := before.StatusWrites
		cur, _ := gw.GatewayV1().HTTPRoutes(appNS).Get(ctx, "split", metav1.GetOptions{})
		for i := 0; i < 3; i++ {
			cur.Annotations = map[string]string{"touch": fmt.Sprint(i)}
			if cur, err = gw.GatewayV1().HTTPRoutes(appNS).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		eventually(t, "touches seen", func() (bool, string) {
			return c.Stats().IgnoredUpdates >= before.IgnoredUpdates+3, fmt.Sprintf("%+v", c.Stats())
		})
		time.Sleep(time.Second)
		if r := c.Stats().Resolves; r != before.Resolves {
			t.Fatalf("metadata-only changes caused %d resolutions", r-before.Resolves)
		}
		if w := c.Stats().StatusWrites; w != writes {
			t.Fatalf("metadata-only changes caused %d status writes", w-writes)
		}
		after, _ := gw.GatewayV1().HTTPRoutes(appNS).Get(ctx, "split", metav1.GetOptions{})
		if after.ResourceVersion != cur.ResourceVersion {
			t.Fatalf("route rewritten without a change (resourceVersion %s -> %s)", cur.ResourceVersion, after.ResourceVersion)
		}

		// Someone else overwrites our conditions: they are put back from
		// the last resolution, without resolving (level-based status).
		for i := range ourParent(after).Conditions {
			ourParent(after).Conditions[i].Status = metav1.ConditionFalse
			ourParent(after).Conditions[i].Message = "overwritten"
		}
		if _, err := gw.GatewayV1().HTTPRoutes(appNS).UpdateStatus(ctx, after, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		cur = waitAccepted(t, ctx, gw, "split")
		eventually(t, "status restored by one write", func() (bool, string) {
			return c.Stats().StatusWrites == writes+1, fmt.Sprintf("%+v", c.Stats())
		})
		if st := c.Stats(); st.Resolves != before.Resolves || st.StatusChecks == before.StatusChecks {
			t.Fatalf("status restore: before %+v, after %+v", before, st)
		}
		writes++

		// Weight change: a new version arrives; one status write (new
		// observedGeneration), then quiet.
		cur.Spec = splitRoute("split", 50, 50).Spec
		if _, err := gw.GatewayV1().HTTPRoutes(appNS).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		s2 := a.next(t, "snapshot after weight change", hasWeights(50, 50))
		if s2.Version <= s1.Version || s2.ControllerNonce != s1.ControllerNonce {
			t.Fatalf("version %d after %d", s2.Version, s1.Version)
		}
		waitAccepted(t, ctx, gw, "split")
		time.Sleep(time.Second)
		if w := c.Stats().StatusWrites - writes; w != 1 {
			t.Fatalf("a generation change caused %d status writes, want 1", w)
		}

		// NACK: recorded with the reason; the stream keeps serving.
		if err := a.stream.Send(&weftv1.PolicyRequest{Node: "node-1", Version: s2.Version, Error: "cannot apply: test"}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "NACK recorded", func() (bool, string) {
			for _, n := range c.Nodes() {
				if n.Node == "node-1" {
					return n.NackedVersion == s2.Version && n.NackReason == "cannot apply: test" && n.AckedVersion == s1.Version, fmt.Sprintf("%+v", n)
				}
			}
			return false, "node-1 unknown"
		})
		cur, _ = gw.GatewayV1().HTTPRoutes(appNS).Get(ctx, "split", metav1.GetOptions{})
		cur.Spec = splitRoute("split", 90, 10).Spec
		if _, err := gw.GatewayV1().HTTPRoutes(appNS).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if s3 := a.next(t, "snapshot after NACK", hasWeights(90, 10)); s3.Version <= s2.Version {
			t.Fatalf("version %d after %d", s3.Version, s2.Version)
		}

		// The metrics say the same: one agent connected, one ACK and one
		// NACK answered, the versions of node-1, the leader.
		eventually(t, "metrics", func() (bool, string) {
			resp, err := http.Get("http://" + c.MetricsAddr().String() + "/metrics")
			if err != nil {
				return false, err.Error()
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			for _, want := range []string{
				"weft_controller_connected_agents 1",
				"weft_controller_leader 1",
				"weft_controller_policy_nacks_total 1",
				`weft_controller_push_ack_duration_seconds_count{result="ack"} 1`,
				`weft_controller_push_ack_duration_seconds_count{result="nack"} 1`,
				fmt.Sprintf(`weft_controller_node_policy_version{node="node-1",state="acked"} %d`, s1.Version),
			} {
				if !slices.Contains(strings.Split(string(body), "\n"), want) {
					return false, "no line " + want
				}
			}
			return strings.Contains(string(body), "weft_controller_resolve_duration_seconds_count "), "no resolve duration"
		})

		// A route to a missing backend gets ResolvedRefs=False.
		missing := splitRoute("missing", 1, 1)
		missing.Spec.Rules[0].BackendRefs[1].Name = "nope"
		if _, err := gw.GatewayV1().HTTPRoutes(appNS).Create(ctx, missing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "BackendNotFound", func() (bool, string) {
			r, err := gw.GatewayV1().HTTPRoutes(appNS).Get(ctx, "missing", metav1.GetOptions{})
			if err != nil || ourParent(r) == nil {
				return false, fmt.Sprint(err)
			}
			for _, c := range ourParent(r).Conditions {
				if c.Type == "ResolvedRefs" {
					return c.Status == metav1.ConditionFalse && c.Reason == "BackendNotFound", fmt.Sprintf("%+v", c)
				}
			}
			return false, "no ResolvedRefs"
		})
		stop()
		if err := <-done; err != nil {
			t.Fatalf("Run returned %v", err)
		}
		done <- nil // for the cleanup
	})

	t.Run("LeaderFailover", func(t *testing.T) {
		cfg := func(id string) Config {
			return Config{
				Kube: kc.Config, GRPCAddr: "127.0.0.1:0", HealthAddr: "-", LeaderElect: true, ID: id,
				// Generous renewal times so a loaded CI machine does not
				// lose the lease by accident; stopping the leader releases
				// it at once (ReleaseOnCancel).
				LeaseName: "weft-failover", LeaseDuration: 8 * time.Second, RenewDeadline: 6 * time.Second, RetryPeriod: 250 * time.Millisecond,
				Authenticator: tokens{"tok-1": "node-1"}, Logger: testLogger(t),
			}
		}
		a, stopA, doneA := startController(t, ctx, cfg("replica-a"))
		eventually(t, "replica-a leads", func() (bool, string) { return a.IsLeader(), "" })
		b, _, _ := startController(t, ctx, cfg("replica-b"))

		if _, err := gw.GatewayV1().HTTPRoutes(appNS).Create(ctx, splitRoute("r-a", 1, 1), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitAccepted(t, ctx, gw, "r-a")
		if b.IsLeader() || b.Stats().StatusWrites != 0 {
			t.Fatalf("follower wrote statuses: leader=%v writes=%d", b.IsLeader(), b.Stats().StatusWrites)
		}
		// Every replica serves agents, leader or not.
		ag := subscribe(t, ctx, b.GRPCAddr().String(), "tok-1", "node-1")
		ag.next(t, "policy from the follower", func(s *weftv1.PolicySnapshot) bool {
			return s.Policy.GetNode() == "node-1" && len(weights(s.Policy)) > 0
		})

		stopA()
		<-doneA
		doneA <- nil
		eventually(t, "replica-b takes over", func() (bool, string) { return b.IsLeader(), "" })
		if _, err := gw.GatewayV1().HTTPRoutes(appNS).Create(ctx, splitRoute("r-b", 1, 1), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitAccepted(t, ctx, gw, "r-b")
		// The API server holds the status before the write call returns
		// to the controller and is counted, so the count can trail what
		// the route shows by a moment. Only replica-b runs now: any write
		// at all is the new leader's.
		eventually(t, "new leader wrote the status", func() (bool, string) {
			return b.Stats().StatusWrites > 0, fmt.Sprint(b.Stats())
		})
	})
}

// TestIntegrationTrustAnchorsReachEveryNode: the CA's bundle reaches every
// node, a node without enrolled pods too, when the controller starts before
// the CA has one and when it rotates; neither changes anything else, so the
// rounds they start reuse the last resolution. Filling the anchors into
// the reused policies in place hid the change from the push server.
func TestIntegrationTrustAnchorsReachEveryNode(t *testing.T) {
	kc, ctx, _ := startFixture(t)
	if _, err := kc.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-3"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.30.0.13"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var bundle atomic.Pointer[[][]byte]
	bundle.Store(&[][]byte{})
	c, _, _ := startController(t, ctx, Config{Kube: kc.Config, GRPCAddr: "127.0.0.1:0", HealthAddr: "-",
		TrustAnchors:  func() [][]byte { return *bundle.Load() },
		Authenticator: tokens{"tok-1": "node-1", "tok-3": "node-3"}, Logger: testLogger(t)})
	agents := map[string]*agent{
		"node-1": subscribe(t, ctx, c.GRPCAddr().String(), "tok-1", "node-1"),
		"node-3": subscribe(t, ctx, c.GRPCAddr().String(), "tok-3", "node-3"),
	}
	for node, a := range agents {
		s := a.next(t, node+": first snapshot", func(s *weftv1.PolicySnapshot) bool { return s.Policy != nil })
		if err := a.stream.Send(&weftv1.PolicyRequest{Node: node, Version: s.Version, Deltas: true}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ca := range []string{"first CA", "rotated CA"} {
		crt, _ := selfSigned(t, ca)
		block, _ := pem.Decode(crt)
		bundle.Store(&[][]byte{block.Bytes})
		c.Kick()
		for node, a := range agents {
			s := a.next(t, node+": "+ca, func(s *weftv1.PolicySnapshot) bool {
				anchors := s.Policy.GetTrustAnchors()
				return len(anchors) == 1 && bytes.Equal(anchors[0], block.Bytes)
			})
			if err := a.stream.Send(&weftv1.PolicyRequest{Node: node, Version: s.Version, Deltas: true}); err != nil {
				t.Fatal(err)
			}
		}
	}
}
