package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/weft-mesh/weft/bpf"
)

// ErrNotLoaded means a node has no pinned datapath.
var ErrNotLoaded = errors.New("no pinned datapath for node")

// Record is one redirected connection in the record map.
type Record struct {
	Client, Proxy netip.AddrPort
	Original      Original
}

// PinnedLink is one attached program.
type PinnedLink struct {
	Program  string
	ID       uint32
	CgroupID uint64 // inode number of the attach cgroup
}

// Pinned is a read-only view of a node's pinned datapath.
type Pinned struct {
	State   State
	Records []Record
	Links   []PinnedLink
}

// Inspect reads a node's pinned maps and links without loading or
// attaching anything (for `weft-agent dump`, weftctl and tests). It
// returns ErrNotLoaded when the node has no pin directory.
func Inspect(cfg Config) (Pinned, error) {
	cfg = cfg.withDefaults()
	if err := validateNode(cfg.Node); err != nil {
		return Pinned{}, err
	}
	dir := cfg.pinDir()
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return Pinned{}, fmt.Errorf("%w %s (%s)", ErrNotLoaded, cfg.Node, dir)
	}
	var p Pinned
	ro := &ebpf.LoadPinOptions{ReadOnly: true}
	open := func(name string) (*ebpf.Map, error) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), ro)
		if err != nil {
			return nil, fmt.Errorf("load pinned map %s: %w", name, err)
		}
		return m, nil
	}

	var err error
	if p.State, err = inspectState(open); err != nil {
		return p, err
	}

	m, err := open(bpf.RedirectMapOrigDsts)
	if err != nil {
		return p, err
	}
	var tk bpf.RedirectTuple
	var od bpf.RedirectOrigDst
	it := m.Iterate()
	for it.Next(&tk, &od) {
		p.Records = append(p.Records, Record{
			Client:   netip.AddrPortFrom(wordIP4(tk.ClientIp), tk.ClientPort),
			Proxy:    netip.AddrPortFrom(wordIP4(tk.ProxyIp), tk.ProxyPort),
			Original: originalFromRecord(od),
		})
	}
	m.Close()
	if err := it.Err(); err != nil {
		return p, fmt.Errorf("read records: %w", err)
	}

	for _, h := range hooks {
		l, err := link.LoadPinnedLink(linkPin(dir, h.prog), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return p, fmt.Errorf("load pinned link %s: %w", h.prog, err)
		}
		pl := PinnedLink{Program: h.prog}
		if info, err := l.Info(); err == nil {
			pl.ID = uint32(info.ID)
			if cg := info.Cgroup(); cg != nil {
				pl.CgroupID = cg.CgroupId
			}
		}
		l.Close()
		p.Links = append(p.Links, pl)
	}
	return p, nil
}

// inspectState reads the agent-written maps through open.
func inspectState(open func(string) (*ebpf.Map, error)) (State, error) {
	var st State
	m, err := open(bpf.RedirectMapEnrolled)
	if err != nil {
		return st, err
	}
	var cookie uint64
	var v uint32
	it := m.Iterate()
	for it.Next(&cookie, &v) {
		st.Enrolled = append(st.Enrolled, cookie)
	}
	m.Close()
	if err := it.Err(); err != nil {
		return st, fmt.Errorf("read enrolled: %w", err)
	}

	if m, err = open(bpf.RedirectMapMeshed); err != nil {
		return st, err
	}
	var vk bpf.RedirectVipKey
	it = m.Iterate()
	for it.Next(&vk, &v) {
		st.Meshed = append(st.Meshed, vipFromKey(vk))
	}
	m.Close()
	if err := it.Err(); err != nil {
		return st, fmt.Errorf("read meshed: %w", err)
	}

	// strict maps: absent in pins of an agent older than strict mTLS
	if m, err = open(bpf.RedirectMapStrict); err == nil {
		st.Strict, err = readStrict(m)
		m.Close()
		if err != nil {
			return st, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return st, err
	}
	if m, err = open(bpf.RedirectMapNodeAddrs); err == nil {
		st.NodeAddrs, err = readAddrSet(m)
		m.Close()
		if err != nil {
			return st, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return st, err
	}

	return st, nil
}
