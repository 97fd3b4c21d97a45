package provision

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/resolve"
)

func TestName(t *testing.T) {
	long := strings.Repeat("a", 60)
	for _, tc := range []struct{ gateway, want string }{
		{"edge", "edge-weft-gateway"},
		{strings.Repeat("a", 50), strings.Repeat("a", 50) + "-weft-gateway"},
		{"1edge", ""},        // a Service name starts with a letter
		{"edge.example", ""}, // no dots
		{long, ""},           // too long
		{long + "b", ""},     // differs from long only past the cut
	} {
		got := Name(tc.gateway)
		if tc.want != "" && got != tc.want {
			t.Errorf("Name(%q) = %q, want %q", tc.gateway, got, tc.want)
		}
		if errs := validation.IsDNS1035Label(got); len(errs) > 0 {
			t.Errorf("Name(%q) = %q: not a Service name: %v", tc.gateway, got, errs)
		}
		if errs := validation.IsDNS1035Label(CAConfigMap(tc.gateway)); len(errs) > 0 && len(CAConfigMap(tc.gateway)) > 253 {
			t.Errorf("CAConfigMap(%q) invalid: %v", tc.gateway, errs)
		}
	}
	if Name(long) == Name(long+"b") {
		t.Error("two long names share a hash")
	}
}

func gw(listeners ...gwv1.Listener) *gwv1.Gateway {
	return &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "infra", Name: "edge", UID: "uid-1"},
		Spec:       gwv1.GatewaySpec{GatewayClassName: "weft", Listeners: listeners},
	}
}

var params = Params{Image: "ghcr.io/weft-mesh/weft-agent:v1", Controller: "weft-controller.weft-system.svc:15012", CABundle: []byte("PEM")}

func TestDesired(t *testing.T) {
	for _, tc := range []struct {
		name      string
		gw        *gwv1.Gateway
		ports     []int32
		appProto  []string
		bindLow   bool
		infraKeys bool
	}{
		{name: "http 80 and https 443 share nothing", gw: gw(
			gwv1.Listener{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType},
			gwv1.Listener{Name: "https", Port: 443, Protocol: gwv1.HTTPSProtocolType}),
			ports: []int32{80, 443}, appProto: []string{"http", "https"}, bindLow: true},
		{name: "two listeners on one port, health and metrics ports left out", gw: gw(
			gwv1.Listener{Name: "a", Port: 8443, Protocol: gwv1.TLSProtocolType},
			gwv1.Listener{Name: "b", Port: 8443, Protocol: gwv1.HTTPSProtocolType},
			gwv1.Listener{Name: "c", Port: mesh.HealthPort, Protocol: gwv1.HTTPProtocolType},
			gwv1.Listener{Name: "d", Port: mesh.MetricsPort, Protocol: gwv1.HTTPProtocolType}),
			ports: []int32{8443}, appProto: []string{""}},
		{name: "infrastructure labels and annotations", gw: func() *gwv1.Gateway {
			g := gw(gwv1.Listener{Name: "tcp", Port: 9000, Protocol: gwv1.TCPProtocolType})
			g.Spec.Infrastructure = &gwv1.GatewayInfrastructure{
				Labels:      map[gwv1.LabelKey]gwv1.LabelValue{"team": "edge", mesh.LabelGateway: "hijack"},
				Annotations: map[gwv1.AnnotationKey]gwv1.AnnotationValue{"lb.example.com/internal": "true"},
			}
			return g
		}(), ports: []int32{9000}, appProto: []string{""}, infraKeys: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Desired(tc.gw, params)
			name := Name("edge")
			for _, m := range []metav1.Object{o.ServiceAccount, o.ConfigMap, o.Deployment, o.Service} {
				ref := metav1.GetControllerOf(m)
				if ref == nil || ref.UID != "uid-1" || ref.Kind != "Gateway" || m.GetNamespace() != "infra" {
					t.Errorf("%s: owner %+v, namespace %s", m.GetName(), ref, m.GetNamespace())
				}
				if m.GetLabels()[mesh.LabelGateway] != name || m.GetLabels()[gwv1.GatewayNameLabelKey] != "edge" {
					t.Errorf("%s: labels %v", m.GetName(), m.GetLabels())
				}
				if tc.infraKeys && (m.GetLabels()["team"] != "edge" || m.GetAnnotations()["lb.example.com/internal"] != "true") {
					t.Errorf("%s: infrastructure not applied: %v %v", m.GetName(), m.GetLabels(), m.GetAnnotations())
				}
			}
			tmpl := o.Deployment.Spec.Template
			if tmpl.Annotations[mesh.AnnotationMesh] != mesh.MeshDisabled || (tc.infraKeys && tmpl.Annotations["lb.example.com/internal"] != "true") {
				t.Errorf("pod annotations %v: want the mesh opt-out (and the infrastructure's)", tmpl.Annotations)
			}
			if o.Deployment.Annotations[mesh.AnnotationMesh] != "" {
				t.Errorf("the opt-out is for the pods only: Deployment annotations %v", o.Deployment.Annotations)
			}
			svc := o.Service
			if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.Selector[mesh.LabelGateway] != name {
				t.Errorf("service %+v", svc.Spec)
			}
			var got []int32
			var protos []string
			for _, p := range svc.Spec.Ports {
				got = append(got, p.Port)
				ap := ""
				if p.AppProtocol != nil {
					ap = *p.AppProtocol
				}
				protos = append(protos, ap)
			}
			if !slices.Equal(got, tc.ports) || !slices.Equal(protos, tc.appProto) {
				t.Errorf("service ports %v %v, want %v %v", got, protos, tc.ports, tc.appProto)
			}
			pod := o.Deployment.Spec.Template
			if pod.Labels[mesh.LabelGateway] != name || o.Deployment.Spec.Selector.MatchLabels[mesh.LabelGateway] != name {
				t.Errorf("pod labels %v", pod.Labels)
			}
			if pod.Spec.ServiceAccountName != Identity("edge") || *pod.Spec.AutomountServiceAccountToken || !*pod.Spec.SecurityContext.RunAsNonRoot {
				t.Errorf("pod spec %+v", pod.Spec)
			}
			c := pod.Spec.Containers[0]
			wantArgs := []string{"gateway", "--gateway=infra/edge", "--controller=weft-controller.weft-system.svc:15012",
				"--controller-ca=/var/run/secrets/weft/ca.crt", "--token-file=/var/run/secrets/weft/token", "--health-addr=:15021", "--metrics-addr=:15020"}
			if !slices.Equal(c.Args, wantArgs) || c.Image != params.Image {
				t.Errorf("args %v, want %v", c.Args, wantArgs)
			}
			if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.IntValue() != mesh.HealthPort {
				t.Errorf("readiness %+v", c.ReadinessProbe)
			}
			if add := c.SecurityContext.Capabilities.Add; len(add) > 0 {
				t.Errorf("capabilities %v added; the data plane needs none", add)
			}
			wantSysctls := []corev1.Sysctl(nil)
			if tc.bindLow {
				wantSysctls = []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}
			}
			if got := pod.Spec.SecurityContext.Sysctls; !slices.Equal(got, wantSysctls) {
				t.Errorf("sysctls %v, want %v", got, wantSysctls)
			}
			if len(c.Ports) != len(tc.ports)+2 || c.Ports[len(c.Ports)-1].Name != "metrics" || c.Ports[len(c.Ports)-1].ContainerPort != mesh.MetricsPort {
				t.Errorf("container ports %v", c.Ports)
			}
			if pod.Annotations["prometheus.io/scrape"] != "true" || pod.Annotations["prometheus.io/port"] != "15020" || pod.Annotations["prometheus.io/path"] != "/metrics" {
				t.Errorf("pod annotations %v lack the prometheus.io ones", pod.Annotations)
			}
			if tc.infraKeys && pod.Annotations["lb.example.com/internal"] != "true" {
				t.Errorf("pod annotations %v lack the infrastructure's", pod.Annotations)
			}
			if _, ok := o.Service.Annotations["prometheus.io/scrape"]; ok {
				t.Errorf("the Service carries the pod's scrape annotations: %v", o.Service.Annotations)
			}
			src := pod.Spec.Volumes[0].Projected.Sources
			if src[0].ServiceAccountToken.Audience != "weft" || src[1].ConfigMap.Name != o.ConfigMap.Name || o.ConfigMap.Data[CAKey] != "PEM" {
				t.Errorf("volume %+v, configmap %+v", src, o.ConfigMap)
			}
		})
	}
}

func TestProvisionedAddresses(t *testing.T) {
	g := gw(gwv1.Listener{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType})
	svc := Desired(g, params).Service
	svc.Spec.ClusterIP, svc.Spec.ClusterIPs = "10.0.0.7", []string{"10.0.0.7"}
	stranger := svc.DeepCopy()
	stranger.OwnerReferences = nil
	if got := Provisioned([]gwv1.Gateway{*g}, []corev1.Service{*stranger}, nil); len(got) != 0 {
		t.Errorf("a Service the Gateway does not control counts: %+v", got)
	}
	got := Provisioned([]gwv1.Gateway{*g}, []corev1.Service{*svc}, nil)
	if len(got) != 1 || len(got[0].Addresses) != 0 {
		t.Fatalf("no load balancer address yet: %+v, want none (the cluster IP is no address for clients outside)", got)
	}
	clusterIP := svc.DeepCopy()
	clusterIP.Spec.Type = corev1.ServiceTypeClusterIP
	if a := Addresses(clusterIP); len(a) != 1 || a[0].Value != "10.0.0.7" {
		t.Errorf("a ClusterIP Service: %+v, want its cluster IP", a)
	}
	if got[0].ReadyPods != 0 || got[0].Workload != "Deployment "+g.Namespace+"/"+Name(g.Name) {
		t.Errorf("no pods: %+v", got[0])
	}
	// only the Gateway's own pods that are Ready and not terminating count
	pod := func(name, gateway string, ready corev1.ConditionStatus, deleting bool) *resolve.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: g.Namespace, Name: name, Labels: map[string]string{mesh.LabelGateway: gateway}},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}}}
		if deleting {
			p.DeletionTimestamp = &metav1.Time{}
		}
		return resolve.PodOf(p)
	}
	pods := []*resolve.Pod{
		pod("a", Name(g.Name), corev1.ConditionTrue, false),
		pod("b", Name(g.Name), corev1.ConditionFalse, false),
		pod("c", Name(g.Name), corev1.ConditionTrue, true),
		pod("d", "other-weft-gateway", corev1.ConditionTrue, false),
	}
	if got := Provisioned([]gwv1.Gateway{*g}, []corev1.Service{*svc}, pods); got[0].ReadyPods != 1 {
		t.Errorf("ready pods %d, want 1 (a)", got[0].ReadyPods)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}, {Hostname: "lb.example.com"}}
	a := Addresses(svc)
	if len(a) != 2 || a[0].Value != "192.0.2.1" || *a[0].Type != gwv1.IPAddressType || *a[1].Type != gwv1.HostnameAddressType {
		t.Errorf("addresses %+v", a)
	}
}
