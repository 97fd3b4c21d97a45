package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/agent/handoff"
	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/sockholder"
	"github.com/weft-mesh/weft/api/logkey"
)

// The agent's listeners, by handoff name.
const (
	lnOutbound = "outbound" // proxy capture, <node ip>:proxy.OutboundPort
	lnInbound  = "inbound"  // proxy mTLS tunnel, <node ip>:proxy.InboundPort
	lnHealth   = "health"   // /healthz, /readyz
	lnMetrics  = "metrics"  // /metrics
)

// listenAddrs are the addresses the agent serves, by handoff name.
func (a *Agent) listenAddrs() map[string]string {
	return ListenAddrs(a.cfg.NodeIP, a.cfg.HealthAddr, a.cfg.MetricsAddr)
}

// ListenAddrs are the addresses an agent with this node IP, health and
// metrics addresses (empty: none) serves, by handoff name: what the node's
// socket holder (weft-agent hold) holds.
func ListenAddrs(nodeIP netip.Addr, healthAddr, metricsAddr string) map[string]string {
	m := map[string]string{
		lnOutbound: netip.AddrPortFrom(nodeIP, proxy.OutboundPort).String(),
		lnInbound:  netip.AddrPortFrom(nodeIP, proxy.InboundPort).String(),
	}
	if healthAddr != "" {
		m[lnHealth] = healthAddr
	}
	if metricsAddr != "" {
		m[lnMetrics] = metricsAddr
	}
	return m
}

// handoffPath is the node's handoff socket, in the per-node state
// directory that the old and the new agent pod share.
func (a *Agent) handoffPath() string {
	_, p := sockholder.Paths(a.cfg.StateDir, a.cfg.Node)
	return p
}

// holderServeWait bounds how long an agent that got its listeners from
// the socket holder (no agent served them: the previous one crashed) waits
// until it can serve before accepting anyway. Meanwhile new connections
// wait in the kernel's accept queue.
const holderServeWait = 30 * time.Second

// acquire returns the agent's listeners, from (in order): the agent
// serving them on this node (the one this agent replaces), the node's
// socket holder (package sockholder; no agent serves them, e.g. the last
// one was killed), or bound here. From the previous agent it waits until
// this agent can serve, takes the very same sockets over (see package
// handoff) and returns the connection to it: call Serving on it once
// accepting. It returns early only when ctx ends.
func (a *Agent) acquire(ctx context.Context) (map[string]net.Listener, *handoff.Successor, error) {
	path := a.handoffPath()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("state dir: %w", err)
	}
	waitLogged := false
	for {
		s, err := handoff.Dial(ctx, path)
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			if !errors.Is(err, handoff.ErrNoHolder) {
				a.log.Warn("handoff socket unusable; trying the socket holder, else binding the listeners", logkey.Path, path, logkey.Error, err)
			}
			if ls, ok := a.fromHolder(ctx); ok {
				a.source = sockholder.FromHolder
				return ls, nil, nil
			}
			ls, err := a.bindAll(ctx, a.listenAddrs())
			if err == nil {
				a.source = sockholder.Bound
				return ls, nil, nil
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				return nil, nil, err
			}
			// An agent that does not hand over (an older version, or one
			// whose holder just went away) still listens: wait for it, and
			// look for a holder again.
			if !waitLogged {
				a.log.Warn("proxy addresses in use and no agent offers them; retrying until they are free", logkey.Error, err)
				waitLogged = true
			}
			if !sleep(ctx, 200*time.Millisecond) {
				return nil, nil, ctx.Err()
			}
			continue
		}
		ls, err := a.take(ctx, s)
		if err == nil {
			a.source = sockholder.FromPrev
			return ls, s, nil
		}
		s.Close()
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		a.log.Info("listener handoff did not complete; trying again", logkey.Error, err)
		if !sleep(ctx, 100*time.Millisecond) {
			return nil, nil, ctx.Err()
		}
	}
}

// fromHolder gets a share of the listeners from the node's socket holder,
// if one serves, then waits (at most holderServeWait) until this agent can
// serve: the connections that arrived while no agent ran wait in the
// accept queue and are accepted once it can.
func (a *Agent) fromHolder(ctx context.Context) (map[string]net.Listener, bool) {
	if a.cfg.HolderPath == "" {
		return nil, false
	}
	got, err := sockholder.Share(ctx, a.cfg.HolderPath)
	if err != nil {
		if !errors.Is(err, handoff.ErrNoHolder) {
			a.log.Warn("socket holder did not share the listeners", logkey.Path, a.cfg.HolderPath, logkey.Error, err)
		}
		return nil, false
	}
	a.log.Info("no agent serves this node: listeners shared by the socket holder; accepting once this agent can serve", logkey.Path, a.cfg.HolderPath)
	wctx, cancel := context.WithTimeout(ctx, holderServeWait)
	err = a.waitServable(wctx, nil)
	cancel()
	if ctx.Err() != nil {
		closeAll(got)
		return nil, false
	}
	if err != nil {
		a.log.Warn("cannot serve everything yet; accepting anyway", logkey.Error, err, logkey.Waited, holderServeWait.String())
	}
	ls, err := sockholder.Fit(ctx, got, a.listenAddrs(), proxy.Listen, a.log)
	if err != nil {
		a.log.Warn("socket holder's listeners unusable", logkey.Error, err)
		return nil, false
	}
	return ls, true
}

// take waits until this agent can serve, then takes the holder's
// listeners. Listeners with another address than this agent's (a changed
// configuration) are replaced by bound ones; missing ones are bound.
func (a *Agent) take(ctx context.Context, s *handoff.Successor) (map[string]net.Listener, error) {
	a.log.Info("an agent serves this node: taking its listeners over once this one can serve", logkey.Path, a.handoffPath())
	// Its SVIDs first: with them and the policy restored from disk this
	// agent can serve even while the controller is unreachable.
	if recs, err := s.State(ctx); err != nil {
		if errors.Is(err, handoff.ErrHolderGone) || ctx.Err() != nil {
			return nil, err
		}
		a.log.Warn("handoff: no identities from the previous agent; waiting for the controller to issue them", logkey.Error, err)
	} else {
		n, err := a.ids.Import(recs)
		if err != nil {
			a.log.Warn("handoff: some identities of the previous agent not taken", logkey.Error, err)
		}
		a.log.Info("identities handed over", logkey.Taken, n, logkey.Offered, len(recs))
	}
	since := time.Now()
	if err := a.waitServable(ctx, s.Gone()); err != nil {
		return nil, err
	}
	got, err := s.Take(ctx)
	if err != nil {
		return nil, err
	}
	ls, err := sockholder.Fit(ctx, got, a.listenAddrs(), proxy.Listen, a.log)
	if err != nil {
		return nil, err
	}
	a.log.Info("took the listeners over", logkey.Waited, time.Since(since).Round(time.Millisecond).String())
	return ls, nil
}

// waitServable waits until this agent can serve (servable), ctx ends
// (its error) or gone is closed (handoff.ErrHolderGone).
func (a *Agent) waitServable(ctx context.Context, gone <-chan struct{}) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	since, lastLog := time.Now(), time.Now()
	for {
		ok, why := a.servable()
		if ok {
			return nil
		}
		if time.Since(lastLog) >= 5*time.Second {
			a.log.Info("not ready to serve yet", logkey.Reason, why, logkey.Waited, time.Since(since).Round(time.Second).String())
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", why, ctx.Err())
		case <-gone:
			return handoff.ErrHolderGone
		case <-tick.C:
		}
	}
}

// servable reports whether this agent can serve what the proxy accepts: a
// policy is applied and every identity it names has a valid SVID.
func (a *Agent) servable() (bool, string) {
	a.mu.Lock()
	pol := a.current
	a.mu.Unlock()
	if pol == nil {
		return false, "no policy applied yet"
	}
	now := time.Now()
	for _, st := range a.ids.Status() {
		if st.Serial == "" || !now.Before(st.NotAfter) {
			return false, "no SVID for " + st.ID.String() + " yet"
		}
	}
	return true, ""
}

// bindAll binds every address of m (all or none).
func (a *Agent) bindAll(ctx context.Context, m map[string]string) (map[string]net.Listener, error) {
	ls := map[string]net.Listener{}
	for name, addr := range m {
		l, err := proxy.Listen(ctx, addr)
		if err != nil {
			closeAll(ls)
			return nil, err
		}
		ls[name] = l
	}
	return ls, nil
}

func closeAll(ls map[string]net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// sameAddr reports whether a listener bound at want listens at got.
var sameAddr = sockholder.SameAddr

// sleep waits d or until ctx ends (false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
