package source

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// The biggest kinds (pods, EndpointSlices, Services, routes) are listed
// into copies sorted by namespace and name that rounds share while the
// kind has no event. After events on a few objects, the copy is patched
// with them (their current state read from the informer's store) in one
// pass, instead of listed, sorted and copied again: at issue #17's scale
// listing and sorting 20,000 HTTPRoutes took about 18 ms of CPU in every
// round after a route change, and the status loop lists them too. All but
// Services are copies of the store's pointers (listPointersCached), not of
// its objects: a patch then copies 8 bytes per object, not the object.

// listed is a kind's listed copy and its generation then.
type listed struct {
	gen  uint64
	objs any
}

// nsName is a namespaced object's key; listings are sorted by it.
type nsName struct{ ns, name string }

func compareNsName(a, b nsName) int {
	return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name))
}

func (k nsName) storeKey() string {
	if k.ns == "" {
		return k.name
	}
	return k.ns + "/" + k.name
}

func keyOf(o metav1.Object) nsName { return nsName{o.GetNamespace(), o.GetName()} }

// maxPatch is the most objects a stale copy is patched with; after more
// events than that, listing again is as cheap.
const maxPatch = 512

// dirtyKeys are the objects of one kind with an event since its copy was
// listed; overflow: too many, or one without a name, to patch.
type dirtyKeys struct {
	keys     map[nsName]bool
	overflow bool
}

// noteEvent records an event on obj of kind (chMu held): its copy is
// stale, and obj is one to patch it with.
func (s *Source) noteEvent(kind string, obj metav1.Object) {
	s.gens[kind]++
	if s.stale == nil {
		s.stale = map[string]*dirtyKeys{}
	}
	d := s.stale[kind]
	if d == nil {
		d = &dirtyKeys{keys: map[nsName]bool{}}
		s.stale[kind] = d
	}
	if d.overflow {
		return
	}
	if obj == nil || obj.GetName() == "" || len(d.keys) >= maxPatch {
		d.overflow, d.keys = true, nil
		return
	}
	d.keys[keyOf(obj)] = true
}

// listCached lists the objects of a kind by value, sorted (see cached).
// Resolution never modifies its Input, so rounds can share the copy.
// Services are listed so; the other big kinds are listPointersCached.
func listCached[T any](s *Source, kind string, store cache.Indexer) ([]T, error) {
	return cached(s, kind, func() ([]T, error) {
		ptrs, err := storeList[T](store)
		if err != nil {
			return nil, err
		}
		return values(ptrs), nil
	}, func(prev []T, keys []nsName) ([]T, error) {
		return patchSorted(prev, keys, func(o *T) nsName { return keyOf(any(o).(metav1.Object)) }, func(k nsName) (T, bool, error) {
			p, ok, err := storeGet[T](store, k)
			if !ok || err != nil {
				var zero T
				return zero, false, err
			}
			return *p, true, nil
		})
	})
}

// listPointersCached is listCached of the store's objects themselves, which
// no one may modify (pods: a copy of 100k by value was 118 MB at issue
// #17's scale; patching by-value listings of 20,000 HTTPRoutes and 10,000
// EndpointSlices allocated 800 MB per scale benchmark run).
func listPointersCached[T any](s *Source, kind string, store cache.Indexer) ([]*T, error) {
	return cached(s, kind, func() ([]*T, error) { return storeList[T](store) }, func(prev []*T, keys []nsName) ([]*T, error) {
		return patchSorted(prev, keys, func(o **T) nsName { return keyOf(any(*o).(metav1.Object)) }, func(k nsName) (*T, bool, error) {
			return storeGet[T](store, k)
		})
	})
}

// cached returns the copy of kind the last call made while the kind has
// had no event since; after events on a few objects, that copy patched
// with them; else a new listing.
func cached[L any](s *Source, kind string, list func() (L, error), patch func(prev L, keys []nsName) (L, error)) (L, error) {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	s.chMu.Lock()
	gen := s.gens[kind]
	c, ok := s.copies[kind]
	if ok && c.gen == gen {
		s.chMu.Unlock()
		return c.objs.(L), nil
	}
	// the events from here on are the next call's to patch with
	d := s.stale[kind]
	delete(s.stale, kind)
	s.chMu.Unlock()
	var objs L
	var err error
	if ok && d != nil && !d.overflow {
		objs, err = patch(c.objs.(L), slices.SortedFunc(maps.Keys(d.keys), compareNsName))
	} else {
		objs, err = list()
	}
	if err != nil {
		s.chMu.Lock()
		delete(s.copies, kind) // its keys are lost: list again next time
		s.chMu.Unlock()
		return objs, err
	}
	s.chMu.Lock()
	if s.copies == nil {
		s.copies = map[string]listed{}
	}
	s.copies[kind] = listed{gen: gen, objs: objs}
	s.chMu.Unlock()
	return objs, nil
}

// patchSorted is prev (sorted by key) with the objects of keys (sorted,
// distinct) as get finds them now: replaced, inserted in order where new,
// left out where get finds none.
func patchSorted[E any](prev []E, keys []nsName, key func(*E) nsName, get func(nsName) (E, bool, error)) ([]E, error) {
	out := make([]E, 0, len(prev)+len(keys))
	i := 0
	for _, k := range keys {
		j := i + sort.Search(len(prev)-i, func(x int) bool { return compareNsName(key(&prev[i+x]), k) >= 0 })
		out = append(out, prev[i:j]...)
		i = j
		if i < len(prev) && key(&prev[i]) == k {
			i++
		}
		e, ok, err := get(k)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, e)
		}
	}
	return append(out, prev[i:]...), nil
}

// storeList lists a store's objects, sorted by namespace and name; callers
// must not modify them.
func storeList[T any](store cache.Indexer) ([]*T, error) {
	items := store.List()
	out := make([]*T, 0, len(items))
	for _, it := range items {
		p, ok := it.(*T)
		if !ok {
			return nil, fmt.Errorf("list from cache: %T in a store of %T", it, p)
		}
		out = append(out, p)
	}
	sortObjects(out)
	return out, nil
}

// storeGet is the store's object k; false when it has none.
func storeGet[T any](store cache.Indexer, k nsName) (*T, bool, error) {
	it, ok, err := store.GetByKey(k.storeKey())
	if err != nil || !ok {
		return nil, false, err
	}
	p, isT := it.(*T)
	if !isT {
		return nil, false, fmt.Errorf("get from cache: %T in a store of %T", it, p)
	}
	return p, true, nil
}
