package resolve

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	discoveryv1 "k8s.io/api/discovery/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// resolveEndpoints is Resolve when only the EndpointSlices of the Services
// in reuse.StaleServices changed since reuse.Previous was resolved (the
// caller knows: Reuse.OnlyEndpoints). Only clusters read EndpointSlices,
// so everything else of the previous Output holds: the clusters of the
// stale Services are built again and every node that has clusters gets
// them; routes are not compiled again. ok is false when the previous
// Output does not fit (a stale Service or port it has a cluster of is
// gone): resolve in full.
func resolveEndpoints(in *Input) (out Output, ok bool) {
	reuse := in.Reuse
	prev := reuse.Previous
	var old []*weftv1.Cluster
	for _, p := range prev.Nodes {
		if len(p.Clusters) > 0 {
			old = p.Clusters
			break
		}
	}
	out = *prev
	if prev.maps != nil {
		// the Services did not change; the EndpointSlices did
		out.maps = &listingMaps{services: prev.maps.services}
	}
	if len(old) == 0 {
		// no node has clusters; the state's would be stale
		out.delta = nil
		return out, true
	}
	// index only the namespaces the stale Services' endpoints are in: a
	// round of endpoint churn touches a few of them, not 100k pods
	only := map[string]bool{}
	for k := range reuse.StaleServices {
		ns, _, _ := strings.Cut(k, "/")
		only[ns] = true
	}
	for _, es := range in.EndpointSlices {
		if !reuse.StaleServices[es.Namespace+"/"+es.Labels[discoveryv1.LabelServiceName]] {
			continue
		}
		for _, ep := range es.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.Namespace != "" {
				only[ep.TargetRef.Namespace] = true
			}
		}
	}
	r := &resolver{ix: newIndexIn(in, only), clusters: map[string]*clusterSource{}, clusterNames: map[svcPort]string{}, ids: map[objKey]string{}}
	clusters, ok := r.staleClusters(old, reuse.StaleServices)
	if !ok {
		return Output{}, false
	}
	out.Nodes = make(map[string]*weftv1.NodePolicy, len(prev.Nodes))
	for n, p := range prev.Nodes {
		if len(p.Clusters) == 0 {
			out.Nodes[n] = p
			continue
		}
		out.Nodes[n] = withClusters(p, clusters)
	}
	if prev.delta != nil {
		st := *prev.delta
		st.clusters = clusters
		out.delta = &st
	}
	return out, true
}

// staleClusters is a copy of old with the clusters of the stale Services
// ("namespace/name") built again; false when a stale Service or port it
// has a cluster of is gone.
func (r *resolver) staleClusters(old []*weftv1.Cluster, stale map[string]bool) ([]*weftv1.Cluster, bool) {
	clusters := make([]*weftv1.Cluster, len(old))
	for i, c := range old {
		ns, svc, port, isSvc := serviceCluster(c.GetName())
		if !isSvc || !stale[ns+"/"+svc] {
			clusters[i] = c
			continue
		}
		s := r.ix.services[objKey{ns, svc}]
		sp := tcpPort(s, int32(port))
		if sp == nil {
			return nil, false
		}
		clusters[i] = &weftv1.Cluster{Name: c.GetName(), Protocol: c.GetProtocol(), Endpoints: r.serviceEndpoints(s, *sp)}
	}
	return clusters, true
}

// withClusters is a shallow copy of p (shallowCopy) with clusters
// instead of its own.
func withClusters(p *weftv1.NodePolicy, clusters []*weftv1.Cluster) *weftv1.NodePolicy {
	np := shallowCopy(p)
	np.Clusters = clusters
	return np
}

// shallowCopy is a copy of p that shares every field's value with it
// (whatever fields the proto gains later): the way to change one field of
// a policy that an earlier Output, and so the push server, may hold.
func shallowCopy(p *weftv1.NodePolicy) *weftv1.NodePolicy {
	src := p.ProtoReflect()
	dst := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		dst.Set(fd, v)
		return true
	})
	return proto.Message(dst.Interface()).(*weftv1.NodePolicy)
}

// serviceCluster parses a Service port's cluster name,
// "<namespace>/<service>:<port>"; false for an XBackend's.
func serviceCluster(name string) (ns, svc string, port int, ok bool) {
	ns, rest, ok := strings.Cut(name, "/")
	if !ok || strings.Contains(rest, "/") {
		return "", "", 0, false
	}
	svc, p, ok := strings.Cut(rest, ":")
	if !ok {
		return "", "", 0, false
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", "", 0, false
	}
	return ns, svc, port, true
}
