package resolve

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// deltaState is what a resolution keeps for the next one to resolve a
// route change incrementally (resolveRoutes). At issue #17's scale a round
// after one route changed still walked 20,000 routes and 10,000 Services
// (about 200 ms on 2 cores) to rebuild the few Service ports the route
// attaches to. A resolution keeps it only when every route has a
// resourceVersion, no two routes share a kind, namespace and name, and
// the regex budget dropped no rule. Nothing in it is modified once its
// Output is returned.
type deltaState struct {
	// attached are the routes as attached, by kind, namespace and name.
	attached *layered[routeKey, *route]
	// claims are the claims on every claimed Service port.
	claims *layered[portKey, []claim]
	// clusterRefs counts the uses of every cluster: each registration
	// by a route's compilation, and one per meshed Service port (its
	// default cluster). A cluster is in the policy while it has a use.
	clusterRefs map[string]int
	// patterns are the distinct regular expressions of the programmed
	// routes' rules.
	patterns map[string]patternUse
	// regexBudget is the routes' share of the node budget (what the
	// authorization policies left).
	regexBudget int
	// services and clusters are what every node with workloads gets.
	services []*weftv1.ServicePort
	clusters []*weftv1.Cluster
}

// patternUse counts the programmed rules that use one regular expression,
// and its program size.
type patternUse struct{ users, size int }

func keyOf(rt *route) routeKey { return routeKey{rt.kind, rt.ns, rt.name} }

// newDeltaState is the state a full resolution keeps, nil when the next
// one cannot build on it (see deltaState).
func (r *resolver) newDeltaState(routes []*route, claims portClaims, dropped bool, services []*weftv1.ServicePort, clusters []*weftv1.Cluster) *deltaState {
	if dropped || r.clusterRefs == nil {
		return nil
	}
	st := &deltaState{attached: newLayered[routeKey, *route](len(routes)), claims: layeredOf(claims), clusterRefs: r.clusterRefs,
		patterns: map[string]patternUse{}, regexBudget: r.ix.opts.regexBudget() - r.authzRegex, services: services, clusters: clusters}
	for _, rt := range routes {
		k := keyOf(rt)
		if rt.compiled == nil || rt.compiled.resourceVersion == "" {
			return nil
		}
		if _, dup := st.attached.get(k); dup {
			return nil
		}
		st.attached.set(k, rt)
		st.countPatterns(rt, 1)
	}
	return st
}

// countPatterns adds d users to the patterns of rt's rules, when rt is
// programmed (fitRegexBudget counts those).
func (st *deltaState) countPatterns(rt *route, d int) {
	if !rt.programmed() {
		return
	}
	for _, cr := range rt.rules {
		for p, n := range cr.patterns {
			u := st.patterns[p]
			u.users += d
			u.size = n
			if u.users <= 0 {
				delete(st.patterns, p)
			} else {
				st.patterns[p] = u
			}
		}
	}
}

func (st *deltaState) regexTotal() int {
	total := 0
	for _, u := range st.patterns {
		total += u.size
	}
	return total
}

// routeDelta is what changed among the routes since the reused resolution.
type routeDelta struct {
	// changed are the new compilations (attachable), in input order.
	changed []*route
	// gone are the keys whose earlier compilation is replaced or deleted.
	gone []routeKey
	// routes are this resolution's compiled routes (Output.routes).
	routes compiledRoutes
}

// resolveRoutes is Resolve when nothing but routes, and the EndpointSlices
// of the Services in reuse.StaleServices, changed since reuse.Previous was
// resolved (the caller knows: Reuse.OnlyRoutes), built on what the
// previous resolution kept (deltaState). It compiles the routes whose
// object changed and attaches again only the Service ports they claimed
// before or claim now, with every route that claims one of those ports
// (and, in turn, the ports those claim): attachment is decided per port,
// so every other port, route status and cluster stays as it was. ok is
// false when that does not hold or cannot be known (the regex budget
// would drop a rule, a port stops or starts being meshed, a policy
// applies to a port's Service, ...): resolve in full.
func resolveRoutes(in *Input) (out Output, ok bool) {
	reuse := in.Reuse
	prev := reuse.Previous
	st := prev.delta
	r := &resolver{ix: newIndex(in), clusters: map[string]*clusterSource{}, clusterNames: map[svcPort]string{}, ids: map[objKey]string{}}
	r.policies = r.indexPolicies(in.BackendTrafficPolicies)
	r.prevRoutes, r.prevPorts, r.prevStatuses = reuse.routes, reuse.ports, reuse.statuses
	d, ok := r.routeChanges(in)
	if !ok {
		return Output{}, false
	}
	routes, affected, inR := r.affected(st, d)
	slices.SortStableFunc(routes, compareRoutes)
	ports, claims := r.attach(routes, len(affected))
	for pk := range claims {
		if !affected[pk] {
			return Output{}, false // cannot be: every port a route claims is affected
		}
	}
	next := &deltaState{attached: st.attached.derive(), claims: st.claims.derive(), patterns: maps.Clone(st.patterns), regexBudget: st.regexBudget}
	r.nextStatuses = reuse.statuses.derive()
	for k := range inR {
		if old := st.attached.at(k); old != nil {
			next.countPatterns(old, -1)
			next.attached.del(k)
			r.nextStatuses.del(old.compiled)
		}
	}
	for _, rt := range routes {
		next.countPatterns(rt, 1)
		next.attached.set(keyOf(rt), rt)
	}
	if next.regexTotal() > next.regexBudget {
		return Output{}, false // the budget drops a rule: its order is global
	}
	for pk := range affected {
		if cs := claims[pk]; len(cs) > 0 {
			next.claims.set(pk, cs)
		} else {
			next.claims.del(pk)
		}
	}
	nextPorts, ok := r.rebuildPorts(reuse.ports, ports, affected, st, next)
	if !ok {
		return Output{}, false
	}
	if next.clusterRefs, next.clusters, ok = r.recountClusters(st, d, reuse); !ok {
		return Output{}, false
	}
	out = *prev
	out.routes, out.ports, out.delta, out.maps = d.routes, nextPorts, next, r.ix.maps()
	out.statuses = r.nextStatuses
	out.Statuses = r.patchStatuses(prev.Statuses, routes, d)
	out.Nodes = make(map[string]*weftv1.NodePolicy, len(prev.Nodes))
	same := sameSlice(next.services, st.services) && sameSlice(next.clusters, st.clusters)
	for n, p := range prev.Nodes {
		if len(p.Workloads) == 0 || same {
			out.Nodes[n] = p
			continue
		}
		np := shallowCopy(p)
		np.Services, np.Clusters = next.services, next.clusters
		out.Nodes[n] = np
	}
	return out, true
}

func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// routeChanges compiles the routes whose object is not the one the reused
// resolution compiled (by UID and resourceVersion) and finds the deleted
// ones; false when a route has no resourceVersion or two routes share a
// key.
//
// The source lists each kind sorted by namespace and name. Then a key is
// unique when each route's is above the one before, and a deleted route is
// one a binary search does not find: no set of the 20,000 keys is built
// each round. Listings in another order are checked with that set.
func (r *resolver) routeChanges(in *Input) (routeDelta, bool) {
	d := routeDelta{routes: r.prevRoutes.derive()}
	n := len(in.HTTPRoutes) + len(in.GRPCRoutes) + len(in.TCPRoutes)
	var present map[routeKey]bool
	if !strictlySorted(in.HTTPRoutes, httpMeta) || !strictlySorted(in.GRPCRoutes, grpcMeta) || !strictlySorted(in.TCPRoutes, tcpMeta) {
		present = make(map[routeKey]bool, n)
	}
	visit := func(kind routeKind, m *metav1.ObjectMeta, compile func() *route) bool {
		k := routeKey{kind, m.Namespace, m.Name}
		if m.ResourceVersion == "" || present[k] {
			return false
		}
		if present != nil {
			present[k] = true
		}
		c := r.prevRoutes.at(k)
		if c != nil && c.resourceVersion == m.ResourceVersion && c.uid == m.UID {
			return true
		}
		if c != nil {
			d.gone = append(d.gone, k)
		}
		r.recording, r.recorded = true, nil
		rt := compile()
		nc := &compiledRoute{uid: m.UID, resourceVersion: m.ResourceVersion, rt: rt, clusters: r.recorded}
		r.recording, r.recorded = false, nil
		d.routes.set(k, nc)
		d.changed = append(d.changed, rt.attachable(nc))
		return true
	}
	for _, hr := range in.HTTPRoutes {
		if !visit(kindHTTP, &hr.ObjectMeta, func() *route { return r.compileHTTPRoute(hr) }) {
			return d, false
		}
	}
	for _, gr := range in.GRPCRoutes {
		if !visit(kindGRPC, &gr.ObjectMeta, func() *route { return r.compileGRPCRoute(gr) }) {
			return d, false
		}
	}
	for _, tr := range in.TCPRoutes {
		if !visit(kindTCP, &tr.ObjectMeta, func() *route { return r.compileTCPRoute(tr) }) {
			return d, false
		}
	}
	if d.routes.len() > n {
		listed := func(k routeKey) bool {
			if present != nil {
				return present[k]
			}
			switch k.kind {
			case kindHTTP:
				return listedIn(in.HTTPRoutes, httpMeta, k)
			case kindGRPC:
				return listedIn(in.GRPCRoutes, grpcMeta, k)
			default:
				return listedIn(in.TCPRoutes, tcpMeta, k)
			}
		}
		var deleted []routeKey // collected first: d.routes must not change while all walks it
		for k := range d.routes.all() {
			if !listed(k) {
				deleted = append(deleted, k)
			}
		}
		for _, k := range deleted {
			d.routes.del(k)
		}
		d.gone = append(d.gone, deleted...)
	}
	return d, true
}

func httpMeta(o *gwv1.HTTPRoute) *metav1.ObjectMeta { return &o.ObjectMeta }
func grpcMeta(o *gwv1.GRPCRoute) *metav1.ObjectMeta { return &o.ObjectMeta }
func tcpMeta(o *gwv1.TCPRoute) *metav1.ObjectMeta   { return &o.ObjectMeta }
func compareMeta(a, b *metav1.ObjectMeta) int {
	return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// strictlySorted reports whether l is sorted by namespace and name with no
// key twice.
func strictlySorted[T any](l []*T, meta func(*T) *metav1.ObjectMeta) bool {
	for i := 1; i < len(l); i++ {
		if compareMeta(meta(l[i-1]), meta(l[i])) >= 0 {
			return false
		}
	}
	return true
}

// listedIn reports whether l, strictly sorted, has the route k names.
func listedIn[T any](l []*T, meta func(*T) *metav1.ObjectMeta, k routeKey) bool {
	want := metav1.ObjectMeta{Namespace: k.ns, Name: k.name}
	_, ok := slices.BinarySearchFunc(l, &want, func(o *T, w *metav1.ObjectMeta) int { return compareMeta(meta(o), w) })
	return ok
}

// affected are the routes to attach again (the changed ones, and fresh
// copies of the unchanged ones that claim an affected port) and the
// affected ports: those the changed and deleted routes claimed, those the
// changed ones may claim now, and every port a route to attach again
// claims. inR holds the keys of those routes and of the deleted ones.
func (r *resolver) affected(st *deltaState, d routeDelta) (routes []*route, ports map[portKey]bool, inR map[routeKey]bool) {
	ports, inR = map[portKey]bool{}, map[routeKey]bool{}
	var queue []portKey
	add := func(pks []portKey) {
		for _, pk := range pks {
			if !ports[pk] {
				ports[pk] = true
				queue = append(queue, pk)
			}
		}
	}
	for _, k := range d.gone {
		inR[k] = true
		if old := st.attached.at(k); old != nil { // always: the state has every compiled route
			add(old.claimed())
		}
	}
	for _, rt := range d.changed {
		inR[keyOf(rt)] = true
		routes = append(routes, rt)
		for _, ref := range rt.parentRefs {
			if svc, _ := isServiceRef(ref); svc {
				add(r.resolveParent(rt, ref).ports)
			}
		}
	}
	for len(queue) > 0 {
		pk := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		for _, c := range st.claims.at(pk) {
			k := keyOf(c.rt)
			if inR[k] {
				continue
			}
			inR[k] = true
			routes = append(routes, c.rt.compiled.rt.attachable(c.rt.compiled))
			add(c.rt.claimed())
		}
	}
	return routes, ports, inR
}

// rebuildPorts builds the affected Service ports again (or takes them
// over, reusedPort) into a copy of the reused resolution's ports, and
// next.services; false when a port stops or starts being meshed (which
// may move a duplicated cluster IP to another Service) or a policy applies
// to its Service (the policy's status names the ports it made sticky).
func (r *resolver) rebuildPorts(prevPorts builtPorts, ports map[portKey]*portState, affected map[portKey]bool, st, next *deltaState) (builtPorts, bool) {
	keys := slices.SortedFunc(maps.Keys(affected), comparePortKeys)
	nextPorts := prevPorts
	next.services = st.services
	for _, pk := range keys {
		ps := ports[pk]
		old, was := prevPorts.get(pk)
		if was != (ps != nil || r.ix.enrolled[pk.ns]) {
			return nil, false
		}
		if !was {
			continue
		}
		svc := r.ix.services[objKey{pk.ns, pk.name}]
		sp := tcpPort(svc, pk.port)
		if sp == nil || r.policies.entryFor(objKey{pk.ns, pk.name}) != nil {
			return nil, false
		}
		b, ok := r.reusedPort(pk, ps, old.sp.Vips)
		if !ok {
			b = builtPort{r.servicePort(svc, *sp, old.sp.Vips, ps), sourceOf(ps)}
		}
		if b.sp == old.sp && b.from == old.from {
			continue
		}
		i, found := slices.BinarySearchFunc(next.services, pk, func(s *weftv1.ServicePort, pk portKey) int {
			return comparePortKeys(portKey{s.Namespace, s.Name, int32(s.Port)}, pk)
		})
		if !found {
			return nil, false
		}
		if sameSlice(next.services, st.services) {
			next.services = slices.Clone(st.services)
			nextPorts = prevPorts.derive()
		}
		next.services[i] = b.sp
		nextPorts.set(pk, b)
	}
	return nextPorts, true
}

// recountClusters counts the uses of clusters again, without the earlier
// compilations of the changed and deleted routes and with the new ones,
// and returns the clusters with the ones no longer used left out, the
// newly used ones built, and those of the stale Services built again.
func (r *resolver) recountClusters(st *deltaState, d routeDelta, reuse *Reuse) (map[string]int, []*weftv1.Cluster, bool) {
	refs := st.clusterRefs
	touched := map[string]bool{}
	count := func(uses []clusterUse, delta int) bool {
		for _, u := range uses {
			name, ok := r.useName(u)
			if !ok {
				return false
			}
			if len(touched) == 0 {
				refs = maps.Clone(st.clusterRefs)
			}
			touched[name] = true
			if refs[name] += delta; refs[name] == 0 {
				delete(refs, name)
			}
		}
		return true
	}
	for _, k := range d.gone {
		old := st.attached.at(k)
		if old == nil || !count(old.compiled.clusters, -1) {
			return nil, nil, false
		}
	}
	for _, rt := range d.changed {
		if !count(rt.compiled.clusters, 1) {
			return nil, nil, false
		}
	}
	var added []*weftv1.Cluster
	removed := map[string]bool{}
	for name := range touched {
		was, is := st.clusterRefs[name] > 0, refs[name] > 0
		switch {
		case refs[name] < 0:
			return nil, nil, false
		case was && !is:
			removed[name] = true
		case !was && is:
			src := r.clusters[name]
			if src == nil {
				return nil, nil, false
			}
			added = append(added, r.buildCluster(name, src, reuse, nil))
		}
	}
	clusters := st.clusters
	if len(added) > 0 || len(removed) > 0 {
		byName := func(a, b *weftv1.Cluster) int { return strings.Compare(a.Name, b.Name) }
		slices.SortFunc(added, byName)
		merged := make([]*weftv1.Cluster, 0, len(clusters)+len(added)-len(removed))
		for _, c := range clusters {
			for len(added) > 0 && byName(added[0], c) < 0 {
				merged, added = append(merged, added[0]), added[1:]
			}
			if !removed[c.Name] {
				merged = append(merged, c)
			}
		}
		clusters = append(merged, added...)
	}
	if len(reuse.StaleServices) > 0 {
		var ok bool
		if clusters, ok = r.staleClusters(clusters, reuse.StaleServices); !ok {
			return nil, nil, false
		}
	}
	return refs, clusters, true
}

// useName is the name of the cluster a compilation registered; false when
// its XBackend is gone (which Reuse.OnlyRoutes rules out).
func (r *resolver) useName(u clusterUse) (string, bool) {
	if !u.xbackend {
		return serviceClusterName(u.ns, u.name, u.port), true
	}
	xb := r.ix.backends[objKey{u.ns, u.name}]
	if xb == nil {
		return "", false
	}
	return xbackendClusterName(xb), true
}

// patchStatuses is the reused resolution's statuses with those of the
// routes attached again (routes) built again, or taken over where they
// hold, and those of the deleted routes left out.
func (r *resolver) patchStatuses(prev []ObjectStatus, routes []*route, d routeDelta) []ObjectStatus {
	out := slices.Clone(prev)
	find := func(kind, ns, name string) (int, bool) {
		return slices.BinarySearchFunc(prev, ObjectStatus{Kind: kind, Namespace: ns, Name: name}, CompareStatuses)
	}
	drop := map[int]bool{}
	var added []ObjectStatus
	for _, k := range d.gone {
		if d.routes.at(k) != nil {
			continue // changed, not deleted
		}
		if i, ok := find(k.kind.String(), k.ns, k.name); ok {
			drop[i] = true
		}
	}
	for _, rt := range routes {
		os := ObjectStatus{Kind: rt.kind.String(), Namespace: rt.ns, Name: rt.name, Generation: rt.generation, Parents: r.routeStatus(rt)}
		i, ok := find(os.Kind, os.Namespace, os.Name)
		switch {
		case ok && len(os.Parents) > 0:
			out[i] = os
		case ok:
			drop[i] = true
		case len(os.Parents) > 0:
			added = append(added, os)
		}
	}
	if len(drop) == 0 && len(added) == 0 {
		return out
	}
	kept := out[:0]
	for i, s := range out {
		if !drop[i] {
			kept = append(kept, s)
		}
	}
	out = append(kept, added...)
	slices.SortFunc(out, CompareStatuses)
	return out
}
