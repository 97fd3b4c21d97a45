package gateway

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// checkAddresses decides what spec.addresses asks for and whether the
// provisioned data plane has it. Weft's data plane is reached through a
// Service, so it can be asked for IP addresses (with a value: that
// address; without: any) and nothing else; any other type makes the
// Gateway UnsupportedAddress. The addresses provisioning reports are
// published as they are.
func (gs *gatewayState) checkAddresses() {
	prov := gs.ix.provisioned[gs.key()]
	if prov != nil {
		gs.addresses = slices.Clone(prov.Addresses)
	}
	var notUsable, notAssigned []string
	for i, a := range gs.gw.Spec.Addresses {
		typ := gwv1.IPAddressType
		if a.Type != nil && *a.Type != "" {
			typ = *a.Type
		}
		if typ != gwv1.IPAddressType {
			if gs.invalid == nil {
				gs.invalid = &reason{string(gwv1.GatewayReasonUnsupportedAddress), fmt.Sprintf("spec.addresses[%d] has type %q; Weft's gateway can only be given addresses of type IPAddress (with or without a value), so remove it or change its type", i, typ)}
			}
			continue
		}
		if a.Value == "" {
			if prov != nil && !hasIP(prov.Addresses) {
				notAssigned = append(notAssigned, fmt.Sprintf("spec.addresses[%d] asks for an IP address and none is assigned yet", i))
			}
			continue
		}
		if _, err := netip.ParseAddr(a.Value); err != nil {
			notUsable = append(notUsable, fmt.Sprintf("spec.addresses[%d] value %q is not an IP address; fix it or remove it", i, a.Value))
			continue
		}
		if prov == nil {
			continue
		}
		if why, ok := prov.Unusable[a.Value]; ok {
			notUsable = append(notUsable, fmt.Sprintf("spec.addresses[%d] %s cannot be used: %s; remove it or request another address", i, a.Value, why))
		} else if !slices.ContainsFunc(prov.Addresses, func(s gwv1.GatewayStatusAddress) bool { return s.Value == a.Value }) {
			notAssigned = append(notAssigned, fmt.Sprintf("spec.addresses[%d] %s is not assigned to the data plane yet", i, a.Value))
		}
	}
	switch {
	case len(notUsable) > 0:
		gs.unprogrammed = &reason{string(gwv1.GatewayReasonAddressNotUsable), sentences(notUsable...)}
	case prov == nil:
		gs.unprogrammed = &reason{string(gwv1.GatewayReasonPending), "the Gateway's data plane is being provisioned; it has no address yet"}
	case len(notAssigned) > 0:
		gs.unprogrammed = &reason{string(gwv1.GatewayReasonAddressNotAssigned), sentences(notAssigned...)}
	case len(prov.Addresses) == 0:
		gs.unprogrammed = &reason{string(gwv1.GatewayReasonAddressNotAssigned), "the data plane's Service has no address yet (a load balancer may still be assigning one); check the Service and the load balancer"}
	case prov.Refused != "":
		gs.unprogrammed = &reason{string(gwv1.GatewayReasonInvalid), fmt.Sprintf("the data plane (%s) refused the Gateway's configuration and keeps serving the last one it accepted: %s", cmp.Or(prov.Workload, "its Deployment"), prov.Refused)}
	case prov.ReadyPods == 0:
		gs.unprogrammed = &reason{string(gwv1.GatewayReasonPending), fmt.Sprintf("no pod of the data plane (%s) is ready yet, so nothing serves the Gateway; a pod is ready once it has applied the Gateway's configuration: check its pods and their logs", cmp.Or(prov.Workload, "its Deployment"))}
	}
}

func hasIP(as []gwv1.GatewayStatusAddress) bool {
	return slices.ContainsFunc(as, func(a gwv1.GatewayStatusAddress) bool {
		_, err := netip.ParseAddr(a.Value)
		return (a.Type == nil || *a.Type == gwv1.IPAddressType) && err == nil
	})
}
