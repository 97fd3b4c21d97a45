package status

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/resolve"
)

var (
	t0 = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 = metav1.NewTime(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC))
)

func svcRef(name string) gwv1.ParentReference {
	g := gwv1.Group("")
	k := gwv1.Kind("Service")
	return gwv1.ParentReference{Group: &g, Kind: &k, Name: gwv1.ObjectName(name)}
}

func cond(typ string, st metav1.ConditionStatus, reason string, ltt metav1.Time) metav1.Condition {
	return metav1.Condition{Type: typ, Status: st, Reason: reason, Message: reason, ObservedGeneration: 1, LastTransitionTime: ltt}
}

func TestMerge(t *testing.T) {
	gw := gwv1.ParentReference{Name: "gw"}
	other := entry{Ref: gw, Controller: "example.com/gateway", Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", t0)}}
	ourA := entry{Ref: svcRef("a"), Controller: resolve.ControllerName, Conditions: []metav1.Condition{
		cond("Accepted", "True", "Accepted", t0), cond("ResolvedRefs", "True", "ResolvedRefs", t0)}}
	desiredA := resolve.ParentStatus{Ref: svcRef("a"), Conditions: []metav1.Condition{
		cond("Accepted", "True", "Accepted", metav1.Time{}), cond("ResolvedRefs", "True", "ResolvedRefs", metav1.Time{})}}

	tests := []struct {
		name    string
		current []entry
		desired []resolve.ParentStatus
		want    []entry
		same    bool
	}{
		{
			name:    "new parent gets now",
			desired: []resolve.ParentStatus{desiredA},
			want: []entry{{Ref: svcRef("a"), Controller: resolve.ControllerName, Conditions: []metav1.Condition{
				cond("Accepted", "True", "Accepted", t1), cond("ResolvedRefs", "True", "ResolvedRefs", t1)}}},
		},
		{
			name:    "unchanged keeps transition time and is equal",
			current: []entry{ourA},
			desired: []resolve.ParentStatus{desiredA},
			want:    []entry{ourA},
			same:    true,
		},
		{
			name:    "other controller survives, ours follows",
			current: []entry{other},
			desired: []resolve.ParentStatus{desiredA},
			want: []entry{other, {Ref: svcRef("a"), Controller: resolve.ControllerName, Conditions: []metav1.Condition{
				cond("Accepted", "True", "Accepted", t1), cond("ResolvedRefs", "True", "ResolvedRefs", t1)}}},
		},
		{
			name:    "status flip gets now, reason change alone keeps time",
			current: []entry{ourA},
			desired: []resolve.ParentStatus{{Ref: svcRef("a"), Conditions: []metav1.Condition{
				cond("Accepted", "True", "Accepted2", metav1.Time{}), cond("ResolvedRefs", "False", "BackendNotFound", metav1.Time{})}}},
			want: []entry{{Ref: svcRef("a"), Controller: resolve.ControllerName, Conditions: []metav1.Condition{
				cond("Accepted", "True", "Accepted2", t0), cond("ResolvedRefs", "False", "BackendNotFound", t1)}}},
		},
		{
			name:    "stale parent of ours removed, other kept",
			current: []entry{ourA, other},
			desired: nil,
			want:    []entry{other},
		},
		{
			name:    "nothing of ours and nothing desired is equal",
			current: []entry{other},
			want:    []entry{other},
			same:    true,
		},
		{
			name: "defaulted namespace matches unset namespace",
			current: []entry{{Ref: func() gwv1.ParentReference {
				r := svcRef("a")
				ns := gwv1.Namespace("route-ns")
				r.Namespace = &ns
				return r
			}(), Controller: resolve.ControllerName, Conditions: ourA.Conditions}},
			desired: []resolve.ParentStatus{desiredA},
			same:    true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := merge(tc.current, tc.desired, "route-ns", t1, maxRouteParents)
			if tc.want != nil && !equal(got, tc.want, "route-ns") {
				t.Fatalf("merge:\n got %+v\nwant %+v", got, tc.want)
			}
			if tc.want != nil {
				// LastTransitionTime is part of the comparison.
				for i := range got {
					for j := range got[i].Conditions {
						if !got[i].Conditions[j].LastTransitionTime.Equal(&tc.want[i].Conditions[j].LastTransitionTime) {
							t.Fatalf("entry %d condition %d: time %v, want %v", i, j, got[i].Conditions[j].LastTransitionTime, tc.want[i].Conditions[j].LastTransitionTime)
						}
					}
				}
			}
			if same := equal(tc.current, got, "route-ns"); same != tc.same {
				t.Fatalf("equal(current, merged) = %v, want %v", same, tc.same)
			}
		})
	}
}

func TestMergeLimit(t *testing.T) {
	var current []entry
	for i := 0; i < 15; i++ {
		current = append(current, entry{Ref: gwv1.ParentReference{Name: gwv1.ObjectName(rune('a' + i))}, Controller: "other/x"})
	}
	desired := []resolve.ParentStatus{
		{Ref: svcRef("s1"), Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", metav1.Time{})}},
		{Ref: svcRef("s2"), Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", metav1.Time{})}},
	}
	got := merge(current, desired, "ns", t1, maxPolicyAncestors)
	if len(got) != maxPolicyAncestors || got[15].Ref.Name != "s1" {
		t.Fatalf("got %d entries, last %v", len(got), got[len(got)-1].Ref.Name)
	}
}

func TestEqualDetectsDifferences(t *testing.T) {
	a := []entry{{Ref: svcRef("a"), Controller: resolve.ControllerName, Conditions: []metav1.Condition{cond("Accepted", "True", "Accepted", t0)}}}
	variants := map[string]func(e *entry){
		"name":       func(e *entry) { e.Ref.Name = "b" },
		"port":       func(e *entry) { p := gwv1.PortNumber(80); e.Ref.Port = &p },
		"controller": func(e *entry) { e.Controller = "x/y" },
		"status":     func(e *entry) { e.Conditions[0].Status = "False" },
		"message":    func(e *entry) { e.Conditions[0].Message = "other" },
		"generation": func(e *entry) { e.Conditions[0].ObservedGeneration = 2 },
		"time":       func(e *entry) { e.Conditions[0].LastTransitionTime = t1 },
	}
	for name, mutate := range variants {
		b := []entry{{Ref: a[0].Ref, Controller: a[0].Controller, Conditions: append([]metav1.Condition(nil), a[0].Conditions...)}}
		mutate(&b[0])
		if equal(a, b, "ns") {
			t.Errorf("%s: difference not detected", name)
		}
	}
	if !equal(a, a, "ns") {
		t.Error("identical lists not equal")
	}
}
