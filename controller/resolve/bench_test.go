package resolve

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// benchConfig is the size of a generated cluster.
type benchConfig struct {
	Namespaces, Nodes, Services, PodsPerService, HTTPRoutes, GRPCRoutes, ConsumerRoutes int
}

// largeCluster is the benchmark size: 1k Services, 10k endpoints,
// 2k routes, 50 nodes.
var largeCluster = benchConfig{Namespaces: 20, Nodes: 50, Services: 1000, PodsPerService: 10, HTTPRoutes: 1500, GRPCRoutes: 300, ConsumerRoutes: 200}

// genCluster builds a cluster: every Service has an http (80 -> 8080) and a
// grpc (7070) port and its own pods spread over the nodes; HTTPRoutes have
// four rules (prefix, header, exact, regex) split across two Services;
// GRPCRoutes have two rules; consumer routes come from the next namespace.
func genCluster(c benchConfig) Input {
	var in Input
	for i := 0; i < c.Namespaces; i++ {
		in.Namespaces = append(in.Namespaces, corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("ns-%d", i), Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}})
	}
	for i := 0; i < c.Nodes; i++ {
		in.Nodes = append(in.Nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%d", i)},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.30.%d.%d", i/250, i%250+1)}}}})
	}
	svcName := func(i int) (string, string) { return fmt.Sprintf("ns-%d", i%c.Namespaces), fmt.Sprintf("svc-%d", i) }
	http, grpc := "http", "grpc"
	h2c := "kubernetes.io/h2c"
	pod := 0
	for i := 0; i < c.Services; i++ {
		ns, name := svcName(i)
		in.Services = append(in.Services, corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{
			ClusterIP: fmt.Sprintf("10.96.%d.%d", i/250, i%250+1),
			Ports:     []corev1.ServicePort{{Name: http, Port: 80, AppProtocol: &http}, {Name: grpc, Port: 7070, AppProtocol: &h2c}},
		}})
		es := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-abcde", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &http, Port: ptr(int32(8080))}, {Name: &grpc, Port: ptr(int32(7070))}}}
		for j := 0; j < c.PodsPerService; j++ {
			node := fmt.Sprintf("node-%d", pod%c.Nodes)
			ip := fmt.Sprintf("10.%d.%d.%d", 128+pod/65536, pod/256%256, pod%256)
			pn := fmt.Sprintf("%s-%d", name, j)
			in.Pods = append(in.Pods, &Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: pn, UID: "u"},
				NodeName: node, ServiceAccountName: name, Phase: corev1.PodRunning, PodIP: ip})
			es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &node,
				Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pn}})
			pod++
		}
		in.EndpointSlices = append(in.EndpointSlices, &es)
	}
	parent := func(i int, port int32, consumer bool) (string, []gwv1.ParentReference) {
		ns, name := svcName(i % c.Services)
		rns := ns
		if consumer {
			rns = fmt.Sprintf("ns-%d", (i+1)%c.Namespaces)
		}
		pns := gwv1.Namespace(ns)
		return rns, []gwv1.ParentReference{{Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Namespace: &pns, Name: gwv1.ObjectName(name), Port: &port}}
	}
	backend := func(i int, port int32, w int32) gwv1.HTTPBackendRef {
		ns, name := svcName(i % c.Services)
		bns := gwv1.Namespace(ns)
		return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{Weight: &w, BackendObjectReference: gwv1.BackendObjectReference{Name: gwv1.ObjectName(name), Namespace: &bns, Port: &port}}}
	}
	exact, prefix, regex := gwv1.PathMatchExact, gwv1.PathMatchPathPrefix, gwv1.PathMatchRegularExpression
	for i := 0; i < c.HTTPRoutes+c.ConsumerRoutes; i++ {
		consumer := i >= c.HTTPRoutes
		ns, refs := parent(i, 80, consumer)
		hr := gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("route-%d", i), Generation: 1,
			CreationTimestamp: metav1.NewTime(time.Unix(int64(i), 0))}}
		hr.Spec.ParentRefs = refs
		hr.Spec.Rules = []gwv1.HTTPRouteRule{
			{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &prefix, Value: ptr(fmt.Sprintf("/api/v%d", i%5))}}},
				BackendRefs: []gwv1.HTTPBackendRef{backend(i, 80, 90), backend(i+1, 80, 10)}},
			{Matches: []gwv1.HTTPRouteMatch{{Headers: []gwv1.HTTPHeaderMatch{{Name: "x-canary", Value: "true"}}}},
				Filters:     []gwv1.HTTPRouteFilter{{Type: gwv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: "x-route", Value: "canary"}}}}},
				BackendRefs: []gwv1.HTTPBackendRef{backend(i+2, 80, 1)}},
			{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &exact, Value: ptr("/healthz")}}},
				BackendRefs: []gwv1.HTTPBackendRef{backend(i, 80, 1)}, Timeouts: &gwv1.HTTPRouteTimeouts{Request: ptr(gwv1.Duration("2s"))}},
			{Matches: []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: &regex, Value: ptr("/items/[0-9]+")}}},
				BackendRefs: []gwv1.HTTPBackendRef{backend(i, 80, 1)}, Retry: &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{503}, Attempts: ptr(2)}},
		}
		in.HTTPRoutes = append(in.HTTPRoutes, &hr)
	}
	for i := 0; i < c.GRPCRoutes; i++ {
		ns, refs := parent(i, 7070, false)
		gr := gwv1.GRPCRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("grpc-%d", i), Generation: 1}}
		gr.Spec.ParentRefs = refs
		b := func(j int, w int32) gwv1.GRPCBackendRef {
			return gwv1.GRPCBackendRef{BackendRef: backend(j, 7070, w).BackendRef}
		}
		gr.Spec.Rules = []gwv1.GRPCRouteRule{
			{Matches: []gwv1.GRPCRouteMatch{{Method: &gwv1.GRPCMethodMatch{Service: ptr("echo.Echo"), Method: ptr("Ping")}}}, BackendRefs: []gwv1.GRPCBackendRef{b(i, 70), b(i+3, 30)}},
			{BackendRefs: []gwv1.GRPCBackendRef{b(i, 1)}},
		}
		in.GRPCRoutes = append(in.GRPCRoutes, &gr)
	}
	return in
}

// BenchmarkResolveLarge resolves the benchmark cluster (1k
// Services, 10k endpoints, 2k routes, 50 nodes) end to end.
func BenchmarkResolveLarge(b *testing.B) {
	in := genCluster(largeCluster)
	var out Output
	rounds(b, func(int) { out = Resolve(in) })
	p := out.Nodes["node-0"]
	eps := 0
	for _, c := range p.Clusters {
		eps += len(c.Endpoints)
	}
	b.ReportMetric(float64(len(p.Services)), "serviceports")
	b.ReportMetric(float64(len(p.Clusters)), "clusters")
	b.ReportMetric(float64(eps), "endpoints")
	b.ReportMetric(float64(len(out.Statuses)), "statuses")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heapMiB(in+out)")
	runtime.KeepAlive(in)
	runtime.KeepAlive(out)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestGenClusterShape checks the benchmark cluster has the size it claims
// and resolves cleanly (every route accepted, the proxy accepts the policy).
func TestGenClusterShape(t *testing.T) {
	c := largeCluster
	if testing.Short() {
		c = benchConfig{Namespaces: 3, Nodes: 4, Services: 20, PodsPerService: 2, HTTPRoutes: 10, GRPCRoutes: 4, ConsumerRoutes: 3}
	}
	in := genCluster(c)
	if len(in.Services) != c.Services || len(in.Pods) != c.Services*c.PodsPerService || len(in.HTTPRoutes)+len(in.GRPCRoutes) != c.HTTPRoutes+c.ConsumerRoutes+c.GRPCRoutes {
		t.Fatalf("generated %d services, %d pods, %d routes", len(in.Services), len(in.Pods), len(in.HTTPRoutes)+len(in.GRPCRoutes))
	}
	out := Resolve(in)
	if len(out.Nodes) != c.Nodes {
		t.Fatalf("%d node policies, want %d", len(out.Nodes), c.Nodes)
	}
	for _, s := range out.Statuses {
		for _, p := range s.Parents {
			for _, cond := range p.Conditions {
				if cond.Status != metav1.ConditionTrue {
					t.Fatalf("%s %s/%s: %s=%s %s: %s", s.Kind, s.Namespace, s.Name, cond.Type, cond.Status, cond.Reason, cond.Message)
				}
			}
		}
	}
	p := out.Nodes["node-0"]
	if len(p.Services) != 2*c.Services {
		t.Fatalf("%d service ports, want %d", len(p.Services), 2*c.Services)
	}
	checkAgentAccepts(t, Output{Nodes: map[string]*weftv1.NodePolicy{"node-0": p}})
}

// scaleCluster is issue #17's control-plane scale (make bench-scale): 10k
// Services, 100k endpoints, 20k routes, 1,000 nodes.
var scaleCluster = benchConfig{Namespaces: 100, Nodes: 1000, Services: 10000, PodsPerService: 10, HTTPRoutes: 16000, GRPCRoutes: 2000, ConsumerRoutes: 2000}

// BenchmarkResolveRouteChange is the resolution of a round after one
// route's weight changed at issue #17's scale, clusters and workloads
// reused as the controller reuses them when only routes changed:
// "compile-all" compiles every route, "reuse-compiled" takes the 19,999
// unchanged ones from the previous resolution (Reuse.RoutesValid) and
// "incremental" attaches again only the port the route claims
// (Reuse.OnlyRoutes, as the controller resolves it).
func BenchmarkResolveRouteChange(b *testing.B) {
	in := genCluster(scaleCluster)
	versionRoutes(&in, func(int) string { return "1" })
	// listed as the source lists them: sorted by namespace and name
	slices.SortFunc(in.HTTPRoutes, func(a, b *gwv1.HTTPRoute) int { return compareMeta(&a.ObjectMeta, &b.ObjectMeta) })
	slices.SortFunc(in.GRPCRoutes, func(a, b *gwv1.GRPCRoute) int { return compareMeta(&a.ObjectMeta, &b.ObjectMeta) })
	prev := Resolve(in)
	for _, bc := range []struct {
		name         string
		routes, only bool
	}{{"compile-all", false, false}, {"reuse-compiled", true, false}, {"incremental", true, true}} {
		b.Run(bc.name, func(b *testing.B) {
			w := int32(90)
			rounds(b, func(i int) {
				w = 180 - w // 90, 10, 90, ...: a change every round
				in.HTTPRoutes[7].Spec.Rules[0].BackendRefs[0].Weight = &w
				in.HTTPRoutes[7].ResourceVersion = strconv.Itoa(i + 1)
				in.Reuse = ReuseOf(prev)
				in.Reuse.WorkloadsValid, in.Reuse.RoutesValid, in.Reuse.OnlyRoutes = true, bc.routes, bc.only
				prev = Resolve(in)
			})
		})
	}
}

// BenchmarkResolvePodChange: one pod changes each round (a rolling update
// replaces pods one by one), at the scale of issue #17. compile-all is the
// round without reuse; reuse-routes takes the compiled routes over
// (ReusePods), building workloads and clusters again; incremental builds
// only the clusters that name the pod and the workloads of its node;
// only-pods (Reuse.OnlyPods, as the controller resolves it) also takes
// the routes' attachment and the Service ports from the last round.
func BenchmarkResolvePodChange(b *testing.B) {
	plain := genCluster(scaleCluster)
	versionRoutes(&plain, func(int) string { return "1" })
	authz := withAuthz(plain)
	for _, bc := range []struct {
		name                      string
		in                        Input
		routes, incremental, only bool
	}{
		{"compile-all", plain, false, false, false}, {"reuse-routes", plain, true, false, false},
		{"incremental", plain, true, true, false}, {"only-pods", plain, true, true, true},
		{"authz/compile-all", authz, false, false, false}, {"authz/only-pods", authz, true, true, true},
	} {
		in := bc.in
		prev := Resolve(in)
		b.Run(bc.name, func(b *testing.B) {
			rounds(b, func(i int) {
				k := (i * 7919) % len(in.Pods)
				was := in.Pods[k]
				p := *was
				p.Labels = maps.Clone(p.Labels)
				if p.Labels == nil {
					p.Labels = map[string]string{}
				}
				p.Labels["pod-template-hash"] = strconv.Itoa(i)
				in.Pods[k] = &p
				in.Reuse = nil
				switch {
				case bc.routes && bc.incremental:
					in.Reuse = ReusePods(ReuseOf(prev), []*Pod{was, &p}, nil)
					in.Reuse.OnlyPods = bc.only
				case bc.routes:
					in.Reuse = ReusePods(ReuseOf(prev), nil, nil)
				}
				prev = Resolve(in)
			})
		})
	}
}

// withAuthz is in with an AuthorizationPolicy per Service selecting its
// pods (label app: the Service's name), allowing the namespace's default
// service account: a pod change changes the policies of the nodes it was
// and is on.
func withAuthz(plain Input) Input {
	authz := plain
	authz.Pods = make([]*Pod, len(plain.Pods))
	for i, p := range plain.Pods {
		c := *p
		c.Labels = map[string]string{"app": c.ServiceAccountName}
		authz.Pods[i] = &c
	}
	for _, svc := range plain.Services {
		ns, name := svc.Namespace, svc.Name
		authz.AuthorizationPolicies = append(authz.AuthorizationPolicies, policyv1a1.AuthorizationPolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 1, UID: types.UID("p-" + name)},
			Spec: policyv1a1.AuthorizationPolicySpec{
				TargetRefs: []policyv1a1.PolicyTargetReferenceWithLabelSelectors{{Kind: "Pod", Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}},
				Action:     policyv1a1.ActionAllow, EnforcementLevel: policyv1a1.LevelNetwork,
				Rules: []policyv1a1.AuthorizationRule{{Sources: []policyv1a1.AuthorizationSource{{Type: policyv1a1.SourceServiceAccount,
					ServiceAccount: &policyv1a1.AuthorizationSourceServiceAccount{Name: "default"}}}}},
			}})
	}
	return authz
}

// BenchmarkResolveAuthzChange: one of 10,000 AuthorizationPolicies changes
// each round (its rules alternate between one source and two), at the
// scale of issue #17. compile-all is the round without reuse (how the
// controller resolved a policy change before Reuse.OnlyAuthz); only-authz
// resolves authorization alone on the previous Output.
func BenchmarkResolveAuthzChange(b *testing.B) {
	in := withAuthz(genCluster(scaleCluster))
	versionRoutes(&in, func(int) string { return "1" })
	for _, bc := range []struct {
		name string
		only bool
	}{{"compile-all", false}, {"only-authz", true}} {
		prev := Resolve(in)
		b.Run(bc.name, func(b *testing.B) {
			rounds(b, func(i int) {
				k := (i * 7919) % len(in.AuthorizationPolicies)
				p := &in.AuthorizationPolicies[k]
				p.Generation++
				rule := p.Spec.Rules[0]
				if len(rule.Sources) == 1 {
					rule.Sources = append(slices.Clone(rule.Sources), policyv1a1.AuthorizationSource{Type: policyv1a1.SourceServiceAccount,
						ServiceAccount: &policyv1a1.AuthorizationSourceServiceAccount{Name: "ops"}})
				} else {
					rule.Sources = rule.Sources[:1]
				}
				p.Spec.Rules = []policyv1a1.AuthorizationRule{rule}
				in.AuthzInForce = prev.AuthzInForce
				in.Reuse = nil
				if bc.only {
					in.Reuse = ReuseOf(prev)
					in.Reuse.WorkloadsValid, in.Reuse.RoutesValid, in.Reuse.OnlyAuthz = true, true, true
				}
				prev = Resolve(in)
			})
		})
	}
}

// rounds runs round(1), round(2), ... for the benchmark's loop and reports
// allocations and the CPU time per round (all threads, GC included): on a
// busy shared machine it is steadier than the wall time.
func rounds(b *testing.B, round func(i int)) {
	b.ReportAllocs()
	cpu0 := cpuTime()
	for i := 1; b.Loop(); i++ {
		round(i)
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
}
