package resolve

import (
	"slices"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// podLabels indexes one namespace's pods by label value, so that a
// selector is tried on the pods carrying a value it requires instead of on
// every pod of the namespace. At issue #17's scale (10,000 Services, 1,000
// pods per namespace) a policy per Service was 10 million selector matches
// per round; through the index it is the ten pods each one selects.
//
// The index only narrows: every candidate is matched with the selector
// itself, so what is selected is exactly what Selector.Matches says.
type podLabels struct {
	pods []*Pod
	// values: label key -> value -> indexes into pods, ascending
	values map[string]map[string][]int32
}

func indexPodLabels(pods []*Pod) *podLabels {
	ix := &podLabels{pods: pods, values: map[string]map[string][]int32{}}
	for i, p := range pods {
		for k, v := range p.Labels {
			byValue := ix.values[k]
			if byValue == nil {
				byValue = map[string][]int32{}
				ix.values[k] = byValue
			}
			byValue[v] = append(byValue[v], int32(i))
		}
	}
	return ix
}

// selected returns the indexes of the pods that one of sels matches,
// ascending, each once.
func (ix *podLabels) selected(sels []labels.Selector) []int32 {
	var out []int32
	for _, s := range sels {
		cand, all := ix.candidates(s)
		try := func(i int32) {
			if s.Matches(labels.Set(ix.pods[i].Labels)) {
				out = append(out, i)
			}
		}
		if all {
			for i := range ix.pods {
				try(int32(i))
			}
			continue
		}
		for _, i := range cand {
			try(i)
		}
	}
	if len(sels) > 1 {
		slices.Sort(out)
		out = slices.Compact(out)
	}
	return out
}

// candidates are the pods s may match: those carrying a value of the
// requirement (=, ==, in) with the fewest pods, ascending; all when s has
// no such requirement, none when s selects nothing.
func (ix *podLabels) candidates(s labels.Selector) (cand []int32, all bool) {
	reqs, selectable := s.Requirements()
	if !selectable {
		return nil, false
	}
	best := -1
	var lists [][]int32
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
		default:
			continue
		}
		var rl [][]int32
		n := 0
		for v := range r.Values() { // a set: in (a, a) lists a once
			if l := ix.values[r.Key()][v]; len(l) > 0 {
				rl = append(rl, l)
				n += len(l)
			}
		}
		if best < 0 || n < best {
			best, lists = n, rl
		}
	}
	if best < 0 {
		return nil, true
	}
	if len(lists) == 1 {
		return lists[0], false
	}
	// a pod has one value per key: the lists are disjoint
	for _, l := range lists {
		cand = append(cand, l...)
	}
	slices.Sort(cand)
	return cand, false
}
