package policy

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func delta(version, base uint64, d *weftv1.NodePolicyDelta) *weftv1.PolicySnapshot {
	return &weftv1.PolicySnapshot{Version: version, BaseVersion: base, ControllerNonce: "c1", Delta: d}
}

func names(p *weftv1.NodePolicy) string {
	var out []string
	for _, s := range p.GetServices() {
		out = append(out, s.GetName())
	}
	return strings.Join(out, ",")
}

// TestClientAppliesDeltas: a delta on the version in force is applied,
// validated, handed to the applier as a whole policy, ACKed and stored in
// full; a delta against another version, one that does not fit, and one
// whose result is invalid are NACKed (the first two with resync) and the
// last good policy stays; a full snapshot after them is applied.
func TestClientAppliesDeltas(t *testing.T) {
	var mu sync.Mutex
	var applied []string
	apply := func(p *weftv1.NodePolicy) error {
		mu.Lock()
		defer mu.Unlock()
		applied = append(applied, names(p))
		return nil
	}
	store := &Store{Path: filepath.Join(t.TempDir(), "policy.pb")}
	ctl, c, _ := start(t, apply, store)
	recv(t, ctl.reqs) // subscription

	ctl.send <- snapshot(1, "a", "b")
	if r := recv(t, ctl.reqs); r.GetVersion() != 1 || r.GetError() != "" {
		t.Fatalf("want ACK of 1, got %v", r)
	}
	ctl.send <- delta(2, 1, &weftv1.NodePolicyDelta{Services: []*weftv1.ServicePort{{Namespace: "ns", Name: "c", Port: 80}}, RemovedServices: []string{"ns/a:80"}})
	if r := recv(t, ctl.reqs); r.GetVersion() != 2 || r.GetError() != "" {
		t.Fatalf("want ACK of 2, got %v", r)
	}
	want := snapshot(2, "b", "c")
	if cur := c.Current(); !proto.Equal(cur, want) {
		t.Fatalf("in force %v, want %v", cur, want)
	}
	if stored, err := store.Load(); err != nil || !proto.Equal(stored, want) {
		t.Fatalf("stored %v %v, want the applied full policy", stored, err)
	}

	for _, tc := range []struct {
		name   string
		snap   *weftv1.PolicySnapshot
		resync bool
	}{
		{"base mismatch", delta(4, 3, &weftv1.NodePolicyDelta{RemovedServices: []string{"ns/b:80"}}), true},
		{"other controller", &weftv1.PolicySnapshot{Version: 3, BaseVersion: 2, ControllerNonce: "c2", Delta: &weftv1.NodePolicyDelta{}}, true},
		{"removes what is not there", delta(3, 2, &weftv1.NodePolicyDelta{RemovedServices: []string{"ns/a:80"}}), true},
		{"patches what is not there", delta(3, 2, &weftv1.NodePolicyDelta{ClusterPatches: []*weftv1.ClusterPatch{{Name: "ns/b:80", RemovedEndpoints: []*weftv1.EndpointKey{{Ip: "10.0.0.1", Port: 80}}}}}), true},
		{"invalid result", delta(3, 2, &weftv1.NodePolicyDelta{Services: []*weftv1.ServicePort{{Namespace: "ns", Name: "b", Port: 80,
			Producer: &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP, Matches: []*weftv1.Match{{Rule: 5}}}}}}), false},
	} {
		ctl.send <- tc.snap
		r := recv(t, ctl.reqs)
		if r.GetVersion() != tc.snap.Version || r.GetError() == "" || r.GetResync() != tc.resync {
			t.Fatalf("%s: want NACK (resync %v), got %v", tc.name, tc.resync, r)
		}
		if cur := c.Current(); !proto.Equal(cur, want) {
			t.Fatalf("%s: in force %v, want the last good", tc.name, cur)
		}
	}
	ctl.send <- snapshot(5, "d")
	if r := recv(t, ctl.reqs); r.GetVersion() != 5 || r.GetError() != "" {
		t.Fatalf("want ACK of 5, got %v", r)
	}
	// an empty delta from the version in force to itself (a resumed
	// stream) is ACKed and changes nothing
	ctl.send <- delta(5, 5, &weftv1.NodePolicyDelta{})
	if r := recv(t, ctl.reqs); r.GetVersion() != 5 || r.GetError() != "" {
		t.Fatalf("want ACK of 5, got %v", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(applied, " ") != "a,b b,c d" {
		t.Fatalf("applied %q", applied)
	}
}

// TestClientSubscribesWithVersionInForce: after a restore, the first
// message names the restored version and its controller, so the
// controller can answer with a delta.
func TestClientSubscribesWithVersionInForce(t *testing.T) {
	store := &Store{Path: filepath.Join(t.TempDir(), "policy.pb")}
	if err := store.Save(snapshot(7, "kept")); err != nil {
		t.Fatal(err)
	}
	ctl, _, _ := startWith(t, func(c *Config) {
		c.Store = store
		c.Apply = func(*weftv1.NodePolicy) error { return nil }
	}, func(c *Client) {
		if err := c.Restore(); err != nil {
			t.Fatal(err)
		}
	})
	if r := recv(t, ctl.reqs); r.GetVersion() != 7 || r.GetControllerNonce() != "c1" || !r.GetDeltas() || !r.GetEndpointPatches() || r.GetError() != "" {
		t.Fatalf("subscription %v, want version 7 of c1", r)
	}
}
