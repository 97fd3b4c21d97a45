package status

import (
	"maps"

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
// copies share it; an object built or read afresh has another list, so it
// is compared). The time stamp of a Write plays no part: a status found
// equal kept every transition time it had.
//
// The entries of objects a Write did not find unchanged (or did not list)
// are dropped at its end.
type unchanged struct {
	// owned is the number of owned controllers the entries were found
	// with; a Write that owns another number reads none of them.
	owned   int
	write   uint64 // the Write under way, counted from 1
	entries map[objKey]unchangedEntry
}

type unchangedEntry struct {
	write           uint64 // the last Write that found the object unchanged
	resourceVersion string
	list            any // identity of the status list compared: a pointer to its first element, or nil
	desired         wanted
}

// holds reports whether the object k, at resourceVersion rv with status
// list identity list, was found with the status desired says already.
func (u *unchanged) holds(k objKey, rv string, list any, desired wanted) bool {
	e, ok := u.entries[k]
	if !ok || rv == "" || e.resourceVersion != rv || e.list != list {
		return false
	}
	for i := range desired {
		if !sameParents(e.desired[i], desired[i]) {
			return false
		}
	}
	// the newest lists, so that the last resolution's can be collected
	e.write, e.desired = u.write, desired
	u.entries[k] = e
	return true
}

// note records that object k had the status desired says.
func (u *unchanged) note(k objKey, rv string, list any, desired wanted) {
	if rv == "" {
		return
	}
	u.entries[k] = unchangedEntry{write: u.write, resourceVersion: rv, list: list, desired: desired}
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
	if u.entries == nil || u.owned != n {
		u.entries = map[objKey]unchangedEntry{}
	}
	u.owned = n
	u.write++
}

// end drops the entries this Write did not find unchanged.
func (u *unchanged) end() {
	maps.DeleteFunc(u.entries, func(_ objKey, e unchangedEntry) bool { return e.write != u.write })
}
