package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	bpf.RedirectMapStrict,
	bpf.RedirectMapNodeAddrs,
	bpf.RedirectMapStrictRefusals,
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
	{bpf.RedirectProgWeftStrictIngress, ebpf.AttachCGroupInetIngress},
	{bpf.RedirectProgWeftStrictEgress, ebpf.AttachCGroupInetEgress},
}

func linkPin(dir, prog string) string { return filepath.Join(dir, "link_"+prog) }

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
	if err := spec.Variables[bpf.RedirectVarDialMark].Set(d.cfg.DialMark); err != nil {
		return fmt.Errorf("set dial_mark: %w", err)
	}
	if err := spec.Variables[bpf.RedirectVarDialMarkMask].Set(d.cfg.DialMarkMask); err != nil {
		return fmt.Errorf("set dial_mark_mask: %w", err)
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
