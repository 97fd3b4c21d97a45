package resolve

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The index selects exactly what matching every pod would: random pods
// and selectors of every operator, one and several per policy.
func TestPodLabelsSelectsWhatMatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys, values := []string{"app", "tier", "track", "zone"}, []string{"a", "b", "c", ""}
	var pods []*Pod
	for i := range 300 {
		l := map[string]string{}
		for _, k := range keys {
			if rng.IntN(3) > 0 {
				l[k] = values[rng.IntN(len(values))]
			}
		}
		if i%50 == 0 {
			l = nil
		}
		pods = append(pods, &Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("p%d", i), Labels: l}})
	}
	ix := indexPodLabels(pods)
	ops := []metav1.LabelSelectorOperator{metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist}
	randomSelector := func() labels.Selector {
		var ls metav1.LabelSelector
		for range rng.IntN(3) {
			if ls.MatchLabels == nil {
				ls.MatchLabels = map[string]string{}
			}
			ls.MatchLabels[keys[rng.IntN(len(keys))]] = values[rng.IntN(len(values)-1)]
		}
		for range rng.IntN(3) {
			e := metav1.LabelSelectorRequirement{Key: keys[rng.IntN(len(keys))], Operator: ops[rng.IntN(len(ops))]}
			if e.Operator == metav1.LabelSelectorOpIn || e.Operator == metav1.LabelSelectorOpNotIn {
				for range 1 + rng.IntN(2) {
					e.Values = append(e.Values, values[rng.IntN(len(values)-1)])
				}
			}
			ls.MatchExpressions = append(ls.MatchExpressions, e)
		}
		s, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil {
			t.Fatalf("selector %v: %v", ls, err)
		}
		return s
	}
	narrowed := 0
	for range 2000 {
		sels := []labels.Selector{randomSelector()}
		if rng.IntN(3) == 0 {
			sels = append(sels, randomSelector())
		}
		if rng.IntN(20) == 0 {
			sels = append(sels, labels.Nothing())
		}
		var want []int32
		for i, p := range pods {
			if slices.ContainsFunc(sels, func(s labels.Selector) bool { return s.Matches(labels.Set(p.Labels)) }) {
				want = append(want, int32(i))
			}
		}
		if got := ix.selected(sels); !slices.Equal(got, want) {
			t.Fatalf("selectors %v: selected %v, want %v", sels, got, want)
		}
		if _, all := ix.candidates(sels[0]); !all {
			narrowed++
		}
	}
	if narrowed < 500 {
		t.Fatalf("only %d of 2000 cases went through the index: the test does not exercise it", narrowed)
	}
}

// A selector tries only the pods with the value it requires.
func TestPodLabelsNarrows(t *testing.T) {
	var pods []*Pod
	for i := range 1000 {
		pods = append(pods, &Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint(i), Labels: map[string]string{"app": fmt.Sprint(i / 10), "env": "prod"}}})
	}
	ix := indexPodLabels(pods)
	s := labels.SelectorFromSet(labels.Set{"env": "prod", "app": "7"})
	cand, all := ix.candidates(s)
	if all || len(cand) != 10 {
		t.Fatalf("candidates of %v: %d (all=%v), want the 10 pods of app 7", s, len(cand), all)
	}
	if got := ix.selected([]labels.Selector{s}); len(got) != 10 || got[0] != 70 {
		t.Fatalf("selected %v", got)
	}
	if cand, all := ix.candidates(labels.Everything()); !all || cand != nil {
		t.Fatalf("everything: %v %v", cand, all)
	}
	if cand, all := ix.candidates(labels.Nothing()); all || cand != nil {
		t.Fatalf("nothing: %v %v", cand, all)
	}
}
