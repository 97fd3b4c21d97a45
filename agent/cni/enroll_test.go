package cni

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// fakeHolder stands in for the datapath: netns path -> cookie, and the
// enrolled map as a set.
type fakeHolder struct {
	cookies map[string]uint64 // netns -> cookie; missing: netns gone
	holds   map[string]uint64 // uid -> cookie
	inMap   map[uint64]bool
}

func newFakeHolder() *fakeHolder {
	return &fakeHolder{cookies: map[string]uint64{}, holds: map[string]uint64{}, inMap: map[uint64]bool{}}
}

func (f *fakeHolder) Hold(uid, netns string) (uint64, error) {
	c, ok := f.cookies[netns]
	if !ok {
		return 0, errors.New("netns gone")
	}
	f.holds[uid] = c
	f.inMap[c] = true
	return c, nil
}

func (f *fakeHolder) Release(uid string) error {
	if c, ok := f.holds[uid]; ok {
		delete(f.inMap, c)
		delete(f.holds, uid)
	}
	return nil
}

func (f *fakeHolder) Unhold(uid string) { delete(f.holds, uid) }

func (f *fakeHolder) Holding(uid string) (uint64, bool, bool, error) {
	c, ok := f.holds[uid]
	return c, ok, ok && f.inMap[c], nil
}

func req(uid string) Request {
	return Request{Node: "n1", ContainerID: "c-" + uid, Netns: "/ns/" + uid, Namespace: "mesh", Name: "p-" + uid, UID: uid}
}

// TestEnrollerHoldsUntilThePolicyLetsGo: a held pod stays held while no
// policy names it, and once a policy named it, a later one that does not
// hands it to the policy (its namespace left the mesh).
func TestEnrollerHoldsUntilThePolicyLetsGo(t *testing.T) {
	h := newFakeHolder()
	h.cookies["/ns/a"], h.cookies["/ns/b"] = 11, 12
	e, err := NewEnroller(EnrollerConfig{Holder: h, Decider: staticDecider{}, Store: filepath.Join(t.TempDir(), "holds.json")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, uid := range []string{"a", "b"} {
		if rep, err := e.Add(ctx, req(uid)); err != nil || !rep.Enrolled {
			t.Fatalf("Add %s: %+v %v", uid, rep, err)
		}
	}
	e.Observe(map[string]bool{}) // a policy that names neither yet
	if _, ok := h.holds["a"]; !ok || !e.HoldsCookie(11) {
		t.Fatal("a pod no policy named yet was let go")
	}
	e.Observe(map[string]bool{"a": true, "b": true})
	e.Observe(map[string]bool{"b": true}) // a left the mesh
	if _, ok := h.holds["a"]; ok || e.HoldsCookie(11) {
		t.Error("a pod the policy dropped is still held")
	}
	if _, ok := h.holds["b"]; !ok {
		t.Error("b let go")
	}
	// A new agent restores b from the store; a netns that is gone is dropped.
	delete(h.cookies, "/ns/b")
	h2 := newFakeHolder()
	e2, err := NewEnroller(EnrollerConfig{Holder: h2, Decider: staticDecider{}, Store: e.cfg.Store})
	if err != nil {
		t.Fatal(err)
	}
	if e2.HoldsCookie(12) {
		t.Error("restored a hold whose netns is gone")
	}
	h2.cookies["/ns/c"] = 13
	if _, err := e2.Add(ctx, req("c")); err != nil {
		t.Fatal(err)
	}
	// GC: only sandboxes the runtime still knows stay.
	if err := e2.GC(ctx, []string{"c-other"}); err != nil {
		t.Fatal(err)
	}
	if e2.HoldsCookie(13) || h2.inMap[13] {
		t.Error("GC kept a sandbox the runtime no longer lists")
	}
}

// TestEnrollerTwoAgents: the two agents of a handoff share the store; what
// one holds, the other holds at its next operation.
func TestEnrollerTwoAgents(t *testing.T) {
	store := filepath.Join(t.TempDir(), "holds.json")
	h1, h2 := newFakeHolder(), newFakeHolder()
	h1.cookies["/ns/a"], h2.cookies["/ns/a"] = 21, 21
	old, _ := NewEnroller(EnrollerConfig{Holder: h1, Decider: staticDecider{}, Store: store})
	next, _ := NewEnroller(EnrollerConfig{Holder: h2, Decider: staticDecider{}, Store: store})
	if _, err := next.Add(context.Background(), req("a")); err != nil {
		t.Fatal(err)
	}
	old.Observe(map[string]bool{}) // the old agent's sync
	if _, ok := h1.holds["a"]; !ok {
		t.Error("the old agent does not hold what the new one enrolled: its sync would unenroll it")
	}
	if err := next.Del(context.Background(), req("a")); err != nil {
		t.Fatal(err)
	}
	old.Observe(map[string]bool{})
	if _, ok := h1.holds["a"]; ok {
		t.Error("the old agent still holds a pod the new one deleted")
	}
}
