package controller

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/push"
	"github.com/weft-mesh/weft/controller/push/pushtest"
	"github.com/weft-mesh/weft/controller/resolve"
)

// Scale of BenchmarkRouteChange (the target size). The number of
// changes is 100, or WEFT_BENCH_CHANGES.
const (
	benchNodes      = 50
	benchServices   = 1000
	benchEndpoints  = 10 // per Service: 10k in all
	benchRoutes     = 2  // per Service: 2k in all
	benchNamespaces = 10
)

// scale is the size of a generated cluster.
type scale struct {
	nodes, services, endpoints, routes, namespaces int
}

// benchScale is the target size.
var benchScale = scale{nodes: benchNodes, services: benchServices, endpoints: benchEndpoints, routes: benchRoutes, namespaces: benchNamespaces}

// benchInput builds a cluster of the benchmark's size in memory.
func benchInput() resolve.Input { return scaledInput(benchScale) }

// scaledInput builds a cluster in memory: nodes, enrolled namespaces,
// Services each with one EndpointSlice of ready pods spread over the
// nodes, and weighted routes on every Service.
func scaledInput(sc scale) resolve.Input {
	benchNodes, benchServices, benchEndpoints, benchRoutes, benchNamespaces := sc.nodes, sc.services, sc.endpoints, sc.routes, sc.namespaces
	var in resolve.Input
	for n := 0; n < benchNodes; n++ {
		in.Nodes = append(in.Nodes, corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", n)},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.30.%d.%d", n/200, 10+n%200)}}},
		})
	}
	for i := 0; i < benchNamespaces; i++ {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns-%d", i),
			Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}})
	}
	created := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	podN := 0
	for s := 0; s < benchServices; s++ {
		ns := fmt.Sprintf("ns-%d", s%benchNamespaces)
		name := fmt.Sprintf("svc-%d", s)
		in.Services = append(in.Services, corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{ClusterIP: fmt.Sprintf("10.96.%d.%d", s/250, 1+s%250), ClusterIPs: []string{fmt.Sprintf("10.96.%d.%d", s/250, 1+s%250)},
				Selector: map[string]string{"app": name},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), AppProtocol: ptr("http")}}},
		})
		slice := discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP)}},
		}
		for e := 0; e < benchEndpoints; e++ {
			node := fmt.Sprintf("node-%d", podN%benchNodes)
			ip := fmt.Sprintf("10.%d.%d.%d", 100+podN/65536, podN/256%256, podN%256)
			pod := fmt.Sprintf("%s-%d", name, e)
			in.Pods = append(in.Pods, resolve.PodOf(&corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pod, UID: types.UID(fmt.Sprint("uid-", podN)), Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: name},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
			}))
			slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr(node),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}})
			podN++
		}
		in.EndpointSlices = append(in.EndpointSlices, &slice)
	}
	for s := 0; s < benchServices; s++ {
		ns := fmt.Sprintf("ns-%d", s%benchNamespaces)
		other := fmt.Sprintf("svc-%d", (s+benchNamespaces)%benchServices) // same namespace
		for r := 0; r < benchRoutes; r++ {
			route := splitRoute(fmt.Sprintf("route-%d-%d", s, r), 80, 20)
			route.Namespace = ns
			route.CreationTimestamp = created
			route.Generation = 1
			route.Spec.ParentRefs[0].Name = gwv1.ObjectName(fmt.Sprintf("svc-%d", s))
			route.Spec.Rules[0].BackendRefs[0].Name = gwv1.ObjectName(fmt.Sprintf("svc-%d", s))
			route.Spec.Rules[0].BackendRefs[1].Name = gwv1.ObjectName(other)
			route.Spec.Rules[0].Matches = []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr(fmt.Sprintf("/r%d", r))}}}
			in.HTTPRoutes = append(in.HTTPRoutes, route)
		}
	}
	return in
}

// BenchmarkRouteChange measures, at 1k Services, 10k endpoints, 2k routes
// and 50 agents subscribed over loopback gRPC, how long a route change
// takes to reach every agent (full resolution + diff + push + receive; add
// the debounce window for the controller's end-to-end figure), and the heap
// the resolved state and push server hold. Run:
//
//	go test -run '^$' -bench RouteChange -benchtime 1x ./controller/
func BenchmarkRouteChange(b *testing.B) {
	benchChanges := 100
	if v, err := strconv.Atoi(os.Getenv("WEFT_BENCH_CHANGES")); err == nil && v > 0 {
		benchChanges = v
	}
	in := benchInput()

	start := time.Now()
	out := resolve.Resolve(in)
	fullResolve := time.Since(start)
	if len(out.Nodes) != benchNodes {
		b.Fatalf("%d node policies", len(out.Nodes))
	}
	size := proto.Size(out.Nodes["node-0"])

	auth := tokens{}
	for n := 0; n < benchNodes; n++ {
		auth[fmt.Sprintf("tok-%d", n)] = fmt.Sprintf("node-%d", n)
	}
	srv, err := push.New(push.Config{Authenticator: auth, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer(push.ServerCodec())
	weftv1.RegisterPolicyServer(gs, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	srv.Update(out.Nodes)

	// Agents: each records the newest version it received; a round ends
	// when every node has a version above the round's threshold.
	var mu sync.Mutex
	latest := make([]uint64, benchNodes)
	var threshold uint64
	var doneAt time.Time
	above := 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for n := 0; n < benchNodes; n++ {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.ForceCodecV2(pushtest.HeaderCodec{})))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		st, err := weftv1.NewPolicyClient(conn).Stream(metadata.AppendToOutgoingContext(ctx, "authorization", fmt.Sprintf("Bearer tok-%d", n)))
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Send(&weftv1.PolicyRequest{Node: fmt.Sprintf("node-%d", n)}); err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var s pushtest.Header // the head only: the agents share the controller's CPU
				if err := st.RecvMsg(&s); err != nil {
					return
				}
				now := time.Now()
				mu.Lock()
				if latest[n] <= threshold && s.Version > threshold {
					above++
					if above == benchNodes {
						doneAt = now
					}
				}
				latest[n] = s.Version
				mu.Unlock()
				_ = st.Send(&weftv1.PolicyRequest{Version: s.Version})
			}
		}()
	}
	// startRound sets the threshold to the newest version so far.
	startRound := func() {
		mu.Lock()
		defer mu.Unlock()
		threshold = 0
		for _, ns := range srv.Nodes() {
			threshold = max(threshold, ns.Version)
		}
		above = 0
		doneAt = time.Time{}
		for _, v := range latest {
			if v > threshold {
				above++
			}
		}
	}
	waitRound := func() time.Time {
		for {
			mu.Lock()
			at := doneAt
			mu.Unlock()
			if !at.IsZero() {
				return at
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
	// Every agent has its first snapshot.
	for {
		mu.Lock()
		got := 0
		for _, v := range latest {
			if v > 0 {
				got++
			}
		}
		mu.Unlock()
		if got == benchNodes {
			break
		}
		time.Sleep(time.Millisecond)
	}

	b.ResetTimer()
	var lat []time.Duration
	var resolveTimes []time.Duration
	for i := 0; i < b.N; i++ {
		for c := 0; c < benchChanges; c++ {
			w := int32(100 + (i*benchChanges+c)%900) // never the initial 80
			in.HTTPRoutes[c*7%len(in.HTTPRoutes)].Spec.Rules[0].BackendRefs[0].Weight = &w
			in.HTTPRoutes[c*7%len(in.HTTPRoutes)].Generation++
			startRound()
			t0 := time.Now()
			out = resolve.Resolve(in)
			resolveTimes = append(resolveTimes, time.Since(t0))
			if changed := srv.Update(out.Nodes); changed != benchNodes {
				b.Fatalf("change %d updated %d nodes", c, changed)
			}
			lat = append(lat, waitRound().Sub(t0))
		}
	}
	b.StopTimer()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	slices.Sort(lat)
	slices.Sort(resolveTimes)
	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(lat, 0.5), "p50-ms")
	b.ReportMetric(pct(lat, 0.99), "p99-ms")
	b.ReportMetric(pct(resolveTimes, 0.5), "resolve-p50-ms")
	b.ReportMetric(float64(fullResolve.Microseconds())/1000, "first-resolve-ms")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-inuse-MiB")
	b.ReportMetric(float64(size)/(1<<10), "policy-KiB")
	runtime.KeepAlive(in)
	runtime.KeepAlive(out)
	cancel()
	gs.Stop()
	wg.Wait()
}
