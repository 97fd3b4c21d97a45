package status

import (
	"cmp"
	"slices"
	"sort"
	"strings"

	"github.com/weft-mesh/weft/controller/resolve"
)

// unchanged remembers the routes and policies a Write found already
// carrying the status Weft wants, with what that comparison read, so that
// the next Write skips each one whose inputs are the same: at issue #17's
// scale every round compared 20,000 routes, twice (the round, then the echo
// of its own writes), to write the handful that changed.
//
// The comparison reads the object's status, the entries Weft wants for it
// and which controllers' entries Weft owns. The object's status is the
// same when its resourceVersion is (the API server changes it on every
// write) and its status list is the very one compared (the informer's
// object and its shallow copies share it; an object built or read afresh
// has another list, so it is compared). The time stamp of a Write plays no
// part: a status found equal kept every transition time it had.
//
// The entries of objects a Write did not find unchanged (or did not list)
// are dropped at its end. They are kept per kind in the order the objects
// were listed (by namespace and name), so that finding an object's entry
// is a look at the next one, not a map lookup: no hashing and no
// allocation per object on a pass that finds them all unchanged.
type unchanged struct {
	// owned is the number of owned controllers the entries were found
	// with; a Write that owns another number reads none of them.
	owned int
	// kinds holds the entries of each kind: those of the last Write (prev,
	// read) and those of the Write under way (next, filled).
	kinds map[string]*kindEntries
	// sorted are the lists found sorted, by identity
	sorted sortedLists
}

type kindEntries struct {
	prev, next []unchangedEntry
	at         cursor[unchangedEntry]
	// inOrder: the Write's objects of the kind were sorted, so next, filled
	// in their order, is sorted too
	inOrder bool
}

type unchangedEntry struct {
	namespace, name string
	resourceVersion string
	list            any // identity of the status list compared: a pointer to its first element, or nil
	desired         wanted
}

func (e *unchangedEntry) key() (string, string) { return e.namespace, e.name }

// of returns the entries of one kind (looked up once per kind and Write,
// not per object).
func (u *unchanged) of(kind string) *kindEntries {
	k := u.kinds[kind]
	if k == nil {
		k = &kindEntries{}
		u.kinds[kind] = k
	}
	return k
}

// holds reports whether the object ns/name of this kind, at
// resourceVersion rv with status list identity list, was found with the
// status desired says already; if so it is remembered for the next Write
// too.
func (k *kindEntries) holds(ns, name, rv string, list any, desired wanted) bool {
	e := k.at.find(ns, name)
	if e == nil || rv == "" || e.resourceVersion != rv || e.list != list {
		return false
	}
	for i := range desired {
		if !sameParents(e.desired[i], desired[i]) {
			return false
		}
	}
	// the newest lists, so that the last resolution's can be collected
	k.next = append(k.next, unchangedEntry{namespace: ns, name: name, resourceVersion: rv, list: list, desired: desired})
	return true
}

// note records that object ns/name of this kind had the status desired
// says.
func (k *kindEntries) note(ns, name, rv string, list any, desired wanted) {
	if rv == "" {
		return
	}
	k.next = append(k.next, unchangedEntry{namespace: ns, name: name, resourceVersion: rv, list: list, desired: desired})
}

// sameParents reports whether two desired status lists are equal. Lists
// of the same resolution are the same slice, which is the quick case.
func sameParents(a, b []resolve.ParentStatus) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if keyOf(a[i].Ref, "") != keyOf(b[i].Ref, "") || !conditionsEqual(a[i].Conditions, b[i].Conditions) {
			return false
		}
	}
	return true
}

// firstOf is the identity of a status list: its first element, nil when
// empty.
func firstOf[E any](s []E) any {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

// begin starts a Write that owns n controllers' entries.
func (u *unchanged) begin(n int) {
	if u.kinds == nil || u.owned != n {
		u.kinds = map[string]*kindEntries{}
	}
	u.owned = n
	for _, k := range u.kinds {
		k.at = newCursor(k.prev, (*unchangedEntry).key)
		k.next = k.next[:0]
		k.inOrder = false
	}
}

// end keeps the entries this Write found unchanged, for the next one. They
// are in listing order, which is sorted; a listing that was not is sorted
// here, so that the next Write finds its entries all the same.
func (u *unchanged) end() {
	for _, k := range u.kinds {
		byKey := func(a, b unchangedEntry) int { return compareKey(a.namespace, a.name, b.namespace, b.name) }
		if !k.inOrder && !slices.IsSortedFunc(k.next, byKey) {
			slices.SortFunc(k.next, byKey)
		}
		clear(k.prev) // the old lists, collectable
		k.prev, k.next = k.next, k.prev[:0]
		k.at = cursor[unchangedEntry]{}
	}
	u.sorted.rotate()
}

// sortedLists remembers the lists a Write found sorted (the wanted
// statuses, the listings of objects), by identity: the address of the
// first element and the length. A list the next Write gets again is not
// checked again: the lists are never changed once made (resolution's
// Output, the source's listings), and checking 20,000 statuses and 20,000
// objects was about half of a Write's CPU under endpoint churn at issue
// #17's scale.
type sortedLists struct{ last, now map[any]int }

// check reports whether the list whose first element is first and length
// n is sorted, calling sorted unless the last Write found it so.
func (s *sortedLists) check(first any, n int, sorted func() bool) bool {
	if s.now == nil {
		s.now = map[any]int{}
	}
	if m, ok := s.last[first]; ok && m == n {
		s.now[first] = n
		return true
	}
	if !sorted() {
		return false
	}
	s.now[first] = n
	return true
}

// rotate ends a Write: its lists are the ones the next finds.
func (s *sortedLists) rotate() { s.last, s.now = s.now, nil }

func compareKey(ns1, name1, ns2, name2 string) int {
	return cmp.Or(strings.Compare(ns1, ns2), strings.Compare(name1, name2))
}

// cursor finds elements of a slice sorted by namespace, then name. It is
// quickest when asked for them in that order, as a Write's objects come:
// the element after the last one found is looked at first, and only when
// it is not the one asked for is the slice searched.
type cursor[E any] struct {
	s   []E
	key func(*E) (ns, name string)
	i   int
}

func newCursor[E any](s []E, key func(*E) (string, string)) cursor[E] {
	return cursor[E]{s: s, key: key}
}

// find returns the element with key ns/name, nil when there is none.
func (c *cursor[E]) find(ns, name string) *E {
	if c.i < len(c.s) {
		if n, m := c.key(&c.s[c.i]); n == ns && m == name {
			c.i++
			return &c.s[c.i-1]
		}
	}
	j := sort.Search(len(c.s), func(x int) bool {
		n, m := c.key(&c.s[x])
		return compareKey(n, m, ns, name) >= 0
	})
	c.i = j
	if j == len(c.s) {
		return nil
	}
	if n, m := c.key(&c.s[j]); n != ns || m != name {
		return nil
	}
	c.i++
	return &c.s[j]
}
