package datapath

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/weft-mesh/weft/api/logkey"
)

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
	holds   map[string]uint64 // pod UID -> netns cookie enrolled by Hold (hold.go)
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
// Config.BPFFS must be a bpffs (the host's: see MountBPFFSIn); Open fails
// with ErrNoBPFFS otherwise, unless Config.AllowPrivateBPFFS. It discovers
// (or mounts) the cgroup v2 hierarchy.
func Open(cfg Config) (*Datapath, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	mounted, err := ensureBPFFS(cfg.BPFFS, cfg.AllowPrivateBPFFS)
	if err != nil {
		return nil, err
	}
	if mounted {
		// In a private mount namespace this mount (and the pins in it)
		// dies with the namespace. Only tests allow it.
		cfg.Logger.Warn("mounted a bpffs of its own (AllowPrivateBPFFS); pins survive agent restarts only if this mount is the host's", logkey.Path, cfg.BPFFS)
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
		holds:     map[string]uint64{},
	}
	if d.ownNetns, err = NetnsCookie("/proc/thread-self/ns/net"); err != nil {
		return nil, fmt.Errorf("own netns cookie: %w", err)
	}
	if st, err := os.Stat(d.cgroupDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("attach cgroup %s: not a directory: %w", d.cgroupDir, cmp.Or(err, os.ErrNotExist))
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
