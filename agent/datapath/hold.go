package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/weft-mesh/weft/bpf"
)

// Holds are the CNI path's enrollments (package agent/cni): a pod's netns
// enrolled at once, while its sandbox is created and before any of its
// containers runs, and kept enrolled by every Sync, whether the pod is in
// Desired or not yet, until Release. They make a pod's start safe: the
// policy names a pod only once the controller has seen its IP, which is
// after its containers started.

// Hold resolves the netns at netnsPath, writes its cookie into the enrolled
// map and keeps it there across Syncs until Release(uid). It returns only
// once the map holds the cookie. Holding the same pod again is a no-op (a
// new netns under the same UID replaces the old one). The node's own netns
// is refused (ErrNodeNetns).
func (d *Datapath) Hold(uid, netnsPath string) (uint64, error) {
	if uid == "" || netnsPath == "" {
		return 0, fmt.Errorf("%w: hold needs a pod UID and a netns path", ErrInvalidConfig)
	}
	cookie, err := NetnsCookie(netnsPath)
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.coll == nil {
		return 0, ErrClosed
	}
	if cookie == d.ownNetns {
		return 0, ErrNodeNetns
	}
	if err := d.apply(Op{Kind: OpEnroll, Cookie: cookie}); err != nil {
		return 0, fmt.Errorf("write enrolled map for cookie %d: %w", cookie, err)
	}
	if prev, ok := d.holds[uid]; ok && prev != cookie {
		d.holds[uid] = cookie
		d.dropIfUnused(prev)
	}
	d.holds[uid] = cookie
	return cookie, nil
}

// Release ends the hold of uid and forgets the cookie an earlier Sync
// resolved for it, and removes its cookie from the enrolled map (the pod's
// network is being torn down). An unknown uid is not an error.
func (d *Datapath) Release(uid string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.coll == nil {
		return ErrClosed
	}
	var errs []error
	for _, m := range []map[string]uint64{d.holds, d.cookies} {
		cookie, ok := m[uid]
		if !ok {
			continue
		}
		delete(m, uid)
		errs = append(errs, d.dropIfUnused(cookie))
	}
	return errors.Join(errs...)
}

// Unhold ends the hold of uid but leaves the map to the next Sync (the
// policy decides about the pod from now on).
func (d *Datapath) Unhold(uid string) {
	d.mu.Lock()
	delete(d.holds, uid)
	d.mu.Unlock()
}

// Holding reports the cookie held for uid and whether the enrolled map
// holds it now.
func (d *Datapath) Holding(uid string) (cookie uint64, held, inMap bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.coll == nil {
		return 0, false, false, ErrClosed
	}
	cookie, held = d.holds[uid]
	if !held {
		return 0, false, false, nil
	}
	var v uint32
	err = d.coll.Maps[bpf.RedirectMapEnrolled].Lookup(cookie, &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return cookie, true, false, nil
	}
	return cookie, true, err == nil, err
}

// dropIfUnused deletes cookie from the enrolled map unless a hold or a
// Sync-resolved pod still uses it. d.mu is held.
func (d *Datapath) dropIfUnused(cookie uint64) error {
	for _, m := range []map[string]uint64{d.holds, d.cookies} {
		for _, c := range m {
			if c == cookie {
				return nil
			}
		}
	}
	if err := d.apply(Op{Kind: OpUnenroll, Cookie: cookie}); err != nil {
		return fmt.Errorf("delete cookie %d from enrolled map: %w", cookie, err)
	}
	return nil
}
