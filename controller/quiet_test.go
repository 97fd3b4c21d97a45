package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/controller/resolve"
	"github.com/weft-mesh/weft/test/kubetest"
)

// The quiet controller (#18): Node heartbeats and Lease renewals (what
// the lab's kubelet stand-in sends every 10 s), and the echo of our own
// status writes, cause no resolution. TestIntegrationQuiet asserts the
// count on a small cluster in ~10 s; BenchmarkIdleHeartbeats measures the
// controller's CPU over a minute of heartbeats at the 1k Services:
//
//	go test -run '^$' -bench IdleHeartbeats -benchtime 1x ./controller/

func TestIntegrationQuiet(t *testing.T) {
	sc := scale{nodes: 10, services: 100, endpoints: 2, routes: 2, namespaces: 5}
	q := startQuiet(t, sc)
	idle := q.idle(t, 2*time.Second, 5)
	t.Logf("%d heartbeat rounds: %+v", 5, idle.delta)
	if idle.delta.Resolves != 0 || idle.delta.ResolveEvents != 0 || idle.delta.StatusWrites != 0 {
		t.Fatalf("heartbeats caused work: %+v", idle.delta)
	}
	// The heartbeats did reach the controller (and were ignored there).
	if want := uint64(5 * sc.nodes); idle.delta.IgnoredUpdates < want {
		t.Fatalf("%d ignored updates, want at least %d (one per node and round)", idle.delta.IgnoredUpdates, want)
	}

	// An unrelated route change still lands.
	before := q.ctl.Stats()
	q.changeRoute(t)
	if after := q.ctl.Stats(); after.Resolves == before.Resolves || after.StatusWrites == before.StatusWrites {
		t.Fatalf("route change: before %+v, after %+v", before, after)
	}
}

// BenchmarkIdleHeartbeats: at 1k Services, 10k pods and endpoints, 2k
// routes and one heavy (regex) route, the controller's CPU while only
// heartbeats happen (every 10 s for 60 s, Nodes and Leases), the
// resolutions they caused (0), and how long an unrelated route change then
// takes to get its status written.
func BenchmarkIdleHeartbeats(b *testing.B) {
	q := startQuiet(b, benchScale)
	b.ResetTimer()
	var cpu, resolves, ignored, land float64
	for i := 0; i < b.N; i++ {
		idle := q.idle(b, 10*time.Second, 6)
		cpu += idle.cpu.Seconds() / idle.wall.Seconds()
		resolves += float64(idle.delta.Resolves)
		ignored += float64(idle.delta.IgnoredUpdates)
		land += q.changeRoute(b).Seconds()
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(100*cpu/n, "idle-cpu-%core")
	b.ReportMetric(resolves/n, "idle-resolves")
	b.ReportMetric(ignored/n, "ignored-updates")
	b.ReportMetric(1000*land/n, "route-change-ms")
}

type quiet struct {
	ctx     context.Context
	kube    kubernetes.Interface
	gw      gwclient.Interface
	ctl     *Controller
	in      resolve.Input
	kubelet *kubelet
	gen     int64
}

// startQuiet starts an apiserver, loads a cluster of size sc plus a heavy
// route into it, starts a controller (leader-elected, so it renews its own
// Lease too) and waits until it has written every route's status and gone
// idle.
func startQuiet(tb testing.TB, sc scale) *quiet {
	tb.Helper()
	kc := kubetest.Start(tb)
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	load := rest.CopyConfig(kc.Config)
	load.QPS, load.Burst = 2000, 2000
	kube, err := kubernetes.NewForConfig(load)
	if err != nil {
		tb.Fatal(err)
	}
	gw, err := gwclient.NewForConfig(load)
	if err != nil {
		tb.Fatal(err)
	}
	in := scaledInput(sc)
	in.HTTPRoutes = append(in.HTTPRoutes, heavyRoute(in.Services[0]))
	start := time.Now()
	loadCluster(tb, ctx, kube, gw, in)
	k := &kubelet{kube: kube}
	if err := k.register(ctx, in.Nodes); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("loaded %d nodes, %d services, %d pods, %d routes in %v", len(in.Nodes), len(in.Services), len(in.Pods), len(in.HTTPRoutes), time.Since(start).Round(time.Millisecond))

	start = time.Now()
	c, _, _ := startController(tb, ctx, Config{
		Kube: kc.Config, GRPCAddr: "127.0.0.1:0", HealthAddr: "-", Authenticator: tokens{},
		LeaderElect: true, ID: "quiet-0", QPS: 500, Burst: 1000, Logger: quietLogger(),
	})
	q := &quiet{ctx: ctx, kube: kube, gw: gw, ctl: c, in: in, kubelet: k}
	deadline := time.Now().Add(5 * time.Minute)
	for c.Stats().StatusWrites < uint64(len(in.HTTPRoutes)) {
		if time.Now().After(deadline) {
			tb.Fatalf("statuses not written: %+v", c.Stats())
		}
		time.Sleep(100 * time.Millisecond)
	}
	q.settle(tb)
	tb.Logf("controller settled in %v: %+v", time.Since(start).Round(time.Millisecond), c.Stats())
	return q
}

// settle waits until the controller's counters stay still for two seconds.
func (q *quiet) settle(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	last := q.ctl.Stats()
	still := time.Now()
	for time.Since(still) < 2*time.Second {
		if time.Now().After(deadline) {
			tb.Fatalf("controller does not settle: %+v", last)
		}
		time.Sleep(100 * time.Millisecond)
		st := q.ctl.Stats()
		if st.Resolves != last.Resolves || st.StatusWrites != last.StatusWrites || st.StatusChecks != last.StatusChecks {
			last, still = st, time.Now()
		}
	}
}

type idleRun struct {
	delta     Stats
	cpu, wall time.Duration
}

// idle sends a heartbeat round now and then every interval, rounds times
// in all, and returns what the controller did meanwhile and the CPU this
// process used (the controller, plus the heartbeats' client side).
func (q *quiet) idle(tb testing.TB, every time.Duration, rounds int) idleRun {
	tb.Helper()
	before := q.ctl.Stats()
	cpu0, wall0 := processCPU(tb), time.Now()
	for r := 0; r < rounds; r++ {
		if err := q.kubelet.beat(q.ctx); err != nil {
			tb.Fatal(err)
		}
		time.Sleep(time.Until(wall0.Add(time.Duration(r+1) * every)))
	}
	run := idleRun{cpu: processCPU(tb) - cpu0, wall: time.Since(wall0)}
	after := q.ctl.Stats()
	run.delta = Stats{
		Resolves: after.Resolves - before.Resolves, StatusWrites: after.StatusWrites - before.StatusWrites,
		StatusChecks: after.StatusChecks - before.StatusChecks, ResolveEvents: after.ResolveEvents - before.ResolveEvents,
		StatusUpdates: after.StatusUpdates - before.StatusUpdates, IgnoredUpdates: after.IgnoredUpdates - before.IgnoredUpdates,
	}
	return run
}

// changeRoute changes the weights of one ordinary route and returns how
// long until its status says the new generation was accepted.
func (q *quiet) changeRoute(tb testing.TB) time.Duration {
	tb.Helper()
	name := q.in.HTTPRoutes[1].Name
	routes := q.gw.GatewayV1().HTTPRoutes(q.in.HTTPRoutes[1].Namespace)
	r, err := routes.Get(q.ctx, name, metav1.GetOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	q.gen++
	r.Spec.Rules[0].BackendRefs[0].Weight = ptr(int32(100 + q.gen%900))
	start := time.Now()
	if r, err = routes.Update(q.ctx, r, metav1.UpdateOptions{}); err != nil {
		tb.Fatal(err)
	}
	for deadline := start.Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		got, err := routes.Get(q.ctx, name, metav1.GetOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		if p := ourParent(got); p != nil && condIs(p, "Accepted", metav1.ConditionTrue, r.Generation) {
			took := time.Since(start)
			q.settle(tb)
			return took
		}
		if time.Now().After(deadline) {
			tb.Fatalf("route change not accepted in a minute: %+v", got.Status.Parents)
		}
	}
}

// heavyRoute has many long regular-expression matches: what made every
// resolution expensive on the lab.
func heavyRoute(parent corev1.Service) *gwv1.HTTPRoute {
	r := splitRoute("heavy", 50, 50)
	r.Namespace = parent.Namespace
	r.Spec.ParentRefs[0].Name = gwv1.ObjectName(parent.Name)
	rule := r.Spec.Rules[0]
	rule.BackendRefs = rule.BackendRefs[:1]
	rule.BackendRefs[0].Name = gwv1.ObjectName(parent.Name)
	r.Spec.Rules = nil
	for i := 0; i < 16; i++ {
		rr := *rule.DeepCopy()
		for j := 0; j < 8; j++ {
			rr.Matches = append(rr.Matches, gwv1.HTTPRouteMatch{Path: &gwv1.HTTPPathMatch{
				Type:  ptr(gwv1.PathMatchRegularExpression),
				Value: ptr(fmt.Sprintf("/heavy/%d/%d(/[a-z0-9-]{1,40}){1,12}/(items|orders|users)/[0-9a-f]{8,64}", i, j)),
			}})
		}
		r.Spec.Rules = append(r.Spec.Rules, rr)
	}
	return r
}

// apiPod is the pod resolve.PodOf made p of, as far as p tells.
func apiPod(p *resolve.Pod) *corev1.Pod {
	out := &corev1.Pod{ObjectMeta: *p.ObjectMeta.DeepCopy(),
		Spec:   corev1.PodSpec{NodeName: p.NodeName, ServiceAccountName: p.ServiceAccountName, HostNetwork: p.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Phase, PodIP: p.PodIP}}
	for _, ip := range p.PodIPs {
		out.Status.PodIPs = append(out.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	for _, c := range p.Conditions {
		out.Status.Conditions = append(out.Status.Conditions, corev1.PodCondition{Type: c.Type, Status: c.Status})
	}
	return out
}

// loadCluster creates in's objects in the apiserver, many at a time. Pods
// get their status (phase, IP, Ready) as a kubelet would set it; Services
// get ClusterIPs allocated by the apiserver.
func loadCluster(tb testing.TB, ctx context.Context, kube kubernetes.Interface, gw gwclient.Interface, in resolve.Input) {
	tb.Helper()
	run := func(what string, n int, create func(i int) error) {
		tb.Helper()
		if err := parallel(n, 16, create); err != nil {
			tb.Fatalf("create %s: %v", what, err)
		}
	}
	co := metav1.CreateOptions{}
	run("namespaces", len(in.Namespaces)+1, func(i int) error {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: DefaultNamespace}}
		if i < len(in.Namespaces) {
			ns = &in.Namespaces[i]
		}
		_, err := kube.CoreV1().Namespaces().Create(ctx, ns, co)
		return err
	})
	run("services", len(in.Services), func(i int) error {
		s := in.Services[i].DeepCopy()
		s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
		_, err := kube.CoreV1().Services(s.Namespace).Create(ctx, s, co)
		return err
	})
	run("pods", len(in.Pods), func(i int) error {
		p := apiPod(in.Pods[i])
		st := p.Status
		p.UID, p.Status = "", corev1.PodStatus{}
		p.Spec.Containers = []corev1.Container{{Name: "app", Image: "ghcr.io/weft-mesh/echo:dev"}}
		got, err := kube.CoreV1().Pods(p.Namespace).Create(ctx, p, co)
		if err != nil {
			return err
		}
		got.Status = st
		_, err = kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, got, metav1.UpdateOptions{})
		return err
	})
	run("endpoint slices", len(in.EndpointSlices), func(i int) error {
		es := in.EndpointSlices[i]
		_, err := kube.DiscoveryV1().EndpointSlices(es.Namespace).Create(ctx, es, co)
		return err
	})
	run("routes", len(in.HTTPRoutes), func(i int) error {
		r := in.HTTPRoutes[i].DeepCopy()
		r.CreationTimestamp, r.Generation = metav1.Time{}, 0
		_, err := gw.GatewayV1().HTTPRoutes(r.Namespace).Create(ctx, r, co)
		return err
	})
}

// parallel runs f(0..n-1) on workers goroutines and returns the first error.
func parallel(n, workers int, f func(i int) error) error {
	next := make(chan int)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := 0; i < n; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// kubelet stands in for the lab's node runtime as the apiserver sees it:
// each round, every Node's Ready condition gets a new heartbeat time and
// its Lease in kube-node-lease is renewed.
type kubelet struct {
	kube   kubernetes.Interface
	nodes  []*corev1.Node
	leases []*coordinationv1.Lease
}

func (k *kubelet) register(ctx context.Context, nodes []corev1.Node) error {
	// The apiserver creates kube-node-lease itself.
	k.nodes = make([]*corev1.Node, len(nodes))
	k.leases = make([]*coordinationv1.Lease, len(nodes))
	return parallel(len(nodes), 16, func(i int) error {
		n, err := k.kube.CoreV1().Nodes().Create(ctx, &nodes[i], metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create node: %w", err)
		}
		n.Status = nodes[i].Status
		n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		if k.nodes[i], err = k.kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node status: %w", err)
		}
		now := metav1.NowMicro()
		k.leases[i], err = k.kube.CoordinationV1().Leases(corev1.NamespaceNodeLease).Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr(n.Name), LeaseDurationSeconds: ptr(int32(40)), RenewTime: &now},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create lease: %w", err)
		}
		return nil
	})
}

func (k *kubelet) beat(ctx context.Context) error {
	return parallel(len(k.nodes), 8, func(i int) error {
		n := k.nodes[i].DeepCopy()
		n.Status.Conditions[0].LastHeartbeatTime = metav1.Now()
		var err error
		if k.nodes[i], err = k.kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node heartbeat: %w", err)
		}
		l := k.leases[i].DeepCopy()
		now := metav1.NowMicro()
		l.Spec.RenewTime = &now
		if k.leases[i], err = k.kube.CoordinationV1().Leases(l.Namespace).Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("renew lease: %w", err)
		}
		return nil
	})
}

// processCPU is the user plus system CPU time this process has used.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func quietLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("WEFT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
