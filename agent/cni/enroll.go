package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/containernetworking/cni/pkg/types"
	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/api/logkey"
)

// Holder is the datapath's side of enrollment (*datapath.Datapath).
type Holder interface {
	Hold(uid, netnsPath string) (uint64, error)
	Release(uid string) error
	Unhold(uid string)
	Holding(uid string) (cookie uint64, held, inMap bool, err error)
}

// Held is one pod enrolled through CNI, as kept on disk.
type Held struct {
	UID         string `json:"uid"`
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	ContainerID string `json:"containerID"`
	Netns       string `json:"netns"`
	Cookie      uint64 `json:"cookie"`
}

// EnrollerConfig configures an Enroller.
type EnrollerConfig struct {
	Holder  Holder
	Decider Decider
	// Store keeps the holds across agent restarts (JSON); empty: memory only.
	Store  string
	Logger *slog.Logger
}

// Enroller is the agent's Handler: it decides, holds and remembers.
//
// The store file is the truth about holds, read and written under a flock
// on every operation: during an agent handoff two agents of one node run at
// once, and each enrolls what the other held.
type Enroller struct {
	cfg EnrollerConfig
	log *slog.Logger

	mu     sync.Mutex
	pods   map[string]Held // by pod UID, as last read from the store
	cookie map[uint64]bool // cookies of pods
	seen   map[string]bool // held UIDs a policy has named
	policy map[string]bool // UIDs the last policy named
	onHold func()          // called after a hold changes (the agent wakes waiting proxies)
}

// NewEnroller makes an Enroller and restores the holds of an earlier agent
// from the store: a pod whose netns is gone or changed is dropped.
func NewEnroller(cfg EnrollerConfig) (*Enroller, error) {
	if cfg.Holder == nil || cfg.Decider == nil {
		return nil, errors.New("cni enroller: holder and decider are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Enroller{cfg: cfg, log: cfg.Logger, pods: map[string]Held{}, cookie: map[uint64]bool{}, seen: map[string]bool{}}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e, e.update(func() bool { return true })
}

// update locks the store, reads it, holds what it lists (dropping a pod
// whose netns is gone or changed), runs f and writes the store back when f
// says so. e.mu is held.
func (e *Enroller) update(f func() bool) error {
	unlock, err := e.lockStore()
	if err != nil {
		return err
	}
	defer unlock()
	held, err := e.read()
	if err != nil {
		return err
	}
	pods := map[string]Held{}
	dirty := false
	for _, h := range held {
		cookie, err := e.cfg.Holder.Hold(h.UID, h.Netns)
		if err != nil || cookie != h.Cookie {
			if err == nil {
				e.cfg.Holder.Release(h.UID) // another netns now: not the pod's
			}
			e.log.Info("cni hold dropped: its netns is gone", logkey.Pod, h.Namespace+"/"+h.Name, logkey.Error, err)
			dirty = true
			continue
		}
		pods[h.UID] = h
	}
	for uid := range e.pods {
		if _, ok := pods[uid]; !ok {
			e.cfg.Holder.Unhold(uid) // released by the other agent of the node
		}
	}
	e.setPods(pods)
	if f() || dirty {
		return e.write()
	}
	return nil
}

func (e *Enroller) setPods(pods map[string]Held) {
	e.pods = pods
	e.cookie = map[uint64]bool{}
	for _, h := range pods {
		e.cookie[h.Cookie] = true
	}
}

func (e *Enroller) read() ([]Held, error) {
	if e.cfg.Store == "" {
		held := make([]Held, 0, len(e.pods))
		for _, h := range e.pods {
			held = append(held, h)
		}
		return held, nil
	}
	data, err := os.ReadFile(e.cfg.Store)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read cni holds: %w", err)
	}
	var held []Held
	if err := json.Unmarshal(data, &held); err != nil {
		e.log.Warn("cni holds unreadable; starting without them", logkey.Path, e.cfg.Store, logkey.Error, err)
		return nil, nil
	}
	return held, nil
}

// lockStore takes the store's flock (a sibling .lock file).
func (e *Enroller) lockStore() (func(), error) {
	if e.cfg.Store == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(filepath.Dir(e.cfg.Store), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(e.cfg.Store+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// write writes the holds atomically. e.mu and the flock are held.
func (e *Enroller) write() error {
	if e.cfg.Store == "" {
		return nil
	}
	held := make([]Held, 0, len(e.pods))
	for _, h := range e.pods {
		held = append(held, h)
	}
	data, err := json.Marshal(held)
	if err != nil {
		return err
	}
	tmp := e.cfg.Store + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, e.cfg.Store)
}

// OnHold sets f to be called after a pod is held (the agent's proxy waits
// for the policy of held pods).
func (e *Enroller) OnHold(f func()) {
	e.mu.Lock()
	e.onHold = f
	e.mu.Unlock()
}

// Add implements Handler: decide, then hold (the map holds the cookie when
// it returns). Repeated ADDs of one sandbox are idempotent.
func (e *Enroller) Add(ctx context.Context, r Request) (Reply, error) {
	if r.Netns == "" || r.UID == "" {
		return Reply{}, types.NewError(types.ErrInvalidEnvironmentVariables, "weft agent: ADD needs CNI_NETNS and K8S_POD_UID", "")
	}
	d, err := e.cfg.Decider.Decide(ctx, r)
	if err != nil {
		return Reply{}, err
	}
	if !d.Enroll {
		return Reply{Reason: d.Reason}, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var cookie uint64
	var herr error
	err = e.update(func() bool {
		cookie, herr = e.cfg.Holder.Hold(r.UID, r.Netns)
		if herr != nil {
			return false
		}
		e.pods[r.UID] = Held{UID: r.UID, Namespace: r.Namespace, Name: r.Name, ContainerID: r.ContainerID, Netns: r.Netns, Cookie: cookie}
		e.cookie[cookie] = true
		return true
	})
	if herr != nil {
		return Reply{}, types.NewError(types.ErrTryAgainLater, "weft agent: enroll the pod's netns", herr.Error())
	}
	if err != nil {
		// The map holds the cookie; only an agent restart before the
		// pod's policy arrives would lose it.
		e.log.Warn("cni holds not saved", logkey.Error, err)
	}
	if e.onHold != nil {
		e.onHold()
	}
	return Reply{Enrolled: true, Cookie: cookie}, nil
}

// Del implements Handler: the pod's enrollment goes, known or not.
func (e *Enroller) Del(_ context.Context, r Request) error {
	if r.UID == "" {
		return nil // nothing identifies a pod: nothing of it is held
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var rerr error
	err := e.update(func() bool {
		if h, ok := e.pods[r.UID]; ok {
			if r.ContainerID != "" && h.ContainerID != "" && h.ContainerID != r.ContainerID {
				return false // an older sandbox of the pod: the current one stays
			}
			delete(e.cookie, h.Cookie)
			delete(e.pods, r.UID)
		}
		delete(e.seen, r.UID)
		rerr = e.cfg.Holder.Release(r.UID)
		return true
	})
	if rerr != nil {
		return types.NewError(types.ErrTryAgainLater, "weft agent: remove the pod's enrollment", rerr.Error())
	}
	return err
}

// Check implements Handler: a pod that should be enrolled must be, with its
// cookie in the map.
func (e *Enroller) Check(ctx context.Context, r Request) (Reply, error) {
	cookie, held, inMap, err := e.cfg.Holder.Holding(r.UID)
	if err != nil {
		return Reply{}, types.NewError(types.ErrTryAgainLater, "weft agent: read the enrolled map", err.Error())
	}
	if held {
		if !inMap {
			return Reply{}, types.NewError(types.ErrInternal, fmt.Sprintf("weft agent: pod %s/%s is held but its cookie %d is not in the enrolled map", r.Namespace, r.Name, cookie), "")
		}
		return Reply{Enrolled: true, Cookie: cookie}, nil
	}
	d, err := e.cfg.Decider.Decide(ctx, r)
	if err != nil {
		return Reply{}, err
	}
	if d.Enroll && !e.inPolicy(r.UID) {
		return Reply{}, types.NewError(types.ErrInternal, fmt.Sprintf("weft agent: pod %s/%s should be enrolled but is not", r.Namespace, r.Name), "")
	}
	return Reply{Enrolled: d.Enroll, Reason: d.Reason}, nil
}

func (e *Enroller) inPolicy(uid string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.policy[uid]
}

// GC implements Handler: holds of sandboxes not in valid are released.
func (e *Enroller) GC(ctx context.Context, valid []string) error {
	keep := map[string]bool{}
	for _, id := range valid {
		keep[id] = true
	}
	e.mu.Lock()
	var gone []Held
	for _, h := range e.pods {
		if h.ContainerID != "" && !keep[h.ContainerID] {
			gone = append(gone, h)
		}
	}
	e.mu.Unlock()
	var errs []error
	for _, h := range gone {
		errs = append(errs, e.Del(ctx, Request{UID: h.UID, ContainerID: h.ContainerID}))
	}
	return errors.Join(errs...)
}

// Ready implements Handler.
func (e *Enroller) Ready() error { return nil }

// HoldsCookie reports whether cookie is a held pod's.
func (e *Enroller) HoldsCookie(cookie uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cookie[cookie]
}

// Observe is told the pod UIDs of each policy the agent applies, before it
// syncs the datapath. A held pod that a policy named and a later one does
// not (its namespace or the pod left the mesh) is handed to the policy: the
// sync that follows unenrolls it.
func (e *Enroller) Observe(inPolicy map[string]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policy = inPolicy
	err := e.update(func() bool {
		changed := false
		for uid, h := range e.pods {
			switch {
			case inPolicy[uid]:
				e.seen[uid] = true
			case e.seen[uid]:
				e.cfg.Holder.Unhold(uid)
				delete(e.pods, uid)
				delete(e.cookie, h.Cookie)
				delete(e.seen, uid)
				changed = true
			}
		}
		return changed
	})
	if err != nil {
		e.log.Warn("cni holds not read or saved", logkey.Error, err)
	}
}
