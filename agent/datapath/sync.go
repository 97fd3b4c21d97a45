package datapath

import (
	"errors"
	"fmt"
	"net"
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
	// Strict: the pod requires mTLS. Its IPv4 addresses (IPs) go into the
	// strict map once its netns cookie is known: plaintext TCP connects
	// from this node's other pods and SYNs from other hosts are refused.
	Strict bool
	// IPs are the pod's addresses (IPv6 ones are not enforced).
	IPs []netip.Addr
}

// Desired is what the node's maps should hold.
type Desired struct {
	Pods []Pod
	// Meshed are the Service VIP:ports that have mesh policy.
	Meshed []netip.AddrPort
	// KeepUnlisted adds what is missing but removes nothing: enrolled
	// cookies and meshed VIPs that are not listed stay. An agent that starts
	// adopts what the pinned maps hold (the previous agent's, maybe one that
	// crashed) and syncs with it set until it has the controller's policy:
	// a stale policy restored from disk, or a pod whose netns this new
	// process has not resolved yet, must never unenroll a pod (fail closed:
	// enrollment does not lapse while agents change).
	KeepUnlisted bool
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
// in d are removed, including leftovers of an earlier agent run, unless
// d.KeepUnlisted. An invalid
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
	desired.Enrolled, desired.Strict = d.resolvePods(want.Pods, res.Pods)
	for _, cookie := range d.holds {
		desired.Enrolled = append(desired.Enrolled, cookie) // Plan ignores duplicates
	}
	addrs, addrErr := d.nodeAddrs()

	actual, err := d.readState()
	if err != nil {
		return res, err
	}
	var errs []error
	desired.NodeAddrs = addrs
	if addrErr != nil {
		// keep the addresses known so far rather than drop the proxy's SYNs
		desired.NodeAddrs = actual.NodeAddrs
		errs = append(errs, addrErr)
	}
	failed := map[uint64]bool{}
	for _, op := range Plan(desired, actual) {
		if want.KeepUnlisted && (op.Kind == OpUnenroll || op.Kind == OpUnmesh) {
			continue
		}
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

// resolvePods resolves each pod's netns cookie into res (same order) and
// returns the cookies to enroll and the strict entries. A pod whose netns
// cannot be found keeps the cookie an earlier Sync resolved. d.mu is held.
func (d *Datapath) resolvePods(pods []Pod, res []PodResult) (enrolled []uint64, strict []StrictPod) {
	seen := map[string]bool{}
	var index map[string]string // pod UID -> cgroup, built on first need
	var indexErr error
	for i, p := range pods {
		res[i] = PodResult{UID: p.UID}
		if p.NetnsPath == "" && index == nil && indexErr == nil {
			index, indexErr = podCgroups(d.cgroupDir)
		}
		cookie, err := resolvePod(p, index, indexErr, d.cgroupDir)
		if err == nil && cookie == d.ownNetns {
			res[i].Err = fmt.Errorf("%w: not enrolled", ErrNodeNetns)
			continue
		}
		if err != nil {
			prev, ok := d.cookies[p.UID]
			if !ok {
				res[i].Err = err
				continue
			}
			cookie = prev
		}
		d.cookies[p.UID] = cookie
		seen[p.UID] = true
		res[i].NetnsCookie = cookie
		enrolled = append(enrolled, cookie)
		if p.Strict {
			for _, a := range p.IPs {
				if a = a.Unmap(); a.Is4() && !a.IsUnspecified() {
					strict = append(strict, StrictPod{IP: a, NetnsCookie: cookie})
				}
			}
		}
	}
	for uid := range d.cookies {
		if !seen[uid] {
			delete(d.cookies, uid)
		}
	}
	return enrolled, strict
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

// nodeAddrs returns Config.NodeAddrs, or else the IPv4 addresses of the
// agent's own network namespace (the node's: the agent is hostNetwork),
// loopback excluded. Read at every Sync: a CNI bridge address may appear
// after the agent started.
func (d *Datapath) nodeAddrs() ([]netip.Addr, error) {
	if d.cfg.NodeAddrs != nil {
		return d.cfg.NodeAddrs, nil
	}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list node addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range ifAddrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(n.IP)
		if ip = ip.Unmap(); ok && ip.Is4() && !ip.IsLoopback() && !ip.IsUnspecified() {
			out = append(out, ip)
		}
	}
	return out, nil
}

// readState reads the agent-written maps.
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
	var err error
	if st.Strict, err = readStrict(d.coll.Maps[bpf.RedirectMapStrict]); err != nil {
		return st, err
	}
	if st.NodeAddrs, err = readAddrSet(d.coll.Maps[bpf.RedirectMapNodeAddrs]); err != nil {
		return st, err
	}
	return st, nil
}

func readStrict(m *ebpf.Map) ([]StrictPod, error) {
	var out []StrictPod
	var k uint32
	var v bpf.RedirectStrictPod
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, StrictPod{IP: wordIP4(k), NetnsCookie: v.NetnsCookie})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read strict map: %w", err)
	}
	return out, nil
}

func readAddrSet(m *ebpf.Map) ([]netip.Addr, error) {
	var out []netip.Addr
	var k, v uint32
	it := m.Iterate()
	for it.Next(&k, &v) {
		out = append(out, wordIP4(k))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read node_addrs map: %w", err)
	}
	return out, nil
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
	case OpStrict:
		v := bpf.RedirectStrictPod{NetnsCookie: op.Cookie}
		err = d.coll.Maps[bpf.RedirectMapStrict].Put(ip4Word(op.Addr), &v)
	case OpUnstrict:
		err = d.coll.Maps[bpf.RedirectMapStrict].Delete(ip4Word(op.Addr))
	case OpNodeAddr:
		err = d.coll.Maps[bpf.RedirectMapNodeAddrs].Put(ip4Word(op.Addr), one)
	case OpUnnodeAddr:
		err = d.coll.Maps[bpf.RedirectMapNodeAddrs].Delete(ip4Word(op.Addr))
	default:
		return fmt.Errorf("unknown op %d", int(op.Kind))
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil
	}
	return err
}
