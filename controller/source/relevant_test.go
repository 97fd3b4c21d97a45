package source

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/resolve"
)

// Every test below pairs an object with a changed copy and checks what
// classify makes of the update.

var t0 = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))

func node() *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1", ResourceVersion: "1", Labels: map[string]string{"kubernetes.io/hostname": "node-1"}},
		Status: corev1.NodeStatus{
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.30.0.11"}, {Type: corev1.NodeHostName, Address: "node-1"}},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: t0}},
		},
	}
}

func pod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "echo-1", UID: "u1", ResourceVersion: "1",
			Labels: map[string]string{"app": "echo"}, Annotations: map[string]string{"other": "x"}},
		Spec: corev1.PodSpec{NodeName: "node-1", ServiceAccountName: "echo"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.10", PodIPs: []corev1.PodIP{{IP: "10.244.1.10"}},
			Conditions:        []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: t0}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "c", Ready: true}}},
	}
}

func slice() *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "app", Name: "echo-1", ResourceVersion: "1", Labels: map[string]string{discoveryv1.LabelServiceName: "echo"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.1.10"},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080)}},
	}
}

func service() *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "echo", ResourceVersion: "1"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80}}},
	}
}

func namespace() *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app", ResourceVersion: "1",
		Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}}
}

func httpRoute() *gwv1.HTTPRoute {
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "r", Generation: 1, ResourceVersion: "1", CreationTimestamp: t0},
		Spec: gwv1.HTTPRouteSpec{CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
			Kind: ptr(gwv1.Kind("Service")), Name: "echo"}}}},
	}
}

func ptr[T any](v T) *T { return &v }

// bump is what every update does to an object's metadata whatever else it
// changes: a new resourceVersion and managedFields entry.
func bump(m *metav1.ObjectMeta) {
	m.ResourceVersion += "1"
	m.ManagedFields = append(m.ManagedFields, metav1.ManagedFieldsEntry{Manager: "kubelet", Time: &t0})
}

type classifyCase struct {
	name     string
	old, new any
	want     change
}

// withNode returns a changed copy of node().
func withNode(f func(*corev1.Node)) any {
	n := node()
	bump(&n.ObjectMeta)
	f(n)
	return n
}

// withPod returns a changed copy of pod(), as the informer stores it.
func withPod(f func(*corev1.Pod)) any {
	p := pod()
	bump(&p.ObjectMeta)
	f(p)
	return slimPod(p)
}

func withSlice(f func(*discoveryv1.EndpointSlice)) any {
	s := slice()
	bump(&s.ObjectMeta)
	f(s)
	return s
}

func withService(f func(*corev1.Service)) any {
	s := service()
	bump(&s.ObjectMeta)
	f(s)
	return s
}

func withNamespace(f func(*corev1.Namespace)) any {
	n := namespace()
	bump(&n.ObjectMeta)
	f(n)
	return n
}

func withRoute(f func(*gwv1.HTTPRoute)) any {
	r := httpRoute()
	bump(&r.ObjectMeta)
	f(r)
	return r
}

func TestClassify(t *testing.T) {
	later := metav1.NewTime(t0.Add(10 * time.Second))
	ourStatus := gwv1.RouteStatus{Parents: []gwv1.RouteParentStatus{{
		ParentRef: gwv1.ParentReference{Name: "echo"}, ControllerName: resolve.ControllerName,
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: 1, LastTransitionTime: t0}},
	}}}
	for _, c := range []classifyCase{
		// Node: the kubelet's heartbeats and everything but InternalIPs.
		{"node heartbeat", node(), withNode(func(n *corev1.Node) { n.Status.Conditions[0].LastHeartbeatTime = later }), changeNone},
		{"node not ready", node(), withNode(func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }), changeNone},
		{"node labels and capacity", node(), withNode(func(n *corev1.Node) {
			n.Labels["topology.kubernetes.io/zone"] = "a"
			n.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}
			n.Status.Images = []corev1.ContainerImage{{Names: []string{"echo"}}}
		}), changeNone},
		{"node address", node(), withNode(func(n *corev1.Node) { n.Status.Addresses[0].Address = "172.30.0.99" }), changeResolve},
		{"node address added", node(), withNode(func(n *corev1.Node) {
			n.Status.Addresses = append(n.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "fd00::1"})
		}), changeResolve},

		// Pod, as the informer stores it (strip): container statuses and
		// timestamps are not read.
		{"pod container status", slimPod(pod()), withPod(func(p *corev1.Pod) {
			p.Status.ContainerStatuses[0].RestartCount = 3
			p.Status.Conditions[0].LastProbeTime = later
			p.Status.Conditions[0].LastTransitionTime = later
			p.Annotations["other"] = "y"
		}), changeNone},
		{"pod other condition", slimPod(pod()), withPod(func(p *corev1.Pod) {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.ContainersReady, Status: corev1.ConditionTrue})
		}), changeNone},
		{"pod deletion time moved", withPod(func(p *corev1.Pod) { p.DeletionTimestamp = &t0 }), withPod(func(p *corev1.Pod) { p.DeletionTimestamp = &later }), changeNone},
		{"pod not ready", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Status.Conditions[0].Status = corev1.ConditionFalse }), changeReadiness},
		{"pod ip", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Status.PodIP, p.Status.PodIPs = "", nil }), changeResolve},
		{"pod ips", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: "fd00::10"}) }), changeResolve},
		{"pod phase", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), changeResolve},
		{"pod labels", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Labels["version"] = "v2" }), changeResolve},
		{"pod opted out", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Annotations[mesh.AnnotationMesh] = mesh.MeshDisabled }), changeResolve},
		{"pod strict mTLS", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Annotations[mesh.AnnotationMTLS] = mesh.MTLSStrict }), changeResolve},
		{"pod mTLS annotation emptied", withPod(func(p *corev1.Pod) { p.Annotations[mesh.AnnotationMTLS] = mesh.MTLSStrict }),
			withPod(func(p *corev1.Pod) { p.Annotations[mesh.AnnotationMTLS] = "" }), changeResolve},
		{"pod terminating", slimPod(pod()), withPod(func(p *corev1.Pod) { p.DeletionTimestamp = &later }), changeResolve},
		{"pod not ready and relabelled", slimPod(pod()), withPod(func(p *corev1.Pod) {
			p.Status.Conditions[0].Status = corev1.ConditionFalse
			p.Labels["version"] = "v2"
		}), changeResolve},
		{"pod bound", withPod(func(p *corev1.Pod) { p.Spec.NodeName = "" }), slimPod(pod()), changeResolve},
		{"pod service account", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "other" }), changeResolve},
		{"pod host network", slimPod(pod()), withPod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), changeResolve},
		{"pod recreated", slimPod(pod()), withPod(func(p *corev1.Pod) { p.UID = "u2" }), changeResolve},

		// EndpointSlice.
		{"slice trigger time", slice(), withSlice(func(s *discoveryv1.EndpointSlice) {
			s.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": later.String()}
			s.Labels["endpointslice.kubernetes.io/managed-by"] = "x"
		}), changeNone},
		{"slice endpoint not ready", slice(), withSlice(func(s *discoveryv1.EndpointSlice) { s.Endpoints[0].Conditions.Ready = ptr(false) }), changeResolve},
		{"slice endpoint added", slice(), withSlice(func(s *discoveryv1.EndpointSlice) {
			s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.244.1.11"}})
		}), changeResolve},
		{"slice port", slice(), withSlice(func(s *discoveryv1.EndpointSlice) { s.Ports[0].Port = ptr[int32](9090) }), changeResolve},
		{"slice service", slice(), withSlice(func(s *discoveryv1.EndpointSlice) { s.Labels[discoveryv1.LabelServiceName] = "other" }), changeResolve},
		{"slice address type", slice(), withSlice(func(s *discoveryv1.EndpointSlice) { s.AddressType = discoveryv1.AddressTypeFQDN }), changeResolve},

		// Service.
		{"service labels", service(), withService(func(s *corev1.Service) { s.Labels = map[string]string{"a": "b"} }), changeNone},
		{"service load balancer (a Gateway's addresses)", service(), withService(func(s *corev1.Service) {
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "1.2.3.4"}}
		}), changeResolve},
		{"service port", service(), withService(func(s *corev1.Service) { s.Spec.Ports[0].Port = 81 }), changeResolve},
		{"service affinity", service(), withService(func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }), changeResolve},

		// Namespace.
		{"namespace annotations", namespace(), withNamespace(func(n *corev1.Namespace) { n.Annotations["other"] = "a" }), changeNone},
		{"namespace labels (allowedRoutes selectors)", namespace(), withNamespace(func(n *corev1.Namespace) { n.Labels = map[string]string{"team": "a"} }), changeResolve},
		{"namespace strict mTLS", namespace(), withNamespace(func(n *corev1.Namespace) { n.Annotations[mesh.AnnotationMTLS] = mesh.MTLSStrict }), changeResolve},
		{"namespace unenrolled", namespace(), withNamespace(func(n *corev1.Namespace) { delete(n.Annotations, mesh.AnnotationMesh) }), changeResolve},

		// Routes: a status write is not a resolution.
		{"route status written", httpRoute(), withRoute(func(r *gwv1.HTTPRoute) { r.Status.RouteStatus = ourStatus }), changeStatus},
		{"route labels", httpRoute(), withRoute(func(r *gwv1.HTTPRoute) { r.Labels = map[string]string{"a": "b"} }), changeNone},
		{"route spec", httpRoute(), withRoute(func(r *gwv1.HTTPRoute) {
			r.Generation++
			r.Spec.Hostnames = []gwv1.Hostname{"echo"}
		}), changeResolve},
		{"route generation", httpRoute(), withRoute(func(r *gwv1.HTTPRoute) { r.Generation++ }), changeResolve},
		{"route spec and status", httpRoute(), withRoute(func(r *gwv1.HTTPRoute) {
			r.Generation++
			r.Spec.Hostnames = []gwv1.Hostname{"echo"}
			r.Status.RouteStatus = ourStatus
		}), changeResolve},
		{"grpc route status", &gwv1.GRPCRoute{}, &gwv1.GRPCRoute{Status: gwv1.GRPCRouteStatus{RouteStatus: ourStatus}}, changeStatus},
		{"grpc route spec", &gwv1.GRPCRoute{}, &gwv1.GRPCRoute{Spec: gwv1.GRPCRouteSpec{Hostnames: []gwv1.Hostname{"a"}}}, changeResolve},
		{"tcp route status", &gwv1.TCPRoute{}, &gwv1.TCPRoute{Status: gwv1.TCPRouteStatus{RouteStatus: ourStatus}}, changeStatus},
		{"tcp route spec", &gwv1.TCPRoute{}, &gwv1.TCPRoute{Spec: gwv1.TCPRouteSpec{Rules: []gwv1.TCPRouteRule{{}}}}, changeResolve},
		{"policy status", &gwxv1a1.XBackendTrafficPolicy{}, &gwxv1a1.XBackendTrafficPolicy{Status: gwv1.PolicyStatus{Ancestors: []gwv1.PolicyAncestorStatus{{ControllerName: resolve.ControllerName}}}}, changeStatus},
		{"policy spec", &gwxv1a1.XBackendTrafficPolicy{}, &gwxv1a1.XBackendTrafficPolicy{Spec: gwxv1a1.BackendTrafficPolicySpec{RetryConstraint: &gwxv1a1.RetryConstraint{}}}, changeResolve},
		{"xbackend labels", &gwxv1a1.XBackend{}, &gwxv1a1.XBackend{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}}, changeNone},
		{"gateway status", &gwv1.Gateway{}, &gwv1.Gateway{Status: gwv1.GatewayStatus{Addresses: []gwv1.GatewayStatusAddress{{Value: "a"}}}}, changeStatus},
		{"gateway spec", &gwv1.Gateway{}, &gwv1.Gateway{Spec: gwv1.GatewaySpec{GatewayClassName: "weft"}}, changeResolve},
		{"gateway labels", &gwv1.Gateway{}, &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}}, changeNone},
		{"class status", &gwv1.GatewayClass{}, &gwv1.GatewayClass{Status: gwv1.GatewayClassStatus{SupportedFeatures: []gwv1.SupportedFeature{{Name: "x"}}}}, changeStatus},
		{"tls route status", &gwv1.TLSRoute{}, &gwv1.TLSRoute{Status: gwv1.TLSRouteStatus{RouteStatus: ourStatus}}, changeStatus},
		{"backend tls policy status", &gwv1.BackendTLSPolicy{}, &gwv1.BackendTLSPolicy{Status: gwv1.PolicyStatus{Ancestors: []gwv1.PolicyAncestorStatus{{}}}}, changeStatus},
		{"reference grant labels", &gwv1.ReferenceGrant{}, &gwv1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}}, changeNone},
		{"secret data", &corev1.Secret{}, &corev1.Secret{Data: map[string][]byte{"tls.crt": nil}}, changeResolve},
		{"secret labels", &corev1.Secret{}, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}}}, changeNone},
		{"configmap data", &corev1.ConfigMap{}, &corev1.ConfigMap{Data: map[string]string{"ca.crt": "x"}}, changeResolve},
		{"xbackend spec", &gwxv1a1.XBackend{}, &gwxv1a1.XBackend{Spec: gwxv1a1.BackendSpec{Type: gwxv1a1.BackendTypeEndpointSelector}}, changeResolve},

		// What it does not know is resolved.
		{"unknown kind", &corev1.LimitRange{}, &corev1.LimitRange{}, changeResolve},
		{"tombstone", node(), cacheTombstone{}, changeResolve},
	} {
		if got := classify(c.old, c.new); got != c.want {
			t.Errorf("%s: classify = %d, want %d", c.name, got, c.want)
		}
	}
}

type cacheTombstone struct{}

// TestIgnoredFieldsDoNotChangeResolution checks the filter against the
// resolver itself: on every golden case of controller/resolve, changing
// every field classify ignores (as heartbeats, kubelets and status writers
// do) leaves resolve.Resolve's output exactly as it was, and classify
// calls every one of those updates changeNone or changeStatus.
func TestIgnoredFieldsDoNotChangeResolution(t *testing.T) {
	cases, err := filepath.Glob("../resolve/testdata/*.in.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no resolve cases: %v", err)
	}
	for _, path := range cases {
		name := strings.TrimSuffix(filepath.Base(path), ".in.yaml")
		t.Run(name, func(t *testing.T) {
			in, pods, err := loadCase(path)
			if err != nil {
				t.Fatal(err)
			}
			noisy := perturb(t, in, pods)
			want, got := resolve.Resolve(in), resolve.Resolve(noisy)
			if len(want.Nodes) != len(got.Nodes) {
				t.Fatalf("%d node policies, want %d", len(got.Nodes), len(want.Nodes))
			}
			for n, p := range want.Nodes {
				if !proto.Equal(p, got.Nodes[n]) {
					t.Errorf("policy of node %s changed by ignored fields", n)
				}
			}
			if !equality.Semantic.DeepEqual(want.Statuses, got.Statuses) {
				t.Errorf("statuses changed by ignored fields:\n%v\n%v", want.Statuses, got.Statuses)
			}
		})
	}
}

// TestReadinessOnlyWhereRead: flipping every pod's Ready condition is
// classified changeReadiness, and changes no node policy of a case
// without an EndpointSelector XBackend (Input.ReadsPodReadiness), which
// is what lets the controller reuse the last round's workloads and
// clusters. Some case with one does change: the rule is not vacuous.
func TestReadinessOnlyWhereRead(t *testing.T) {
	cases, err := filepath.Glob("../resolve/testdata/*.in.yaml")
	if err != nil || len(cases) == 0 {
		t.Fatalf("no resolve cases: %v", err)
	}
	changedSome := false
	for _, path := range cases {
		in, pods, err := loadCase(path)
		if err != nil {
			t.Fatal(err)
		}
		flipped := in
		flipped.Pods = nil
		for i, p := range pods {
			f := p.DeepCopy()
			found := false
			for j := range f.Status.Conditions {
				if c := &f.Status.Conditions[j]; c.Type == corev1.PodReady {
					c.Status = map[bool]corev1.ConditionStatus{true: corev1.ConditionFalse, false: corev1.ConditionTrue}[c.Status == corev1.ConditionTrue]
					found = true
				}
			}
			if !found {
				f.Status.Conditions = append(f.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
			}
			sf := slimPod(f)
			if c := classify(in.Pods[i], sf); c != changeReadiness {
				t.Fatalf("%s: pod %s/%s flipped is classified %d, want changeReadiness", path, p.Namespace, p.Name, c)
			}
			flipped.Pods = append(flipped.Pods, sf)
		}
		want, got := resolve.Resolve(in), resolve.Resolve(flipped)
		same := len(want.Nodes) == len(got.Nodes)
		for n, p := range want.Nodes {
			same = same && proto.Equal(p, got.Nodes[n])
		}
		switch {
		case !in.ReadsPodReadiness() && !same:
			t.Errorf("%s: a readiness flip changed a node policy, yet ReadsPodReadiness is false", path)
		case !in.ReadsPodReadiness() && !equality.Semantic.DeepEqual(want.Statuses, got.Statuses):
			t.Errorf("%s: a readiness flip changed statuses", path)
		case in.ReadsPodReadiness() && !same:
			changedSome = true
		}
	}
	if !changedSome {
		t.Error("no case's node policies changed with its pods' readiness: EndpointSelector XBackends are not covered")
	}
}

// perturb returns a copy of in with every field classify ignores changed,
// checking that classify ignores each changed object. Pods are changed as
// the API server has them (pods, of which in.Pods were made) and compared
// as the informer stores them.
func perturb(t *testing.T, in resolve.Input, pods []*corev1.Pod) resolve.Input {
	t.Helper()
	later := metav1.NewTime(t0.Add(time.Hour))
	out := resolve.Input{Options: in.Options}
	check := func(kind string, m *metav1.ObjectMeta, old, new any, allowed ...change) {
		t.Helper()
		c := classify(old, new)
		for _, a := range append(allowed, changeNone) {
			if c == a {
				return
			}
		}
		t.Errorf("%s %s/%s: an ignored-field update was classified %d", kind, m.Namespace, m.Name, c)
	}
	meta := func(m *metav1.ObjectMeta) {
		bump(m)
		m.Labels = addTo(m.Labels, "noise.test/label", "x")
		m.Annotations = addTo(m.Annotations, "noise.test/annotation", "x")
		m.Finalizers = append(m.Finalizers, "noise.test/finalizer")
	}
	for i := range in.Nodes {
		n := in.Nodes[i].DeepCopy()
		meta(&n.ObjectMeta)
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionFalse, LastHeartbeatTime: later})
		n.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("64")}
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: []string{"noise"}})
		n.Spec.Unschedulable = !n.Spec.Unschedulable
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "noise", Effect: corev1.TaintEffectNoSchedule})
		check("Node", &n.ObjectMeta, &in.Nodes[i], n)
		out.Nodes = append(out.Nodes, *n)
	}
	for i := range pods {
		p := pods[i].DeepCopy()
		bump(&p.ObjectMeta)
		p.Annotations = addTo(p.Annotations, "noise.test/annotation", "x")
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: "noise", RestartCount: 7})
		for j := range p.Status.Conditions {
			p.Status.Conditions[j].LastProbeTime = later
			p.Status.Conditions[j].LastTransitionTime = later
			p.Status.Conditions[j].Message = "noise"
		}
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: "noise.test/Gate", Status: corev1.ConditionTrue})
		p.Status.StartTime = &later
		p.Status.HostIP = "192.0.2.1"
		if p.DeletionTimestamp != nil {
			p.DeletionTimestamp = &later
		}
		slim := slimPod(p)
		check("Pod", &p.ObjectMeta, in.Pods[i], slim)
		out.Pods = append(out.Pods, slim)
	}
	for i := range in.Namespaces {
		n := in.Namespaces[i].DeepCopy()
		labels := n.Labels // the Gateway resolution reads them (allowedRoutes)
		meta(&n.ObjectMeta)
		n.Labels = labels
		n.Status.Conditions = append(n.Status.Conditions, corev1.NamespaceCondition{Type: "noise", Status: corev1.ConditionTrue})
		check("Namespace", &n.ObjectMeta, &in.Namespaces[i], n)
		out.Namespaces = append(out.Namespaces, *n)
	}
	for i := range in.Services {
		s := in.Services[i].DeepCopy()
		meta(&s.ObjectMeta)
		s.Status.Conditions = append(s.Status.Conditions, metav1.Condition{Type: "noise.test/X", Status: metav1.ConditionTrue})
		check("Service", &s.ObjectMeta, &in.Services[i], s)
		out.Services = append(out.Services, *s)
	}
	for i := range in.EndpointSlices {
		s := in.EndpointSlices[i].DeepCopy()
		meta(&s.ObjectMeta)
		check("EndpointSlice", &s.ObjectMeta, in.EndpointSlices[i], s)
		out.EndpointSlices = append(out.EndpointSlices, s)
	}
	noiseParent := func() gwv1.RouteParentStatus {
		return gwv1.RouteParentStatus{ParentRef: gwv1.ParentReference{Name: "noise"}, ControllerName: "noise.test/controller",
			Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", LastTransitionTime: later}}}
	}
	for i := range in.HTTPRoutes {
		r := in.HTTPRoutes[i].DeepCopy()
		meta(&r.ObjectMeta)
		r.Status.Parents = append(r.Status.Parents, noiseParent())
		check("HTTPRoute", &r.ObjectMeta, in.HTTPRoutes[i], r, changeStatus)
		out.HTTPRoutes = append(out.HTTPRoutes, r)
	}
	for i := range in.GRPCRoutes {
		r := in.GRPCRoutes[i].DeepCopy()
		meta(&r.ObjectMeta)
		r.Status.Parents = append(r.Status.Parents, noiseParent())
		check("GRPCRoute", &r.ObjectMeta, in.GRPCRoutes[i], r, changeStatus)
		out.GRPCRoutes = append(out.GRPCRoutes, r)
	}
	for i := range in.TCPRoutes {
		r := in.TCPRoutes[i].DeepCopy()
		meta(&r.ObjectMeta)
		r.Status.Parents = append(r.Status.Parents, noiseParent())
		check("TCPRoute", &r.ObjectMeta, in.TCPRoutes[i], r, changeStatus)
		out.TCPRoutes = append(out.TCPRoutes, r)
	}
	for i := range in.BackendTrafficPolicies {
		p := in.BackendTrafficPolicies[i].DeepCopy()
		meta(&p.ObjectMeta)
		p.Status.Ancestors = append(p.Status.Ancestors, gwv1.PolicyAncestorStatus{ControllerName: "noise.test/controller"})
		check("XBackendTrafficPolicy", &p.ObjectMeta, &in.BackendTrafficPolicies[i], p, changeStatus)
		out.BackendTrafficPolicies = append(out.BackendTrafficPolicies, *p)
	}
	for i := range in.Backends {
		b := in.Backends[i].DeepCopy()
		meta(&b.ObjectMeta)
		b.Generation++ // not read: an XBackend has no status of ours
		check("XBackend", &b.ObjectMeta, &in.Backends[i], b)
		out.Backends = append(out.Backends, *b)
	}
	return out
}

func addTo(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// loadCase reads one controller/resolve golden input (and the fixtures its
// ResolveOptions document includes) into an Input, and its pods as
// decoded (in.Pods are made of them, in order). It is a lenient copy of
// resolve's own test loader, which is not importable.
func loadCase(path string) (in resolve.Input, pods []*corev1.Pod, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return in, nil, err
	}
	docs := docSep.Split(string(data), -1)
	for _, doc := range docs {
		var o struct {
			Kind        string   `json:"kind"`
			Include     []string `json:"include"`
			TrustDomain string   `json:"trustDomain"`
			TunnelPort  uint32   `json:"tunnelPort"`
		}
		if yaml.Unmarshal([]byte(doc), &o) != nil || o.Kind != "ResolveOptions" {
			continue
		}
		in.Options = resolve.Options{TrustDomain: o.TrustDomain, TunnelPort: o.TunnelPort}
		for _, inc := range o.Include {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(path), inc))
			if err != nil {
				return in, nil, fmt.Errorf("include %s: %w", inc, err)
			}
			docs = append(docSep.Split(string(b), -1), docs...)
		}
	}
	for i, doc := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return in, nil, fmt.Errorf("%s document %d: %w", path, i, err)
		}
		b := []byte(doc)
		switch tm.Kind {
		case "Namespace":
			err = decodeAppend(b, &in.Namespaces)
		case "Node":
			err = decodeAppend(b, &in.Nodes)
		case "Service":
			err = decodeAppend(b, &in.Services)
		case "EndpointSlice":
			err = decodeAppend(b, &in.EndpointSlices)
		case "Pod":
			err = decodeAppend(b, &pods)
		case "HTTPRoute":
			err = decodeAppend(b, &in.HTTPRoutes)
		case "GRPCRoute":
			err = decodeAppend(b, &in.GRPCRoutes)
		case "TCPRoute":
			err = decodeAppend(b, &in.TCPRoutes)
		case "XBackendTrafficPolicy":
			err = decodeAppend(b, &in.BackendTrafficPolicies)
		case "XBackend":
			err = decodeAppend(b, &in.Backends)
		}
		if err != nil {
			return in, nil, fmt.Errorf("%s document %d (%s): %w", path, i, tm.Kind, err)
		}
	}
	for _, p := range pods {
		in.Pods = append(in.Pods, resolve.PodOf(p))
	}
	return in, pods, nil
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func decodeAppend[T any](b []byte, to *[]T) error {
	var o T
	if err := yaml.Unmarshal(b, &o); err != nil {
		return err
	}
	*to = append(*to, o)
	return nil
}

func TestReferences(t *testing.T) {
	ns := func(s string) *gwv1.Namespace { n := gwv1.Namespace(s); return &n }
	kind := func(s string) *gwv1.Kind { k := gwv1.Kind(s); return &k }
	group := func(s string) *gwv1.Group { g := gwv1.Group(s); return &g }
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "edge", Name: "g"}, Spec: gwv1.GatewaySpec{
		Listeners: []gwv1.Listener{{TLS: &gwv1.ListenerTLSConfig{CertificateRefs: []gwv1.SecretObjectReference{
			{Name: "local"}, {Name: "shared", Namespace: ns("certs")}, {Name: "not-a-secret", Kind: kind("Other"), Group: group("example.com")},
		}}}},
		TLS: &gwv1.GatewayTLSConfig{
			Backend: &gwv1.GatewayBackendTLS{ClientCertificateRef: &gwv1.SecretObjectReference{Name: "client"}},
			Frontend: &gwv1.FrontendTLSConfig{
				Default: gwv1.TLSConfig{Validation: &gwv1.FrontendTLSValidation{CACertificateRefs: []gwv1.ObjectReference{{Kind: "ConfigMap", Name: "ca"}}}},
				PerPort: []gwv1.TLSPortConfig{{Port: 443, TLS: gwv1.TLSConfig{Validation: &gwv1.FrontendTLSValidation{
					CACertificateRefs: []gwv1.ObjectReference{{Kind: "Secret", Name: "ca443", Namespace: ns("certs")}}}}}},
			},
		},
	}}
	pol := &gwv1.BackendTLSPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "app", Name: "p"}, Spec: gwv1.BackendTLSPolicySpec{
		Validation: gwv1.BackendTLSPolicyValidation{CACertificateRefs: []gwv1.LocalObjectReference{{Kind: "ConfigMap", Name: "backend-ca"}}}}}
	got := references([]*gwv1.Gateway{gw}, []*gwv1.BackendTLSPolicy{pol})
	want := map[objRef]bool{
		{"Secret", "edge", "local"}: true, {"Secret", "certs", "shared"}: true, {"Secret", "edge", "client"}: true,
		{"ConfigMap", "edge", "ca"}: true, {"Secret", "certs", "ca443"}: true, {"ConfigMap", "app", "backend-ca"}: true,
	}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Errorf("references = %v\nwant %v", got, want)
	}
}
