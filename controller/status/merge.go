package status

import (
	"cmp"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/resolve"
)

// Limits of the status lists in the Gateway API CRDs.
const (
	maxRouteParents    = 32
	maxPolicyAncestors = 16
)

// entry is one RouteParentStatus or PolicyAncestorStatus.
type entry struct {
	Ref        gwv1.ParentReference
	Controller gwv1.GatewayController
	Conditions []metav1.Condition
}

// refKey is a ParentReference with the API defaults filled in, so a
// reference read back from the API server matches the one resolution made.
type refKey struct {
	group, kind, namespace, name, section string
	port                                  int32
}

func keyOf(ref gwv1.ParentReference, objNamespace string) refKey {
	k := refKey{group: gwv1.GroupName, kind: "Gateway", namespace: objNamespace, name: string(ref.Name)}
	if ref.Group != nil {
		k.group = string(*ref.Group)
	}
	if ref.Kind != nil {
		k.kind = string(*ref.Kind)
	}
	if ref.Namespace != nil && *ref.Namespace != "" {
		k.namespace = string(*ref.Namespace)
	}
	if ref.SectionName != nil {
		k.section = string(*ref.SectionName)
	}
	if ref.Port != nil {
		k.port = int32(*ref.Port)
	}
	return k
}

// weftControllers are the controllerNames whose entries Weft owns, in the
// order their entries are listed: the mesh's (Service parents) and the
// gateway's (Gateway parents).
var weftControllers = []gwv1.GatewayController{resolve.ControllerName, gateway.ControllerName}

// wanted is the entries Weft wants on one object, per controller in
// weftControllers order (an array, not a map: a Write holds one per route,
// 20,000 at issue #17's scale).
type wanted [2][]resolve.ParentStatus

// merge is mergeOwned for the mesh's entries only.
func merge(current []entry, desired []resolve.ParentStatus, objNamespace string, now metav1.Time, limit int) []entry {
	return mergeOwned(current, weftControllers[:1], wanted{desired}, objNamespace, now, limit)
}

// mergeOwned returns the status entries an object should have: every entry
// of a controller not in owned unchanged and in place, then those of owned,
// per controller in weftControllers order, one per desired parent in spec order. Weft's
// entries for parents no longer desired are dropped. A condition keeps its
// LastTransitionTime when its status did not change; otherwise it gets
// now. The result holds at most limit entries (others first).
func mergeOwned(current []entry, owned []gwv1.GatewayController, desired wanted, objNamespace string, now metav1.Time, limit int) []entry {
	type ownKey struct {
		controller gwv1.GatewayController
		ref        refKey
	}
	ours := map[ownKey]entry{}
	var out []entry
	for _, e := range current {
		if slices.Contains(owned, e.Controller) {
			ours[ownKey{e.Controller, keyOf(e.Ref, objNamespace)}] = e
			continue
		}
		out = append(out, e)
	}
	for i, ctrl := range weftControllers {
		if !slices.Contains(owned, ctrl) {
			continue
		}
		for _, d := range desired[i] {
			if len(out) >= limit {
				break
			}
			prev := ours[ownKey{ctrl, keyOf(d.Ref, objNamespace)}]
			conds := keepTransitions(d.Conditions, prev.Conditions, now)
			slices.SortStableFunc(conds, func(a, b metav1.Condition) int { return cmp.Compare(a.Type, b.Type) })
			out = append(out, entry{Ref: d.Ref, Controller: ctrl, Conditions: conds})
		}
	}
	return out
}

// keepTransitions returns want with LastTransitionTime taken from prev for
// conditions whose status did not change, now for the others.
func keepTransitions(want, prev []metav1.Condition, now metav1.Time) []metav1.Condition {
	conds := make([]metav1.Condition, 0, len(want))
	for _, c := range want {
		c.LastTransitionTime = now
		for _, p := range prev {
			if p.Type == c.Type && p.Status == c.Status && !p.LastTransitionTime.IsZero() {
				c.LastTransitionTime = p.LastTransitionTime
			}
		}
		conds = append(conds, c)
	}
	return conds
}

// equal reports whether two status lists say the same thing, comparing
// parent references with their API defaults filled in and conditions by
// type (the API server keeps conditions as a map keyed by type).
func equal(a, b []entry, objNamespace string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Controller != b[i].Controller || keyOf(a[i].Ref, objNamespace) != keyOf(b[i].Ref, objNamespace) {
			return false
		}
		ca := slices.Clone(a[i].Conditions)
		cb := slices.Clone(b[i].Conditions)
		byType := func(x, y metav1.Condition) int { return cmp.Compare(x.Type, y.Type) }
		slices.SortStableFunc(ca, byType)
		slices.SortStableFunc(cb, byType)
		if len(ca) == 0 && len(cb) == 0 {
			continue
		}
		if !conditionsEqual(ca, cb) {
			return false
		}
	}
	return true
}

// conditionsEqual is equality.Semantic.DeepEqual for conditions, field by
// field: the writer compares every route's conditions after every round,
// 20k routes at issue #17's scale, where reflection cost seconds.
func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := &a[i], &b[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message ||
			x.ObservedGeneration != y.ObservedGeneration || !x.LastTransitionTime.Equal(&y.LastTransitionTime) {
			return false
		}
	}
	return true
}

func fromRouteParents(ps []gwv1.RouteParentStatus) []entry {
	out := make([]entry, 0, len(ps))
	for _, p := range ps {
		out = append(out, entry{Ref: p.ParentRef, Controller: p.ControllerName, Conditions: p.Conditions})
	}
	return out
}

func toRouteParents(es []entry) []gwv1.RouteParentStatus {
	out := make([]gwv1.RouteParentStatus, 0, len(es))
	for _, e := range es {
		out = append(out, gwv1.RouteParentStatus{ParentRef: e.Ref, ControllerName: e.Controller, Conditions: e.Conditions})
	}
	return out
}

func fromAncestors(as []gwv1.PolicyAncestorStatus) []entry {
	out := make([]entry, 0, len(as))
	for _, a := range as {
		out = append(out, entry{Ref: a.AncestorRef, Controller: a.ControllerName, Conditions: a.Conditions})
	}
	return out
}

func toAncestors(es []entry) []gwv1.PolicyAncestorStatus {
	out := make([]gwv1.PolicyAncestorStatus, 0, len(es))
	for _, e := range es {
		out = append(out, gwv1.PolicyAncestorStatus{AncestorRef: e.Ref, ControllerName: e.Controller, Conditions: e.Conditions})
	}
	return out
}
