package resolve

import (
	"iter"
	"maps"
)

// layered is a map one resolution keeps for the next, which takes it over
// and changes a few keys: the compiled routes, their built statuses and the
// routes as attached, 20,000 of each at issue #17's scale, of which a route
// change changes one. Cloning them for every round was about 330 MB of the
// controller's allocation per bench-scale run, and half of an incremental
// round's time. A layered map shares a base map that no one modifies and
// keeps the keys set or deleted since in two small maps of its own, so
// taking it over (derive) copies only those; it folds them into a new base
// once they are an eighth of it.
//
// A layered map is changed only by the resolution that made it; once its
// Output is returned it is only read and derived from. The nil map is
// empty.
type layered[K comparable, V any] struct {
	base map[K]V        // shared: never modified
	over map[K]V        // set since base
	gone map[K]struct{} // deleted from base since
	n    int
}

// newLayered is an empty map for about hint keys.
func newLayered[K comparable, V any](hint int) *layered[K, V] {
	return &layered[K, V]{over: make(map[K]V, hint)}
}

// layeredOf is m as a layered map; m must not change after.
func layeredOf[K comparable, V any](m map[K]V) *layered[K, V] {
	return &layered[K, V]{base: m, n: len(m)}
}

// derive is a map with l's contents that can be changed without changing l.
func (l *layered[K, V]) derive() *layered[K, V] {
	switch {
	case l == nil:
		return &layered[K, V]{}
	case len(l.base) == 0 && len(l.gone) == 0:
		// l's own keys become the shared base
		return &layered[K, V]{base: l.over, n: l.n}
	case (len(l.over)+len(l.gone))*8 > len(l.base):
		base := make(map[K]V, l.n)
		for k, v := range l.all() {
			base[k] = v
		}
		return &layered[K, V]{base: base, n: l.n}
	default:
		return &layered[K, V]{base: l.base, over: maps.Clone(l.over), gone: maps.Clone(l.gone), n: l.n}
	}
}

func (l *layered[K, V]) get(k K) (V, bool) {
	if l == nil {
		var zero V
		return zero, false
	}
	if v, ok := l.over[k]; ok {
		return v, true
	}
	if _, ok := l.gone[k]; ok {
		var zero V
		return zero, false
	}
	v, ok := l.base[k]
	return v, ok
}

// at is get without the found flag.
func (l *layered[K, V]) at(k K) V {
	v, _ := l.get(k)
	return v
}

func (l *layered[K, V]) set(k K, v V) {
	if _, had := l.get(k); !had {
		l.n++
	}
	if l.over == nil {
		l.over = map[K]V{}
	}
	l.over[k] = v
	delete(l.gone, k)
}

func (l *layered[K, V]) del(k K) {
	if _, had := l.get(k); !had {
		return
	}
	l.n--
	delete(l.over, k)
	if _, inBase := l.base[k]; inBase {
		if l.gone == nil {
			l.gone = map[K]struct{}{}
		}
		l.gone[k] = struct{}{}
	}
}

func (l *layered[K, V]) len() int {
	if l == nil {
		return 0
	}
	return l.n
}

// all yields every key and value, in no order; l must not change meanwhile.
func (l *layered[K, V]) all() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) {
		if l == nil {
			return
		}
		for k, v := range l.over {
			if !yield(k, v) {
				return
			}
		}
		for k, v := range l.base {
			if _, set := l.over[k]; set {
				continue
			}
			if _, del := l.gone[k]; del {
				continue
			}
			if !yield(k, v) {
				return
			}
		}
	}
}
