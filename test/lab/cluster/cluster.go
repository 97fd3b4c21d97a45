// Package cluster runs the lab's control plane: a CA and certificates, etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler (binaries built by
// test/lab/k8s/build.sh), the Gateway API experimental CRDs and CoreDNS.
//
// Addresses: the apiserver serves https://127.0.0.1:6443 and advertises 172.30.255.1
// (the node runtime forwards that address inside every node netns to the host
// listener); the Service CIDR is 10.96.0.0/16 with the `kubernetes` Service at
// 10.96.0.1 and kube-dns at 10.96.0.10; LoadBalancer Services get addresses of
// 172.30.200.0/24 (see RunLoadBalancers). etcd listens on 127.0.0.1:12379 (plain HTTP,
// loopback only). The controller manager and scheduler do not serve (secure-port 0).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Fixed lab addresses (see the package comment).
var (
	APIServerAddr    = netip.MustParseAddrPort("127.0.0.1:6443")
	AdvertiseAddress = netip.MustParseAddr("172.30.255.1")
	ServiceCIDR      = netip.MustParsePrefix("10.96.0.0/16")
	KubernetesSvcIP  = netip.MustParseAddr("10.96.0.1")
	ClusterDNS       = netip.MustParseAddr("10.96.0.10")
	// LoadBalancerPool is the lab's "cloud" address pool for Services of type
	// LoadBalancer; the host routes it into the fabric (see node.HostLink).
	LoadBalancerPool = netip.MustParsePrefix("172.30.200.0/24")
)

const (
	ClusterDomain = "cluster.local"
	// Issuer of ServiceAccount tokens (also the default API audience).
	Issuer   = "https://kubernetes.default.svc." + ClusterDomain
	etcdPort = 12379
	etcdPeer = 12380
)

// NodeSpec names a node the control plane issues credentials for.
type NodeSpec struct {
	Name string
	IP   netip.Addr
}

// NodeCredentials are the files a node runtime needs: its kubeconfig (user
// system:node:<name>, group system:nodes), its kubelet serving pair (SANs 127.0.0.1,
// the node IP and name) and the CA that signs the apiserver's kubelet client cert.
type NodeCredentials struct {
	Kubeconfig  string
	ServingCert string
	ServingKey  string
	ClientCA    string
}

// Config configures Start.
type Config struct {
	BinDir          string // etcd, kube-apiserver, ... (.cache/k8s/bin)
	StateDir        string // pki/, etcd/, logs/, kubeconfigs; wiped by Start
	AdminKubeconfig string // where the admin kubeconfig is written (.cache/lab/kubeconfig)
	CRDDir          string // Gateway API experimental CRD directory
	Nodes           []NodeSpec
	Logger          *slog.Logger
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	cfg    Config
	log    *slog.Logger
	pki    *pkiFiles
	mu     sync.Mutex // guards the members while Start adds them
	pidsMu sync.Mutex // serializes writes of pids.json
	etcd   *supervised
	api    *supervised
	ctrls  []*supervised // controller manager, scheduler
	Admin  *rest.Config
	Client kubernetes.Interface
	Nodes  map[string]NodeCredentials
}

// ErrConfig marks an unusable Config.
var ErrConfig = errors.New("invalid control plane config")

func (c Config) validate() error {
	switch {
	case c.BinDir == "" || c.StateDir == "" || c.AdminKubeconfig == "":
		return fmt.Errorf("%w: BinDir, StateDir and AdminKubeconfig are required", ErrConfig)
	case c.CRDDir == "":
		return fmt.Errorf("%w: CRDDir is required", ErrConfig)
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(c.BinDir, b)); err != nil {
			return fmt.Errorf("%w: %s not built in %s (run `make lab-binaries`)", ErrConfig, b, c.BinDir)
		}
	}
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		if n.Name == "" || !n.IP.IsValid() || seen[n.Name] {
			return fmt.Errorf("%w: node %q/%v: empty, invalid or duplicate", ErrConfig, n.Name, n.IP)
		}
		seen[n.Name] = true
	}
	return nil
}

// Start issues the certificates, starts etcd and kube-apiserver, waits for /readyz,
// installs the lab's RBAC, then starts the controller manager and the scheduler. On
// error everything started is stopped. The Gateway API CRDs and CoreDNS come next,
// from InstallCRDs and InstallDNS (they can run while the nodes start).
//
// Each of the four processes is supervised as a kubelet supervises a static pod:
// whenever one exits (a crash, a kill -9) it is started again after a back-off, and the
// restart is logged, counted and recorded in <StateDir>/pids.json (see ReadPIDs), until
// Stop. Only an exit while Start waits for the apiserver fails Start.
func Start(ctx context.Context, cfg Config) (cp *ControlPlane, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var absErr error
	for _, p := range []*string{&cfg.BinDir, &cfg.StateDir, &cfg.AdminKubeconfig, &cfg.CRDDir} {
		if *p, absErr = filepath.Abs(*p); absErr != nil {
			return nil, absErr
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := KillStale(cfg.StateDir); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(cfg.StateDir); err != nil {
		return nil, fmt.Errorf("wipe %s: %w", cfg.StateDir, err)
	}
	for _, d := range []string{"pki", "etcd", "logs", "apiserver"} {
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, d), 0o700); err != nil {
			return nil, err
		}
	}
	if err := checkPortsFree(ctx); err != nil {
		return nil, err
	}
	pki, err := writePKI(filepath.Join(cfg.StateDir, "pki"), cfg.Nodes)
	if err != nil {
		return nil, err
	}
	cp = &ControlPlane{cfg: cfg, log: log, pki: pki, Nodes: map[string]NodeCredentials{}}
	defer func() {
		if err != nil {
			cp.Stop()
			cp = nil
		}
	}()
	if err := cp.writeKubeconfigs(); err != nil {
		return cp, err
	}

	t0 := time.Now()
	etcd, err := cp.supervise("etcd", cp.etcdArgs())
	if err != nil {
		return cp, err
	}
	cp.mu.Lock()
	cp.etcd = etcd
	cp.mu.Unlock()
	api, err := cp.supervise("kube-apiserver", cp.apiserverArgs())
	if err != nil {
		return cp, err
	}
	cp.mu.Lock()
	cp.api = api
	cp.mu.Unlock()
	_ = cp.recordPIDs()
	if err := cp.waitReady(ctx, 90*time.Second); err != nil {
		return cp, err
	}
	log.Info("apiserver ready", "after", time.Since(t0).Round(time.Millisecond).String())
	if err := cp.bootstrapRBAC(ctx); err != nil {
		return cp, err
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"kube-controller-manager", cp.controllerManagerArgs()},
		{"kube-scheduler", cp.schedulerArgs()},
	} {
		s, err := cp.supervise(c.name, c.args)
		if err != nil {
			return cp, err
		}
		cp.mu.Lock()
		cp.ctrls = append(cp.ctrls, s)
		cp.mu.Unlock()
	}
	if err := cp.recordPIDs(); err != nil {
		return cp, fmt.Errorf("record pids: %w", err)
	}
	log.Info("control plane started", "after", time.Since(t0).Round(time.Millisecond).String())
	return cp, nil
}

// supervise starts one control-plane binary from BinDir, logging to logs/<name>.log,
// and keeps it running.
func (cp *ControlPlane) supervise(name string, args []string) (*supervised, error) {
	return supervise(name, filepath.Join(cp.cfg.BinDir, name), args, filepath.Join(cp.cfg.StateDir, "logs"), cp.log, func() {
		if err := cp.recordPIDs(); err != nil {
			cp.log.Error("record control-plane pids", "err", err)
		}
	})
}

func (cp *ControlPlane) all() []*supervised {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var ps []*supervised
	for _, p := range append([]*supervised{cp.etcd, cp.api}, cp.ctrls...) {
		if p != nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// Processes describes the control-plane processes now: current pid (0 while one
// waits to be restarted), restarts and why the last run ended. It is what pids.json
// holds.
func (cp *ControlPlane) Processes() []PIDRecord {
	var recs []PIDRecord
	for _, p := range cp.all() {
		pid, restarts, last := p.status()
		recs = append(recs, PIDRecord{Name: p.name, PID: pid, Restarts: restarts, LastExit: last})
	}
	return recs
}

// recordPIDs rewrites pids.json from the current runs (under the lock, so concurrent
// restarts do not write an older view last).
func (cp *ControlPlane) recordPIDs() error {
	cp.pidsMu.Lock()
	defer cp.pidsMu.Unlock()
	return writePIDs(cp.cfg.StateDir, cp.Processes())
}

// PIDs maps each running control-plane process to its current pid.
func (cp *ControlPlane) PIDs() map[string]int {
	m := map[string]int{}
	for _, r := range cp.Processes() {
		if r.PID != 0 {
			m[r.Name] = r.PID
		}
	}
	return m
}

// ErrStopped is what Err returns once Stop has been called.
var ErrStopped = errors.New("control plane stopped")

// Err returns ErrStopped once the control plane has been stopped. A process that
// exits before that is restarted, not reported here: see Processes.
func (cp *ControlPlane) Err() error {
	for _, p := range cp.all() {
		if p.stopped() {
			return ErrStopped
		}
	}
	return nil
}

// Stop ends the controllers, then the apiserver (waiting for it), then etcd; none of
// them is restarted any more.
func (cp *ControlPlane) Stop() {
	cp.mu.Lock()
	etcd, api, ctrls := cp.etcd, cp.api, cp.ctrls
	cp.mu.Unlock()
	for _, p := range ctrls {
		p.stop(10 * time.Second)
	}
	if api != nil {
		api.stop(20 * time.Second)
	}
	if etcd != nil {
		etcd.stop(10 * time.Second)
	}
	cp.pidsMu.Lock()
	_ = os.Remove(filepath.Join(cp.cfg.StateDir, pidsFile))
	cp.pidsMu.Unlock()
}

func (cp *ControlPlane) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		// While starting, an exit means a broken setup: fail with its reason instead
		// of restarting until the timeout.
		for _, p := range []*supervised{cp.etcd, cp.api} {
			if _, restarts, last := p.status(); restarts > 0 || p.current() == nil {
				return fmt.Errorf("%s exited while starting: %s (see %s.log)", p.name, last, p.name)
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
		cancel()
		if err == nil {
			return nil
		}
		last = fmt.Errorf("%w: %s", err, body)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("apiserver not ready after %s: %v", timeout, last)
}

// checkPortsFree fails clearly when another lab (or anything else) holds the ports. It
// gives a process that is still exiting a few seconds to release them.
func checkPortsFree(ctx context.Context) error {
	var err error
	for try := 0; try < 50; try++ {
		if err = portsFree(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return err
}

func portsFree() error {
	for _, a := range []string{APIServerAddr.String(), fmt.Sprintf("127.0.0.1:%d", etcdPort), fmt.Sprintf("127.0.0.1:%d", etcdPeer)} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("port %s is in use (another lab running? `weft-lab down`): %w", a, err)
		}
		l.Close()
	}
	return nil
}
