// Package sockholder keeps a node's listening sockets (the proxy's capture
// and tunnel ports, health, metrics) open while no agent runs, so that a
// `kill -9` of the agent refuses no connection: `weft-agent hold`, a
// second container of the agent's pod, runs Run.
//
// A listening socket lives as long as any process holds a descriptor of
// it, and the kernel completes handshakes for it and queues the
// connections (up to the backlog, somaxconn) whether or not anyone calls
// accept. The holder holds a descriptor of every listener and never
// accepts: while the agent is down, new connections wait in the accept
// queue, and the restarted agent, which gets the very same sockets from
// the holder, accepts them. The holder loads no policy, no BPF and no keys;
// it is small enough not to crash with the agent.
//
// Where the sockets come from, in order (Acquire): a previous holder of
// the node (a surge upgrade of the DaemonSet: the old pod's holder still
// serves the node's holder socket), else the node's agent (this holder
// restarted while the agent serves; handoff "share"), else they are bound
// here with the agent's own socket options (proxy.Listen: MPTCP off,
// backlog somaxconn). An address in use by a process that offers nothing
// (an older agent) is retried until free. The holder then serves the
// sockets on the node's holder socket (Paths) to any number of takers
// with package handoff's protocol ("share"): 0600 in a 0700 directory,
// peers of its own user only (SO_PEERCRED).
//
// Why a holder process rather than pinned reuseport socket arrays
// (BPF_MAP_TYPE_REUSEPORT_SOCKARRAY): such a map does not keep a socket
// open. A listener leaves the array when its last descriptor closes (the
// kernel detaches it from its reuseport group as it closes), and the
// connections in its accept queue are reset with it, so a pinned array
// outlives the agent but its sockets do not. net.ipv4.tcp_migrate_req
// (5.14) moves queued connections only to another open listener of the
// same group: some process must hold one anyway. The holder is that
// process, works on every kernel the redirect runs on, needs no
// SO_REUSEPORT (which would also let any process of the same user join
// the group), and reuses the handoff protocol that is already tested.
package sockholder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/agent/handoff"
	"github.com/weft-mesh/weft/api/logkey"
)

// Socket file names, in the node's state directory <state>/<node>/.
const (
	HolderSocket  = "listeners.sock" // served by weft-agent hold
	HandoffSocket = "handoff.sock"   // served by the node's agent (package handoff)
)

// Paths returns the node's holder socket and agent handoff socket.
func Paths(stateDir, node string) (holder, agent string) {
	dir := filepath.Join(stateDir, node)
	return filepath.Join(dir, HolderSocket), filepath.Join(dir, HandoffSocket)
}

// Source says where listeners came from.
type Source string

// Sources.
const (
	FromHolder Source = "holder"         // the node's socket holder
	FromAgent  Source = "agent"          // the node's agent (handoff share)
	FromPrev   Source = "previous agent" // the agent this one replaces (handoff take)
	Bound      Source = "bound"          // bound by this process
)

// ListenFunc binds one address.
type ListenFunc func(ctx context.Context, addr string) (net.Listener, error)

// Config configures a holder.
type Config struct {
	// Path is the holder socket to serve (Paths).
	Path string
	// AgentPath is the agent's handoff socket, asked to share when no
	// previous holder serves.
	AgentPath string
	// Addrs to hold, by the agent's listener names.
	Addrs map[string]string
	// Listen binds an address the way the agent does (proxy.Listen).
	Listen ListenFunc
	// Retry is how often an address in use is tried again; 0: 200ms.
	Retry time.Duration
	// Logger; nil: discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Retry == 0 {
		c.Retry = 200 * time.Millisecond
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Run acquires the listeners, serves them on cfg.Path until ctx ends, and
// then closes its descriptors (the sockets live on in the agent, if one
// runs). ready, when not nil, is called once the holder socket serves.
func Run(ctx context.Context, cfg Config, ready func()) error {
	cfg = cfg.withDefaults()
	if cfg.Path == "" || len(cfg.Addrs) == 0 || cfg.Listen == nil {
		return errors.New("sockholder: a socket path, addresses and a listen function are required")
	}
	ls, src, err := Acquire(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeAll(ls)
	h, err := handoff.Hold(cfg.Path, handoff.Offer{Listeners: ls, KeepSocketFile: true}, cfg.Logger)
	if err != nil {
		return err
	}
	defer h.Close()
	names := make([]string, 0, len(ls))
	for n := range ls {
		names = append(names, n)
	}
	cfg.Logger.Info("holding the node's listeners", logkey.Path, cfg.Path, logkey.ListenersFrom, string(src), logkey.Listeners, names)
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	return nil
}

// Acquire gets the listeners for cfg.Addrs: shared by a previous holder at
// cfg.Path, else by the agent at cfg.AgentPath, else bound. It retries
// while an address is in use and nobody shares it, until ctx ends.
func Acquire(ctx context.Context, cfg Config) (map[string]net.Listener, Source, error) {
	cfg = cfg.withDefaults()
	logged := false
	for {
		for _, from := range []struct {
			path string
			src  Source
		}{{cfg.Path, FromHolder}, {cfg.AgentPath, FromAgent}} {
			if from.path == "" {
				continue
			}
			got, err := Share(ctx, from.path)
			if err == nil {
				ls, err := Fit(ctx, got, cfg.Addrs, cfg.Listen, cfg.Logger)
				return ls, from.src, err
			}
			if !errors.Is(err, handoff.ErrNoHolder) {
				cfg.Logger.Info("listeners not shared", logkey.Path, from.path, logkey.Error, err)
			}
		}
		ls, err := bindAll(ctx, cfg.Addrs, cfg.Listen)
		if err == nil {
			return ls, Bound, nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, "", err
		}
		if !logged {
			cfg.Logger.Warn("addresses in use and nobody shares them; retrying until they are free", logkey.Error, err)
			logged = true
		}
		t := time.NewTimer(cfg.Retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, "", ctx.Err()
		case <-t.C:
		}
	}
}

// Share asks whoever serves path for a share of its listeners. The error
// wraps handoff.ErrNoHolder when nobody serves it.
func Share(ctx context.Context, path string) (map[string]net.Listener, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := handoff.Dial(ctx, path)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.Share(ctx)
}

// Fit makes got match want: listeners with another address (or not
// wanted) are closed, missing ones bound; on error every listener is
// closed.
func Fit(ctx context.Context, got map[string]net.Listener, want map[string]string, listen ListenFunc, log *slog.Logger) (map[string]net.Listener, error) {
	ls := map[string]net.Listener{}
	for name, l := range got {
		if addr, ok := want[name]; ok && SameAddr(addr, l.Addr()) {
			ls[name] = l
			continue
		}
		if log != nil {
			log.Warn("shared listener not used: address differs", logkey.Listener, name, logkey.Addr, l.Addr().String(), logkey.Want, want[name])
		}
		l.Close()
	}
	missing := map[string]string{}
	for name, addr := range want {
		if ls[name] == nil {
			missing[name] = addr
		}
	}
	bound, err := bindAll(ctx, missing, listen)
	if err != nil {
		closeAll(ls)
		return nil, err
	}
	for name, l := range bound {
		ls[name] = l
	}
	return ls, nil
}

// bindAll binds every address of m (all or none).
func bindAll(ctx context.Context, m map[string]string, listen ListenFunc) (map[string]net.Listener, error) {
	ls := map[string]net.Listener{}
	for name, addr := range m {
		l, err := listen(ctx, addr)
		if err != nil {
			closeAll(ls)
			return nil, fmt.Errorf("listener %s: %w", name, err)
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

// SameAddr reports whether a listener bound at want ("ip:port", or
// ":port" for every address) listens at got.
func SameAddr(want string, got net.Addr) bool {
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
