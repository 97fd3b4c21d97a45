package agent

import (
	"time"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// callerGate decides when a redirected connection may go on, by the
// caller's netns cookie: once the policy names its pod and, for a pod
// weft-cni enrolled, once the SVID of the pod's identity is issued. A
// pod's first connections may come before its policy, and its policy
// before its certificate (the agent asks for it when the policy names the
// identity); such connections are held, at most wait, rather than refused
// or answered 502 (never sent around the proxy).
type callerGate struct {
	// lookup is the workload the policy in force names for a cookie.
	lookup func(cookie uint64) (*weftv1.Workload, bool)
	// held reports whether weft-cni enrolled the cookie's pod.
	held func(cookie uint64) bool
	// issued reports whether a workload's identity has its SVID.
	issued func(*weftv1.Workload) bool
	// changed is closed when the policy or the holds change.
	changed func() <-chan struct{}
	wait    time.Duration
}

// caller returns the cookie's workload when its connection may go on;
// after wait, whatever the policy says (the proxy refuses with the reason).
func (g *callerGate) caller(cookie uint64) (*weftv1.Workload, bool) {
	w, ok := g.lookup(cookie)
	if !g.held(cookie) {
		return w, ok
	}
	if ok && g.issued(w) {
		return w, true
	}
	deadline := time.NewTimer(g.wait)
	defer deadline.Stop()
	poll := time.NewTicker(20 * time.Millisecond) // the identity manager does not notify
	defer poll.Stop()
	for {
		ch := g.changed()
		if w, ok := g.lookup(cookie); ok && g.issued(w) {
			return w, true
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-deadline.C:
			return g.lookup(cookie)
		}
	}
}
