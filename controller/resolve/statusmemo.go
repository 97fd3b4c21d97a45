package resolve

import (
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// builtStatuses are the route statuses one resolution built, by the
// compilation they were built for, for a later resolution to take instead
// of building them again (Reuse.RoutesValid): at issue #17's scale a route
// change rebuilt the conditions and messages of 20,000 routes to change
// one, and the status writer compared all of them condition by condition.
// A status taken over is the very slice of the earlier Output, which the
// writer recognises without comparing.
type builtStatuses = *layered[*compiledRoute, builtStatus]

// builtStatus is one route's status with what it was built from besides
// its compilation (the same object, so the same route version compiled
// against the same Services and namespaces): the rules attachment and the
// regex budget kept and dropped, and per parentRef whether it was
// accepted and which ports it won and lost to other routes.
type builtStatus struct {
	rules   int
	dropped []string
	parents []builtParent
	status  []ParentStatus
}

type builtParent struct {
	accepted *metav1.Condition
	won      []portKey
	lost     []string
}

func statusSource(rt *route, status []ParentStatus) builtStatus {
	b := builtStatus{rules: len(rt.rules), dropped: rt.dropped, parents: make([]builtParent, len(rt.parents)), status: status}
	for i, pr := range rt.parents {
		b.parents[i] = builtParent{pr.accepted, pr.won, pr.lost}
	}
	return b
}

// holds reports whether rt, a copy of the same compilation, builds the
// status b was built with.
func (b *builtStatus) holds(rt *route) bool {
	if len(rt.rules) != b.rules || !slices.Equal(rt.dropped, b.dropped) || len(rt.parents) != len(b.parents) {
		return false
	}
	for i, pr := range rt.parents {
		bp := &b.parents[i]
		if !sameCondition(pr.accepted, bp.accepted) || !slices.Equal(pr.won, bp.won) || !slices.Equal(pr.lost, bp.lost) {
			return false
		}
	}
	return true
}

func sameCondition(a, b *metav1.Condition) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Type == b.Type && a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message
}

// routeStatus is the status of every parentRef of rt, taken from the
// reused resolution when it holds.
func (r *resolver) routeStatus(rt *route) []ParentStatus {
	if rt.compiled == nil {
		return r.buildRouteStatus(rt)
	}
	b, ok := r.prevStatuses.get(rt.compiled)
	if !ok || !b.holds(rt) {
		b = statusSource(rt, r.buildRouteStatus(rt))
	}
	r.nextStatuses.set(rt.compiled, b) // what it holds equals what rt has
	return b.status
}

func (r *resolver) buildRouteStatus(rt *route) []ParentStatus {
	var parents []ParentStatus
	for _, pr := range rt.parents {
		parents = append(parents, ParentStatus{Ref: pr.ref, Conditions: routeConditions(rt, pr)})
	}
	return parents
}
