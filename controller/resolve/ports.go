package resolve

import (
	"slices"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// builtPorts are the Service ports one resolution built, with what each
// was built from, for a later resolution to take instead of building them
// again (Reuse.RoutesValid): after a route change at issue #17's scale
// building 10,000 Service ports, and the push server encoding every one of
// them to find the one that changed, was most of the work. A port taken
// over is the very object of the earlier Output, which the push server
// recognises by its address without encoding it.
type builtPorts = *layered[portKey, builtPort]

type builtPort struct {
	sp *weftv1.ServicePort
	// from is what attached to the port, nil when nothing did.
	from *portSource
}

// portSource is a portState reduced to what its tables are built from:
// the winning kind, the classes and, per class, the routes' compilations
// with the rules they kept.
type portSource struct {
	win       routeKind
	classes   []string
	producer  []routeRules
	consumers map[string][]routeRules
}

type routeRules struct {
	compiled *compiledRoute
	rules    []*compiledRule
}

func sourceOf(ps *portState) *portSource {
	if ps == nil {
		return nil
	}
	src := &portSource{win: ps.win, classes: ps.classes, producer: routeRulesOf(ps.producer), consumers: make(map[string][]routeRules, len(ps.consumers))}
	for class, rts := range ps.consumers {
		src.consumers[class] = routeRulesOf(rts)
	}
	return src
}

func routeRulesOf(rts []*route) []routeRules {
	out := make([]routeRules, len(rts))
	for i, rt := range rts {
		out[i] = routeRules{rt.compiled, rt.rules}
	}
	return out
}

// builds reports whether ps builds the tables the port built from s was
// built with: the same winning kind and classes, and the same compilations (the same
// objects, so unchanged ones taken from an earlier resolution) keeping the
// same rules, in the same order.
func (s *portSource) builds(ps *portState) bool {
	if s == nil || ps == nil {
		return s == nil && ps == nil
	}
	if s.win != ps.win || !slices.Equal(s.classes, ps.classes) || len(s.consumers) != len(ps.consumers) || !sameRules(s.producer, ps.producer) {
		return false
	}
	for class, rts := range ps.consumers {
		if !sameRules(s.consumers[class], rts) {
			return false
		}
	}
	return true
}

func sameRules(a []routeRules, b []*route) bool {
	if len(a) != len(b) {
		return false
	}
	for i, rt := range b {
		if rt.compiled == nil || a[i].compiled != rt.compiled || !slices.Equal(a[i].rules, rt.rules) {
			return false
		}
	}
	return true
}

// reusedPort is the earlier resolution's port k when it was built from
// what ps holds now, for the same addresses, and no policy applies to its
// Service (a policy's table records which ports it made sticky, for its
// status); false when the port is to be built.
func (r *resolver) reusedPort(k portKey, ps *portState, vips []string) (builtPort, bool) {
	b, ok := r.prevPorts.get(k)
	if !ok || r.policies.entryFor(objKey{k.ns, k.name}) != nil || !b.from.builds(ps) || !slices.Equal(b.sp.Vips, vips) {
		return builtPort{}, false
	}
	return b, true
}
