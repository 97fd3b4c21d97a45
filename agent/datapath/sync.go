package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/weft-mesh/weft/bpf"
)

// Pod is a pod to enroll on this node. The agent passes only pods that
// should be redirected: on this node, in a namespace annotated
// weft.dev/mesh=enabled, not annotated weft.dev/mesh=disabled, not
// hostNetwork.
type Pod struct {
	UID string
	// NetnsPath optionally names the pod's netns (a CRI sandbox's netns path
	// or the lab runtime's /run/netns/<name>). Empty: found through the pod's
	// cgroup under Config.CgroupPath (FindPodNetns).
	NetnsPath string
}

// Desired is what the node's maps should hold.
type Desired struct {
	Pods []Pod
	// Meshed are the Service VIP:ports that have mesh policy.
	Meshed []netip.AddrPort
}

// PodResult says whether one pod's redirect is in place. The agent marks
// the pod enrolled (annotation) only when Enrolled is true, and reports Err
// otherwise.
type PodResult struct {
	UID         string
	NetnsCookie uint64
	Enrolled    bool
	Err         error
}

// Result of one Sync.
type Result struct {
	Pods []PodResult // in Desired.Pods order
	// SkippedVIPs are destinations left out: IPv6 ones (the redirect is
	// IPv4 and v4-mapped only) and the proxy's own address.
	SkippedVIPs []netip.AddrPort
	// Applied are the map writes made.
	Applied []Op
}

// Sync makes the node's maps match d: it resolves each pod's netns cookie,
// reads the maps, plans (Plan) and applies the writes. Cookies and VIPs not
// in d are removed, including leftovers of an earlier agent run. An invalid
// VIP is an error and changes nothing. A pod whose netns cannot be found
// keeps the cookie an earlier Sync resolved (a pod's sandbox netns lives as
// long as the pod); with none it is not enrolled and its PodResult.Err says
// why. Held pods (Hold) stay enrolled whether in d or not. Map write failures are returned joined; the per-pod results are
// still accurate.
func (d *Datapath) Sync(want Desired) (Result, error) {
	vips, skipped, err := NormalizeVIPs(want.Meshed)
	if err != nil {
		return Result{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.coll == nil {
		return Result{}, ErrClosed
	}

	// Redirecting the proxy's own address to itself would hand the proxy a
	// record pointing at itself: never mesh it.
	vips = slices.DeleteFunc(vips, func(v netip.AddrPort) bool {
		if v == d.cfg.ProxyAddr {
			skipped = append(skipped, v)
			return true
		}
		return false
	})
	res := Result{SkippedVIPs: skipped, Pods: make([]PodResult, len(want.Pods))}
	desired := State{Meshed: vips}
	seen := map[string]bool{}
	var index map[string]string // pod UID -> cgroup, built on first need
	var indexErr error
	for i, p := range want.Pods {
		res.Pods[i] = PodResult{UID: p.UID}
		if p.NetnsPath == "" && index == nil && indexErr == nil {
			index, indexErr = podCgroups(d.cgroupDir)
		}
		cookie, err := resolvePod(p, index, indexErr, d.cgroupDir)
		if err == nil && cookie == d.ownNetns {
			res.Pods[i].Err = fmt.Errorf("%w: not enrolled", ErrNodeNetns)
			continue
		}
		if err != nil {
			prev, ok := d.cookies[p.UID]
			if !ok {
				res.Pods[i].Err = err
				continue
			}
			cookie = prev
		}
		d.cookies[p.UID] = cookie
		seen[p.UID] = true
		res.Pods[i].NetnsCookie = cookie
		desired.Enrolled = append(desired.Enrolled, cookie)
	}
	for uid := range d.cookies {
		if !seen[uid] {
			delete(d.cookies, uid)
		}
	}
	for _, cookie := range d.holds {
		desired.Enrolled = append(desired.Enrolled, cookie) // Plan ignores duplicates
	}

	actual, err := d.readState()
	if err != nil {
		return res, err
	}
	var errs []error
	failed := map[uint64]bool{}
	for _, op := range Plan(desired, actual) {
		if err := d.apply(op); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", op, err))
			if op.Kind == OpEnroll {
				failed[op.Cookie] = true
			}
			continue
		}
		res.Applied = append(res.Applied, op)
	}
	for i := range res.Pods {
		r := &res.Pods[i]
		if r.Err != nil {
			continue
		}
		if failed[r.NetnsCookie] {
			r.Err = fmt.Errorf("write enrolled map for cookie %d failed", r.NetnsCookie)
			continue
		}
		r.Enrolled = true
	}
	return res, errors.Join(errs...)
}

// resolvePod finds a pod's netns cookie: by its netns path, else through
// its cgroup in index.
func resolvePod(p Pod, index map[string]string, indexErr error, parent string) (uint64, error) {
	path := p.NetnsPath
	if path == "" {
		if indexErr != nil {
			return 0, indexErr
		}
		dir, ok := index[strings.ToLower(p.UID)]
		if !ok {
			return 0, fmt.Errorf("%w: pod %s under %s", ErrPodNotFound, p.UID, parent)
		}
		var err error
		if path, err = podNetns(dir); err != nil {
			return 0, err
		}
	}
	return NetnsCookie(path)
}

// readState reads the enrolled and meshed maps.
func (d *Datapath) readState() (State, error) {
	var st State
	var cookie uint64
	var v uint32
	it := d.coll.Maps[bpf.RedirectMapEnrolled].Iterate()
	for it.Next(&cookie, &v) {
		st.Enrolled = append(st.Enrolled, cookie)
	}
	if err := it.Err(); err != nil {
		return st, fmt.Errorf("read enrolled map: %w", err)
	}
	var key bpf.RedirectVipKey
	it = d.coll.Maps[bpf.RedirectMapMeshed].Iterate()
	for it.Next(&key, &v) {
		st.Meshed = append(st.Meshed, vipFromKey(key))
	}
	if err := it.Err(); err != nil {
		return st, fmt.Errorf("read meshed map: %w", err)
	}
	return st, nil
}

// State returns the current contents of the enrolled and meshed maps.
func (d *Datapath) State() (State, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.coll == nil {
		return State{}, ErrClosed
	}
	return d.readState()
}

func (d *Datapath) apply(op Op) error {
	enrolled := d.coll.Maps[bpf.RedirectMapEnrolled]
	meshed := d.coll.Maps[bpf.RedirectMapMeshed]
	one := uint32(1)
	var err error
	switch op.Kind {
	case OpEnroll:
		err = enrolled.Put(op.Cookie, one)
	case OpUnenroll:
		err = enrolled.Delete(op.Cookie)
	case OpMesh:
		k := vipKey(op.VIP)
		err = meshed.Put(&k, one)
	case OpUnmesh:
		k := vipKey(op.VIP)
		err = meshed.Delete(&k)
	default:
		return fmt.Errorf("unknown op %d", int(op.Kind))
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}
