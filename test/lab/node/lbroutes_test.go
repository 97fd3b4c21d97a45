package node

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestChooseLBRoutes(t *testing.T) {
	pool := netip.MustParsePrefix("172.30.200.0/24")
	a := netip.MustParseAddr
	nodes := []lbNode{{"n1", a("172.30.0.11")}, {"n2", a("172.30.0.12")}, {"n3", a("172.30.0.13")}}
	local := func(ip string, ready ...string) lbRouteService {
		return lbRouteService{IPs: []netip.Addr{a(ip)}, Local: true, ReadyNodes: ready}
	}
	type routes = map[netip.Addr]netip.Addr
	for _, tc := range []struct {
		name    string
		svcs    []lbRouteService
		current routes
		want    routes
	}{{
		name: "Cluster Services ride the pool route",
		svcs: []lbRouteService{{IPs: []netip.Addr{a("172.30.200.1")}, ReadyNodes: []string{"n3"}}},
		want: routes{},
	}, {
		name: "Local: the first node in node order with a ready endpoint",
		svcs: []lbRouteService{local("172.30.200.1", "n3", "n2")},
		want: routes{a("172.30.200.1"): a("172.30.0.12")},
	}, {
		name:    "Local: the current node while it keeps a ready endpoint",
		svcs:    []lbRouteService{local("172.30.200.1", "n2", "n3")},
		current: routes{a("172.30.200.1"): a("172.30.0.13")},
		want:    routes{a("172.30.200.1"): a("172.30.0.13")},
	}, {
		name:    "Local: moves when the current node lost its endpoint",
		svcs:    []lbRouteService{local("172.30.200.1", "n2")},
		current: routes{a("172.30.200.1"): a("172.30.0.13")},
		want:    routes{a("172.30.200.1"): a("172.30.0.12")},
	}, {
		name:    "Local without a ready endpoint, or on an unknown node: no route",
		svcs:    []lbRouteService{local("172.30.200.1"), local("172.30.200.2", "elsewhere")},
		current: routes{a("172.30.200.1"): a("172.30.0.11")},
		want:    routes{},
	}, {
		name: "addresses outside the pool, and one claimed twice, are not routed",
		svcs: []lbRouteService{local("192.0.2.1", "n1"), local("172.30.200.3", "n1"), local("172.30.200.3", "n2")},
		want: routes{},
	}} {
		got := chooseLBRoutes(pool, nodes, tc.svcs, tc.current)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLBRouteServices(t *testing.T) {
	svc := func(name string, typ corev1.ServiceType, policy corev1.ServiceExternalTrafficPolicy, ips ...string) *corev1.Service {
		s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name}, Spec: corev1.ServiceSpec{Type: typ, ExternalTrafficPolicy: policy}}
		for _, ip := range ips {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
		}
		return s
	}
	slice := func(ns, svcName string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svcName}}, Endpoints: eps}
	}
	ep := func(node string, ready *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{NodeName: ptr.To(node), Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	}
	got := lbRouteServices(
		[]*corev1.Service{
			svc("web", corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyLocal, "172.30.200.1", "not-an-ip"),
			svc("api", corev1.ServiceTypeLoadBalancer, corev1.ServiceExternalTrafficPolicyCluster, "172.30.200.2"),
			svc("internal", corev1.ServiceTypeClusterIP, ""),
		},
		[]*discoveryv1.EndpointSlice{
			slice("ns", "web", ep("n1", ptr.To(false)), ep("n2", nil), ep("n3", ptr.To(true)), ep("n3", ptr.To(true))),
			slice("ns", "web", ep("n4", ptr.To(true)), discoveryv1.Endpoint{}), // a second slice; an endpoint without a node
			slice("other", "web", ep("n5", ptr.To(true))),                      // another namespace's web
			slice("ns", "", ep("n6", ptr.To(true))),                            // not a Service's
		},
	)
	want := []lbRouteService{
		{IPs: []netip.Addr{netip.MustParseAddr("172.30.200.1")}, Local: true, ReadyNodes: []string{"n2", "n3", "n4"}},
		{IPs: []netip.Addr{netip.MustParseAddr("172.30.200.2")}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}
