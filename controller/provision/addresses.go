package provision

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/resolve"
)

// Provisioned reports, for every Gateway in gateways whose Service (Name,
// controlled by that Gateway) is in services, the addresses its data
// plane can be reached on: the load balancer's ingress (IPs and
// hostnames); none while the load balancer assigns none (then the Gateway
// is AddressNotAssigned). A Service of another type is reached on its
// cluster IPs. A Gateway without its Service is
// not provisioned yet. ReadyPods counts the Gateway's data plane pods (in
// pods, by the weft.dev/gateway label) that are Ready and not terminating.
func Provisioned(gateways []gwv1.Gateway, services []corev1.Service, pods []*resolve.Pod) []gateway.Provisioned {
	if len(gateways) == 0 {
		return nil // without reading 100k pods every round (issue #17's scale)
	}
	type key struct{ ns, name string }
	byName := map[key]*corev1.Service{}
	for i := range services {
		byName[key{services[i].Namespace, services[i].Name}] = &services[i]
	}
	ready := map[key]int{}
	for _, p := range pods {
		if name, ok := p.Labels[mesh.LabelGateway]; ok && p.DeletionTimestamp == nil && podReady(p) {
			ready[key{p.Namespace, name}]++
		}
	}
	var out []gateway.Provisioned
	for i := range gateways {
		gw := &gateways[i]
		svc := byName[key{gw.Namespace, Name(gw.Name)}]
		if svc == nil || !controlledBy(svc.OwnerReferences, gw) {
			continue
		}
		out = append(out, gateway.Provisioned{Namespace: gw.Namespace, Name: gw.Name, Addresses: Addresses(svc),
			ReadyPods: ready[key{gw.Namespace, Name(gw.Name)}], Workload: "Deployment " + gw.Namespace + "/" + Name(gw.Name)})
	}
	return out
}

func podReady(p *resolve.Pod) bool {
	for _, c := range p.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func controlledBy(refs []metav1.OwnerReference, gw *gwv1.Gateway) bool {
	for _, r := range refs {
		if r.UID == gw.UID && r.Controller != nil && *r.Controller {
			return true
		}
	}
	return false
}

// Addresses of a Gateway's Service, as Provisioned describes them.
func Addresses(svc *corev1.Service) []gwv1.GatewayStatusAddress {
	ip, host := gwv1.IPAddressType, gwv1.HostnameAddressType
	var out []gwv1.GatewayStatusAddress
	for _, in := range svc.Status.LoadBalancer.Ingress {
		switch {
		case in.IP != "":
			out = append(out, gwv1.GatewayStatusAddress{Type: &ip, Value: in.IP})
		case in.Hostname != "":
			out = append(out, gwv1.GatewayStatusAddress{Type: &host, Value: in.Hostname})
		}
	}
	if len(out) > 0 || svc.Spec.Type == corev1.ServiceTypeLoadBalancer {
		// a load balancer's Service has no address for clients outside
		// the cluster until it assigns one: none is published (and the
		// Gateway is not Programmed) rather than the unreachable cluster IP
		return out
	}
	ips := svc.Spec.ClusterIPs
	if len(ips) == 0 && svc.Spec.ClusterIP != "" {
		ips = []string{svc.Spec.ClusterIP}
	}
	for _, a := range ips {
		if a != corev1.ClusterIPNone {
			out = append(out, gwv1.GatewayStatusAddress{Type: &ip, Value: a})
		}
	}
	return out
}
