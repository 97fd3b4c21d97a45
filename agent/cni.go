package agent

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/cni"
	"github.com/weft-mesh/weft/agent/cni/install"
	"github.com/weft-mesh/weft/api/logkey"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// CNIConfig configures the agent's side of weft-cni (package agent/cni).
type CNIConfig struct {
	// Socket is where weft-cni reaches the agent; empty: no CNI socket
	// (and nothing is installed).
	Socket string
	// Install, when its ConfDir is set, chains weft-cni into the node's
	// CNI config and keeps it there; Entry is filled in. On uninstall the
	// entry and the binary are removed.
	Install install.Config
	// Timeout and LogLevel go into the conflist entry.
	Timeout, LogLevel string
	// ExcludeNamespaces go into the conflist entry: weft-cni passes their
	// pods through without the agent (the mesh's own namespace, so the
	// controller starts on a node whose agent is not serving yet).
	ExcludeNamespaces []string
	// HoldWait is how long a redirected connection of a pod that weft-cni
	// enrolled waits for the pod's policy (its identity) before it is
	// refused; default 10s.
	HoldWait time.Duration
}

// startCNI serves the CNI socket and keeps weft-cni chained. It runs once
// the datapath is open: an ADD returns only after the map holds the cookie.
func (a *Agent) startCNI(context.Context) error {
	c := a.cfg.CNI
	if c.Socket == "" {
		return nil
	}
	var dec cni.Decider = refuseDecider{}
	if a.cfg.Kube != nil {
		dec = kubeDecider{kube: a.cfg.Kube}
	}
	en, err := cni.NewEnroller(cni.EnrollerConfig{
		Holder:  a.dp,
		Decider: dec,
		Store:   filepath.Join(a.cfg.StateDir, a.cfg.Node, "cni-holds.json"),
		Logger:  a.log.With(logkey.Component, "cni"),
	})
	if err != nil {
		return err
	}
	en.OnHold(a.callersChanged)
	a.enroller = en
	srv, err := cni.Serve(c.Socket, a.cfg.Node, en, a.log.With(logkey.Component, "cni"))
	if err != nil {
		return err
	}
	a.cniServer = srv
	if c.Install.ConfDir != "" {
		ic := c.Install
		ic.Entry = map[string]any{"type": cni.PluginType, "node": a.cfg.Node, "socket": c.Socket}
		if c.Timeout != "" {
			ic.Entry["timeout"] = c.Timeout
		}
		if c.LogLevel != "" {
			ic.Entry["logLevel"] = c.LogLevel
		}
		if len(c.ExcludeNamespaces) > 0 {
			ic.Entry["excludeNamespaces"] = c.ExcludeNamespaces
		}
		ic.Logger = a.log.With(logkey.Component, "cni-install")
		ctx, cancel := context.WithCancel(context.Background())
		a.cniInstallStop = cancel
		a.cniInstallDone = make(chan struct{})
		go func() {
			defer close(a.cniInstallDone)
			install.Keep(ctx, ic)
		}()
	}
	return nil
}

// stopCNI stops serving the socket. The chained config stays (new pods wait
// for the next agent: fail closed) unless weft is being uninstalled: then
// the entry, the binary, the socket and the holds go.
func (a *Agent) stopCNI(context.Context) error {
	if a.cniServer == nil {
		return nil
	}
	if a.cniInstallStop != nil {
		a.cniInstallStop()
		<-a.cniInstallDone
	}
	err := a.cniServer.Close()
	if a.handedOver || !a.uninstalling() {
		return err
	}
	c := a.cfg.CNI
	errs := []error{err}
	if c.Install.ConfDir != "" {
		errs = append(errs, install.Uninstall(c.Install))
	}
	for _, p := range []string{c.Socket, filepath.Join(a.cfg.StateDir, a.cfg.Node, "cni-holds.json")} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	a.log.Info("weft is being uninstalled: weft-cni removed from the node's CNI config", logkey.Node, a.cfg.Node)
	return errors.Join(errs...)
}

// refuseDecider is the decider of an agent without API access (tests):
// it enrolls nothing.
type refuseDecider struct{}

func (refuseDecider) Decide(context.Context, cni.Request) (cni.Decision, error) {
	return cni.Decision{Reason: "agent has no API server access"}, nil
}

// callersChanged wakes the connections waiting in callerGate.
func (a *Agent) callersChanged() {
	a.callersMu.Lock()
	close(a.callersCh)
	a.callersCh = make(chan struct{})
	a.callersMu.Unlock()
}

// hasSVID reports whether w's identity has its SVID on this node.
func (a *Agent) hasSVID(w *weftv1.Workload) bool {
	id, err := spiffeid.FromString(w.GetIdentity())
	if err != nil {
		return true // the proxy refuses it with the reason
	}
	_, err = a.ids.SVID(id)
	return err == nil
}
