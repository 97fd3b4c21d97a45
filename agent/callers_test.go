package agent

import (
	"sync/atomic"
	"testing"
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// gateFixture is a callerGate over one pod (cookie 7) whose presence in
// the policy, hold by weft-cni and SVID the test switches.
type gateFixture struct {
	inPolicy, held, issued atomic.Bool
	w                      *weftv1.Workload
}

func (f *gateFixture) gate(wait time.Duration) *callerGate {
	never := make(chan struct{})
	return &callerGate{
		lookup: func(c uint64) (*weftv1.Workload, bool) {
			if c == 7 && f.inPolicy.Load() {
				return f.w, true
			}
			return nil, false
		},
		held:    func(c uint64) bool { return c == 7 && f.held.Load() },
		issued:  func(*weftv1.Workload) bool { return f.issued.Load() },
		changed: func() <-chan struct{} { return never }, // the gate's poll must see the change
		wait:    wait,
	}
}

// TestCallerGateWaitsForTheSVID: the first connection of a pod weft-cni
// enrolled, made after its policy is in force but before its identity's
// SVID is issued, is held until the SVID is there, not let through to be
// answered 502 (what CI's FirstConnectionOfANewPodIsMeshed caught once the
// controller's first round stopped waiting for a debounce window).
func TestCallerGateWaitsForTheSVID(t *testing.T) {
	f := &gateFixture{w: &weftv1.Workload{Namespace: "a", Name: "p"}}
	f.inPolicy.Store(true)
	f.held.Store(true)
	done := make(chan bool, 1)
	go func() {
		w, ok := f.gate(time.Minute).caller(7)
		done <- ok && w == f.w
	}()
	select {
	case <-done:
		t.Fatal("the connection went on before the pod's SVID was issued")
	case <-time.After(200 * time.Millisecond):
	}
	f.issued.Store(true)
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("the caller was not returned once its SVID was issued")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was still held after the SVID was issued")
	}
}

// TestCallerGate: what is not held is not waited for, and what is held
// waits at most wait and then gets what the policy says.
func TestCallerGate(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		inPolicy, held, issued bool
		wantOK, waits          bool
	}{
		{"named, not held, no SVID: the proxy says why", true, false, false, true, false},
		{"unknown and not held", false, false, false, false, false},
		{"named, held, SVID issued", true, true, true, true, false},
		{"held, never named", false, true, false, false, true},
		{"named and held, SVID never issued", true, true, false, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &gateFixture{w: &weftv1.Workload{Namespace: "a", Name: "p"}}
			f.inPolicy.Store(tc.inPolicy)
			f.held.Store(tc.held)
			f.issued.Store(tc.issued)
			const wait = 300 * time.Millisecond
			start := time.Now()
			_, ok := f.gate(wait).caller(7)
			waited := time.Since(start) >= wait
			if ok != tc.wantOK || waited != tc.waits {
				t.Fatalf("ok %v after %v, want ok %v and waiting %v", ok, time.Since(start), tc.wantOK, tc.waits)
			}
		})
	}
}
