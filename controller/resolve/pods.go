package resolve

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// resolvePods is Resolve when nothing but the pods reuse.pods lists and
// the EndpointSlices of reuse.StaleServices changed since reuse.Previous
// was resolved (the caller knows: Reuse.OnlyPods). Routes, Service ports
// and route statuses read no pod, so they hold; the workloads of the
// nodes those pods were or are on, the clusters whose endpoints name one
// of them and the authorization policies (which select pods) are resolved
// again. ok is false when the previous Output does not fit: an
// EndpointSelector XBackend (its cluster selects pods), a stale Service
// gone, or no previous resolution state: resolve in full. (So is an
// authorization status or regular expression share that came out
// different, which pods alone cannot change: the share is what the
// routes fit into.)
func resolvePods(in *Input) (out Output, ok bool) {
	reuse := in.Reuse
	prev := reuse.Previous
	if prev.delta == nil || in.ReadsPodReadiness() {
		return Output{}, false
	}
	r := &resolver{ix: newIndex(in), clusters: map[string]*clusterSource{}, clusterNames: map[svcPort]string{}, ids: map[objKey]string{}}
	workloads, invalid := r.workloadsByNode(in.Pods, reuse)
	// a policy selects pods of its own namespace: only the policies of the
	// changed pods' namespaces select anew
	namespaces := map[string]bool{}
	for k := range reuse.pods.keys {
		namespaces[k.ns] = true
	}
	selected, authzStatuses, inForce := r.resolveAuthzIn(in, workloads, namespaces)
	if len(changedAuthzNamespaces(prev.AuthzStatuses, authzStatuses)) > 0 || r.ix.opts.regexBudget()-r.authzRegex != prev.delta.regexBudget {
		return Output{}, false
	}
	// the same policies, the routes fit as they did: which pods of a node
	// each selects may have changed
	authz := map[string][]*weftv1.AuthzPolicy{}
	for n, p := range prev.Nodes {
		if ps, changed := mergeAuthz(p.Authz, selected[n], namespaces); changed {
			authz[n] = ps
		}
	}
	stale := map[string]bool{}
	for k := range r.servicesOfPods(reuse.pods) {
		stale[k.ns+"/"+k.name] = true
	}
	for k := range reuse.StaleServices {
		stale[k] = true
	}
	clusters, ok := r.staleClusters(prev.delta.clusters, stale)
	if !ok {
		return Output{}, false
	}
	tunnels := prevTunnels(prev)
	if tunnels == nil {
		tunnels = nodeTunnels(in.Nodes, r.ix.opts.TunnelPort)
	}
	out = *prev
	out.InvalidMTLS, out.AuthzInForce = invalid, inForce
	if prev.maps != nil {
		// the Services did not change; the EndpointSlices may have
		out.maps = &listingMaps{services: prev.maps.services}
	}
	out.Nodes = make(map[string]*weftv1.NodePolicy, len(prev.Nodes))
	for n, p := range prev.Nodes {
		ps, authzChanged := authz[n]
		if !reuse.pods.nodes[n] && !authzChanged {
			// its workloads and authorization are as they were
			if len(p.Clusters) > 0 {
				p = withClusters(p, clusters)
			}
			out.Nodes[n] = p
			continue
		}
		np := shallowCopy(p)
		if authzChanged {
			np.Authz = ps
		}
		np.Workloads = workloads[n]
		// what a node with no enrolled workload does not get (Resolve)
		np.Services, np.Clusters, np.NodeTunnels = nil, nil, nil
		if len(np.Workloads) > 0 {
			np.Services, np.Clusters, np.NodeTunnels = prev.delta.services, clusters, tunnels
		}
		out.Nodes[n] = np
	}
	st := *prev.delta
	st.clusters = clusters
	out.delta = &st
	return out, true
}

// mergeAuthz is a node's policies after a change of pods or policies:
// prev's, but those of the namespaces, which are selected again (selected,
// sorted by name); changed is false when that is prev itself.
func mergeAuthz(prev, selected []*weftv1.AuthzPolicy, namespaces map[string]bool) (ps []*weftv1.AuthzPolicy, changed bool) {
	for _, a := range prev {
		if ns, _, _ := strings.Cut(a.Name, "/"); !namespaces[ns] {
			ps = append(ps, a)
		}
	}
	if len(ps) == len(prev) && len(selected) == 0 {
		return prev, false
	}
	ps = append(ps, selected...)
	slices.SortFunc(ps, func(a, b *weftv1.AuthzPolicy) int { return strings.Compare(a.Name, b.Name) })
	same := slices.EqualFunc(ps, prev, func(a, b *weftv1.AuthzPolicy) bool { return proto.Equal(a, b) })
	if same {
		return prev, false
	}
	return ps, true
}

// prevTunnels is the node tunnels map every node with workloads of out
// shares; nil when none has any.
func prevTunnels(out *Output) map[string]string {
	for _, p := range out.Nodes {
		if len(p.NodeTunnels) > 0 {
			return p.NodeTunnels
		}
	}
	return nil
}

// resolveAuthzOnly is Resolve when nothing but AuthorizationPolicies
// changed since reuse.Previous was resolved (Reuse.OnlyAuthz): routes,
// Services, clusters and workloads hold. Every policy is compiled again
// (for its status); those of the namespaces where a policy's status
// changed select pods again, and the nodes whose policies changed get
// theirs. ok is false when the policies' regular expression share came out
// different (the routes fit into the rest of the budget: resolve in full)
// or there is no previous resolution state.
func resolveAuthzOnly(in *Input) (out Output, ok bool) {
	reuse := in.Reuse
	prev := reuse.Previous
	if prev.delta == nil {
		return Output{}, false
	}
	r := &resolver{ix: newIndex(in)}
	compiled, statuses, inForce := r.compileAuthz(in)
	if r.ix.opts.regexBudget()-r.authzRegex != prev.delta.regexBudget {
		return Output{}, false
	}
	namespaces := changedAuthzNamespaces(prev.AuthzStatuses, statuses)
	selected := r.selectAuthz(in, reuse.Workloads, compiled, namespaces)
	out = *prev
	out.AuthzStatuses, out.AuthzInForce = statuses, inForce
	out.Nodes = make(map[string]*weftv1.NodePolicy, len(prev.Nodes))
	for n, p := range prev.Nodes {
		if ps, changed := mergeAuthz(p.Authz, selected[n], namespaces); changed {
			p = shallowCopy(p)
			p.Authz = ps
		}
		out.Nodes[n] = p
	}
	return out, true
}
