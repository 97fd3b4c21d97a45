package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/bpf"
)

// The node's pinned maps (everything but the loader's .rodata).
var pinnedMaps = []string{
	bpf.RedirectMapEnrolled,
	bpf.RedirectMapMeshed,
	bpf.RedirectMapPending,
	bpf.RedirectMapOrigDsts,
}

// hook is one program and where it attaches.
type hook struct {
	prog   string
	attach ebpf.AttachType
}

// The node's programs; the link of each is pinned as "link_<prog>".
var hooks = []hook{
	{bpf.RedirectProgWeftConnect4, ebpf.AttachCGroupInet4Connect},
	{bpf.RedirectProgWeftConnect6, ebpf.AttachCGroupInet6Connect},
	{bpf.RedirectProgWeftGetpeername4, ebpf.AttachCgroupInet4GetPeername},
	{bpf.RedirectProgWeftGetpeername6, ebpf.AttachCgroupInet6GetPeername},
	{bpf.RedirectProgWeftSockops, ebpf.AttachCGroupSockOps},
}

func linkPin(dir, prog string) string { return filepath.Join(dir, "link_"+prog) }

// Datapath is one node's loaded and attached redirect. It is safe for
// concurrent use: Lookup runs on the proxy's accept path while Sync runs
// on policy changes.
type Datapath struct {
	cfg       Config
	cgroupDir string
	pinDir    string
	log       *slog.Logger

	coll    *ebpf.Collection
	links   map[string]link.Link
	records atomic.Pointer[ebpf.Map] // orig_dsts; nil after Close

	mu      sync.Mutex
	cookies map[string]uint64 // pod UID -> netns cookie resolved earlier
	// ownNetns is the agent's (the node's, as a hostNetwork pod) netns
	// cookie: never enrolled, or the proxy's own dials would loop.
	ownNetns uint64
}

// Open loads the node's programs and makes sure they are attached at the
// configured cgroup, with maps and links pinned under <PinRoot>/<Node>/.
//
// Pinned objects from an earlier run are adopted, never detached first: the
// maps are reused (their contents survive), and each pinned link is switched
// to the newly loaded program atomically (BPF_LINK_UPDATE), so an agent
// restart or upgrade never leaves a window without redirect. A pinned link
// attached to another cgroup (CgroupPath changed) is replaced after the new
// one is attached. A pinned map whose layout changed is replaced by a new,
// empty one that the next Sync fills.
//
// It mounts bpffs at Config.BPFFS if needed and discovers (or mounts) the
// cgroup v2 hierarchy.
func Open(cfg Config) (*Datapath, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	mounted, err := ensureBPFFS(cfg.BPFFS)
	if err != nil {
		return nil, err
	}
	if mounted {
		// In a private mount namespace this mount (and the pins in it)
		// dies with the namespace: mount bpffs on the host (or give the
		// DaemonSet a hostPath /sys/fs/bpf with Bidirectional propagation).
		cfg.Logger.Warn("mounted bpffs; pins survive agent restarts only if this mount is the host's", logkey.Path, cfg.BPFFS)
	}
	cg2, err := ensureCgroup2()
	if err != nil {
		return nil, err
	}
	d := &Datapath{
		cfg:       cfg,
		cgroupDir: cfg.cgroupDir(cg2),
		pinDir:    cfg.pinDir(),
		log:       cfg.Logger.With(logkey.Node, cfg.Node),
		links:     map[string]link.Link{},
		cookies:   map[string]uint64{},
	}
	if d.ownNetns, err = NetnsCookie("/proc/thread-self/ns/net"); err != nil {
		return nil, fmt.Errorf("own netns cookie: %w", err)
	}
	if st, err := os.Stat(d.cgroupDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("attach cgroup %s: not a directory: %w", d.cgroupDir, errOr(err, os.ErrNotExist))
	}
	if err := os.MkdirAll(d.pinDir, 0o700); err != nil {
		return nil, fmt.Errorf("create pin dir %s: %w", d.pinDir, err)
	}
	if err := d.load(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.attach(); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// load loads the collection, reusing compatible pinned maps and pinning new
// ones.
func (d *Datapath) load() error {
	spec, err := bpf.LoadRedirect()
	if err != nil {
		return fmt.Errorf("load redirect spec: %w", err)
	}
	if err := spec.Variables[bpf.RedirectVarProxyIp4].Set(ip4Word(d.cfg.ProxyAddr.Addr())); err != nil {
		return fmt.Errorf("set proxy_ip4: %w", err)
	}
	if err := spec.Variables[bpf.RedirectVarProxyPort].Set(d.cfg.ProxyAddr.Port()); err != nil {
		return fmt.Errorf("set proxy_port: %w", err)
	}

	replace := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range replace {
			m.Close()
		}
	}()
	stale := map[string]bool{}
	for _, name := range pinnedMaps {
		path := filepath.Join(d.pinDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("load pinned map %s: %w", path, err)
		}
		if err := spec.Maps[name].Compatible(m); err != nil {
			d.log.Warn("pinned map layout changed, replacing it", logkey.Map, name, logkey.Error, err)
			m.Close()
			stale[name] = true
			continue
		}
		replace[name] = m
	}

	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: replace})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return fmt.Errorf("load redirect programs: %w (verifier: %+v)", err, verr)
		}
		return fmt.Errorf("load redirect programs: %w", err)
	}
	d.coll = coll
	d.records.Store(coll.Maps[bpf.RedirectMapOrigDsts])
	for _, name := range pinnedMaps {
		if _, reused := replace[name]; reused {
			continue
		}
		path := filepath.Join(d.pinDir, name)
		if stale[name] {
			if err := pinReplace(path, coll.Maps[name].Pin); err != nil {
				return fmt.Errorf("replace pinned map %s: %w", path, err)
			}
			continue
		}
		if err := coll.Maps[name].Pin(path); err != nil {
			return fmt.Errorf("pin map %s: %w", path, err)
		}
	}
	d.log.Info("loaded redirect", logkey.AdoptedMaps, len(replace), logkey.Proxy, d.cfg.ProxyAddr.String())
	return nil
}

// pinReplace pins an object at a temporary name and renames it over path,
// so the pin path never disappears. (bpffs rejects names with dots.)
func pinReplace(path string, pin func(string) error) error {
	tmp := path + "_new"
	_ = os.Remove(tmp)
	if err := pin(tmp); err != nil {
		return fmt.Errorf("pin %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// attach adopts or creates each program's link. When attaching fails on a
// node that had no pinned links, the links this call created are removed
// again: half a set (connect4 without sockops) would send connections to
// the proxy without records.
func (d *Datapath) attach() (err error) {
	var fresh []string
	defer func() {
		if err == nil || len(fresh) < len(d.links) {
			return // success, or some links were adopted: keep them
		}
		for _, prog := range fresh {
			_ = d.links[prog].Detach()
			_ = os.Remove(linkPin(d.pinDir, prog))
		}
	}()
	cgID, err := cgroupID(d.cgroupDir)
	if err != nil {
		return err
	}
	cg, err := os.Open(d.cgroupDir)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", d.cgroupDir, err)
	}
	defer cg.Close()
	for _, h := range hooks {
		prog := d.coll.Programs[h.prog]
		path := linkPin(d.pinDir, h.prog)
		old, err := link.LoadPinnedLink(path, nil)
		switch {
		case err == nil:
			if sameCgroupLink(old, cgID, h.attach) {
				if err := old.Update(prog); err != nil {
					old.Close()
					return fmt.Errorf("update pinned %s link: %w", h.prog, err)
				}
				d.links[h.prog] = old
				d.log.Info("adopted pinned link", logkey.Program, h.prog)
				continue
			}
		case errors.Is(err, os.ErrNotExist):
			old = nil
		default:
			return fmt.Errorf("load pinned link %s: %w", path, err)
		}

		l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: prog, Attach: h.attach})
		if err != nil {
			if old != nil {
				old.Close()
			}
			return fmt.Errorf("attach %s to %s: %w", h.prog, d.cgroupDir, err)
		}
		if old != nil {
			// Attached elsewhere: the new link is live, now drop the old one.
			if err = pinReplace(path, l.Pin); err == nil {
				_ = old.Detach()
			}
			old.Close()
		} else {
			err = l.Pin(path)
		}
		if err != nil {
			l.Close()
			return fmt.Errorf("pin %s link at %s: %w", h.prog, path, err)
		}
		// Reopen through the pin: that handle knows it is a cgroup link
		// (Info reports the cgroup), the raw one does not.
		typed, err := link.LoadPinnedLink(path, nil)
		l.Close()
		if err != nil {
			return fmt.Errorf("reopen pinned %s link: %w", h.prog, err)
		}
		d.links[h.prog] = typed
		if old == nil {
			fresh = append(fresh, h.prog)
		}
		d.log.Info("attached", logkey.Program, h.prog, logkey.Cgroup, d.cgroupDir)
	}
	return nil
}

func sameCgroupLink(l link.Link, cgID uint64, attach ebpf.AttachType) bool {
	info, err := l.Info()
	if err != nil {
		return false
	}
	cg := info.Cgroup()
	return cg != nil && cg.CgroupId == cgID && ebpf.AttachType(cg.AttachType) == attach
}

// Close releases this process's handles. The pinned links and maps stay, so
// the redirect keeps working until the next Open adopts them (or Cleanup).
func (d *Datapath) Close() error {
	d.records.Store(nil)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.links {
		l.Close()
	}
	d.links = nil
	if d.coll != nil {
		d.coll.Close()
		d.coll = nil
	}
	return nil
}

// Cleanup detaches and unpins everything of cfg.Node's datapath (the
// `weft-agent cleanup` path). Other nodes' objects are not touched. It is
// idempotent; a running agent of that node should be stopped first (its
// open handles keep the objects alive until it exits).
func Cleanup(cfg Config) error {
	cfg = cfg.withDefaults()
	if err := validateNode(cfg.Node); err != nil {
		return err
	}
	dir := cfg.pinDir()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin dir %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), "link_") {
			if l, err := link.LoadPinnedLink(path, nil); err == nil {
				if err := l.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
					errs = append(errs, fmt.Errorf("detach %s: %w", path, err))
				}
				l.Close()
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", path, err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	_ = os.Remove(cfg.PinRoot) // only succeeds when no other node is left
	return errors.Join(errs...)
}

// Original is where a redirected connection was going. It has the same
// shape as agent/proxy/outbound.Original.
type Original struct {
	Dst         netip.AddrPort
	NetnsCookie uint64
}

// Lookup returns the original destination and the caller's netns cookie of
// a connection the proxy accepted (client = remote address, proxy = local
// address). false means the connection was not redirected by this node's
// datapath: the proxy must refuse it. *Datapath satisfies
// outbound.OrigDstLookup through a one-line adapter (the Original types are
// separate to keep the packages independent).
func (d *Datapath) Lookup(client, proxy netip.AddrPort) (Original, bool) {
	return lookupRecord(d.records.Load(), client, proxy)
}

func lookupRecord(m *ebpf.Map, client, proxy netip.AddrPort) (Original, bool) {
	key, ok := tupleKey(client, proxy)
	if !ok || m == nil {
		return Original{}, false
	}
	var rec bpf.RedirectOrigDst
	if err := m.Lookup(&key, &rec); err != nil {
		return Original{}, false
	}
	return originalFromRecord(rec), true
}
