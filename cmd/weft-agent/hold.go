package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/weft-mesh/weft/agent"
	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/sockholder"
	"github.com/weft-mesh/weft/api/logkey"
)

// hold runs the node's socket holder (package sockholder), the agent pod's
// second container: it takes the same flags as run and holds the
// listeners run would serve, so that a `kill -9` of the agent refuses no
// connection.
func hold(args []string) error {
	f, err := parse("hold", args)
	if err != nil {
		return err
	}
	if f.holderSocket == "" {
		return errors.New("hold: --holder-socket none: nothing to serve")
	}
	log := newLogger(os.Stderr, f.logLevel)
	log.Info("socket holder starting", logkey.Build, version)
	ip, err := netip.ParseAddr(f.nodeIP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("--node-ip %q: an IPv4 address is required", f.nodeIP)
	}
	if err := os.MkdirAll(filepath.Dir(f.holderSocket), 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	_, agentPath := sockholder.Paths(f.stateDir, f.node)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return sockholder.Run(ctx, sockholder.Config{
		Path:      f.holderSocket,
		AgentPath: agentPath,
		Addrs:     agent.ListenAddrs(ip, f.healthAddr, f.metricsAddr),
		Listen:    proxy.Listen,
		Logger:    log,
	}, nil)
}
