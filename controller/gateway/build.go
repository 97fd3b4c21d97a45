package gateway

import (
	"maps"
	"slices"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// buildIR is the data plane configuration of an accepted Gateway: its
// programmable listeners by port, what each serves per hostname, and the
// clusters and backend TLS settings the tables need.
func (r *resolution) buildIR(gs *gatewayState) *Gateway {
	g := &Gateway{Namespace: gs.gw.Namespace, Name: gs.gw.Name, BackendTLS: map[string]*BackendTLS{}, ClientCertificate: gs.clientCert}
	clusters := map[string]*weftv1.Cluster{}
	// originate holds the clusters the gateway may originate TLS to:
	// those of HTTP and gRPC tables and of terminated TLS listeners, never
	// those of TCP listeners or passthrough (the client's TLS goes through).
	originate := map[string]bool{}
	ports := map[int32]*Port{}
	for _, ls := range gs.listeners {
		if !ls.usable() {
			continue
		}
		l := Listener{Name: ls.name(), Protocol: ls.spec.Protocol, Hostname: ls.hostname, TLSMode: ls.tlsMode, ClientValidation: ls.validation}
		if ls.tlsMode == gwv1.TLSModeTerminate {
			l.Certificates = ls.certs
		}
		l.VirtualHosts = r.virtualHosts(ls, clusters)
		if ls.spec.Protocol != gwv1.TCPProtocolType && ls.tlsMode != gwv1.TLSModePassthrough {
			for _, vh := range l.VirtualHosts {
				for _, t := range vh.Tables {
					for _, c := range tableClusters(t) {
						originate[c] = true
					}
				}
			}
		}
		p := ports[ls.spec.Port]
		if p == nil {
			p = &Port{Port: ls.spec.Port}
			ports[ls.spec.Port] = p
		}
		p.Listeners = append(p.Listeners, l)
	}
	for _, n := range slices.Sorted(maps.Keys(ports)) {
		p := ports[n]
		slices.SortStableFunc(p.Listeners, func(a, b Listener) int { return compareHostnames(a.Hostname, b.Hostname) })
		g.Ports = append(g.Ports, *p)
	}
	for _, n := range slices.Sorted(maps.Keys(clusters)) {
		g.Clusters = append(g.Clusters, clusters[n])
	}
	r.backendTLS(g, originate)
	return g
}

// virtualHosts groups what a listener serves by hostname (the
// intersections of its hostname with the routes'), most specific first.
// Within a hostname, routes are split into tiers by the route hostname
// the intersection came from, most specific first, so that an exact route
// hostname beats a wildcard one before any match is compared; each tier
// is one table of the rule compiler (route precedence inside it).
func (r *resolution) virtualHosts(ls *listenerState, clusters map[string]*weftv1.Cluster) []VirtualHost {
	byHost := map[string]map[string][]*routeObj{}
	for _, la := range ls.claims {
		if la.dropped || !la.ps.accepted(la.rt) {
			continue
		}
		for _, h := range la.hosts {
			tiers := byHost[h.host]
			if tiers == nil {
				tiers = map[string][]*routeObj{}
				byHost[h.host] = tiers
			}
			if !slices.Contains(tiers[h.original], la.rt) {
				tiers[h.original] = append(tiers[h.original], la.rt)
			}
		}
	}
	var out []VirtualHost
	for _, host := range slices.SortedFunc(maps.Keys(byHost), compareHostnames) {
		vh := VirtualHost{Hostname: host}
		tiers := byHost[host]
		for _, orig := range slices.SortedFunc(maps.Keys(tiers), compareHostnames) {
			table, cs, _ := r.compile(tiers[orig])
			if table != nil {
				vh.Tables = append(vh.Tables, table)
			}
			for _, c := range cs {
				clusters[c.GetName()] = c
			}
		}
		out = append(out, vh)
	}
	return out
}

// backendTLS adds the BackendTLSPolicy settings of the clusters the
// gateway may originate TLS to.
func (r *resolution) backendTLS(g *Gateway, have map[string]bool) {
	for k, p := range r.policies.applies {
		svc := r.ix.service(k.svc)
		if svc == nil {
			continue
		}
		for _, port := range svc.Spec.Ports {
			name := clusterName(k.svc, port.Port)
			if have[name] && r.policies.forPort(k.svc, port) == p {
				t := p.tls
				g.BackendTLS[name] = &t
			}
		}
	}
}
