package resolve

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
)

// compiledRoutes are the routes one resolution compiled, as compiled
// (before attachment), for a later resolution to take instead of
// compiling them again (Reuse.RoutesValid): at issue #17's scale compiling
// 20,000 routes was half of the resolution that follows a route change,
// which changes one of them.
type compiledRoutes = *layered[routeKey, *compiledRoute]

type routeKey struct {
	kind     routeKind
	ns, name string
}

// compiledRoute is one route as compiled from one version of its object.
type compiledRoute struct {
	// uid and resourceVersion of the object compiled: the API server
	// changes the resourceVersion on every write.
	uid             types.UID
	resourceVersion string
	// rt is never attached: attachable copies are.
	rt *route
	// clusters are the clusters compiling it registered, in order: a
	// resolution that takes the route registers them again.
	clusters []clusterUse
}

// clusterUse names a cluster compiling a route registered: a Service port
// (by number: the first TCP port with it, as backend references resolve)
// or an XBackend.
type clusterUse struct {
	ns, name string
	port     int32
	xbackend bool
}

// compiled is the route compiled from the object m (of kind), by compile
// or, when the reused resolution compiled the same version of it, taken
// from there. Either way it is kept for the next resolution.
func (r *resolver) compiled(kind routeKind, m *metav1.ObjectMeta, compile func() *route) *route {
	k := routeKey{kind, m.Namespace, m.Name}
	if c := r.prevRoutes.at(k); c != nil && m.ResourceVersion != "" && c.resourceVersion == m.ResourceVersion && c.uid == m.UID && r.registerAgain(c.clusters) {
		r.nextRoutes.set(k, c)
		return c.rt.attachable(c)
	}
	r.recording, r.recorded = true, nil
	rt := compile()
	c := &compiledRoute{uid: m.UID, resourceVersion: m.ResourceVersion, rt: rt, clusters: r.recorded}
	r.recording, r.recorded = false, nil
	if m.ResourceVersion != "" {
		r.nextRoutes.set(k, c)
	}
	return rt.attachable(c)
}

// attachable is a copy of a compiled route (rt, compiled as c) that
// attachment and the regex budget may change (they set parents, keep some
// rules and append to dropped) without touching rt.
func (rt *route) attachable(c *compiledRoute) *route {
	cp := *rt
	cp.compiled = c
	cp.rules = slices.Clip(rt.rules) // never modified in place (fitRegexBudget copies)
	cp.dropped = slices.Clip(rt.dropped)
	cp.parents = nil
	return &cp
}

// record notes a cluster registration while a route is compiled.
func (r *resolver) record(u clusterUse) {
	if r.recording {
		r.recorded = append(r.recorded, u)
	}
}

// registerAgain registers the clusters of a route compiled by an earlier
// resolution, with this resolution's Services and XBackends; false, with
// nothing registered, when one is gone (the caller said they did not
// change; the route is then compiled again).
func (r *resolver) registerAgain(uses []clusterUse) bool {
	// each use looked up once; most routes have a few (no allocation)
	type found struct {
		svc *corev1.Service
		sp  *corev1.ServicePort
		xb  *gwxv1a1.XBackend
	}
	var buf [8]found
	all := buf[:0]
	for _, u := range uses {
		if u.xbackend {
			xb := r.ix.backends[objKey{u.ns, u.name}]
			if xb == nil {
				return false
			}
			all = append(all, found{xb: xb})
			continue
		}
		svc := r.ix.services[objKey{u.ns, u.name}]
		sp := tcpPort(svc, u.port)
		if sp == nil {
			return false
		}
		all = append(all, found{svc: svc, sp: sp})
	}
	for _, f := range all {
		if f.xb != nil {
			r.xbackendCluster(f.xb)
		} else {
			r.serviceCluster(f.svc, *f.sp)
		}
	}
	return true
}
