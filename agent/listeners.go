package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/agent/handoff"
	"github.com/weft-mesh/weft/agent/proxy"
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
	m := map[string]string{
		lnOutbound: netip.AddrPortFrom(a.cfg.NodeIP, proxy.OutboundPort).String(),
		lnInbound:  netip.AddrPortFrom(a.cfg.NodeIP, proxy.InboundPort).String(),
	}
	if a.cfg.HealthAddr != "" {
		m[lnHealth] = a.cfg.HealthAddr
	}
	if a.cfg.MetricsAddr != "" {
		m[lnMetrics] = a.cfg.MetricsAddr
	}
	return m
}

// handoffPath is the node's handoff socket, in the per-node state
// directory that the old and the new agent pod share.
func (a *Agent) handoffPath() string {
	return filepath.Join(a.cfg.StateDir, a.cfg.Node, "handoff.sock")
}

// acquire returns the agent's listeners. When another agent serves them on
// this node (the one this agent replaces), it waits until this agent can
// serve, then takes the very same sockets over (see package handoff) and
// returns the connection to the holder: call Serving on it once accepting.
// When nobody does, it binds them. It returns early only when ctx ends.
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
				a.log.Warn("handoff socket unusable; binding the listeners", logkey.Path, path, logkey.Error, err)
			}
			ls, err := a.bindAll(ctx, a.listenAddrs())
			if err == nil {
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
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	since, lastLog := time.Now(), time.Now()
	for {
		ok, why := a.servable()
		if ok {
			break
		}
		if time.Since(lastLog) >= 5*time.Second {
			a.log.Info("not ready to take over yet", logkey.Reason, why, logkey.Waited, time.Since(since).Round(time.Second).String())
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.Gone():
			return nil, handoff.ErrHolderGone
		case <-tick.C:
		}
	}
	got, err := s.Take(ctx)
	if err != nil {
		return nil, err
	}
	want := a.listenAddrs()
	ls := map[string]net.Listener{}
	for name, l := range got {
		if addr, ok := want[name]; ok && sameAddr(addr, l.Addr()) {
			ls[name] = l
			continue
		}
		a.log.Warn("handed-over listener not used: address differs", logkey.Listener, name, logkey.Addr, l.Addr().String(), logkey.Want, want[name])
		l.Close()
	}
	missing := map[string]string{}
	for name, addr := range want {
		if ls[name] == nil {
			missing[name] = addr
		}
	}
	if len(missing) > 0 {
		bound, err := a.bindAll(ctx, missing)
		if err != nil {
			closeAll(ls)
			return nil, err
		}
		for name, l := range bound {
			ls[name] = l
		}
	}
	a.log.Info("took the listeners over", logkey.Waited, time.Since(since).Round(time.Millisecond).String())
	return ls, nil
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

// sameAddr reports whether a listener bound at want ("ip:port", or
// ":port" for every address) listens at got.
func sameAddr(want string, got net.Addr) bool {
	host, port, err := net.SplitHostPort(want)
	if err != nil {
		return false
	}
	g, err := netip.ParseAddrPort(got.String())
	if err != nil || strconv.Itoa(int(g.Port())) != port {
		return false
	}
	if host == "" {
		return g.Addr().IsUnspecified()
	}
	w, err := netip.ParseAddr(host)
	if err != nil {
		return true // a host name: the port is what can be checked
	}
	return w.Unmap() == g.Addr().Unmap()
}

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
