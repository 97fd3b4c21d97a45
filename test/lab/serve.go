package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/weft-mesh/weft/test/lab/cluster"
	"github.com/weft-mesh/weft/test/lab/node"
)

// Images maps the image references that cannot be pulled here to the binaries they
// run: the test apps, CoreDNS and the conformance suite's apps. Weft's own images are
// not in it: the nodes pull them from the lab registry (see Install), as a kubelet does.
func Images(p Paths) map[string]node.Image {
	bin := func(name string) string { return filepath.Join(p.BinDir, name) }
	return map[string]node.Image{
		"ghcr.io/weft-mesh/echo:dev":    {Entrypoint: []string{bin("weft-echo")}, Cmd: []string{"serve"}},
		"ghcr.io/weft-mesh/toolbox:dev": {Entrypoint: []string{bin("weft-echo")}, Cmd: []string{"idle"}},
		cluster.CoreDNSImage:            {Entrypoint: []string{filepath.Join(p.K8sBinDir, "coredns")}},
		// The Gateway API mesh conformance suite's echo (Istio's echo app): weft-echo's
		// advanced mode, with `client` on the image's PATH (see LinkEchoAdvancedClient).
		EchoAdvancedImage: {Entrypoint: []string{bin("weft-echo"), "advanced"}, Path: []string{echoAdvancedPathDir(p)}},
		// The Gateway API conformance suite's backends (echo-basic; v0.2.0 runs its
		// udp-echo): weft-echo's basic mode, configured by the container's env.
		EchoBasicImage:   {Entrypoint: []string{bin("weft-echo"), "basic"}},
		EchoBasicImageV2: {Entrypoint: []string{bin("weft-echo"), "basic"}},
	}
}

// The images the Gateway API conformance suite runs: the mesh suite's echo, and the
// Gateway profiles' backends.
const (
	EchoAdvancedImage = "registry.k8s.io/gateway-api/conformance/echo-advanced:v0.1.0"
	EchoBasicImage    = "registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0"
	EchoBasicImageV2  = "registry.k8s.io/gateway-api/conformance/echo-basic:v0.2.0"
)

func echoAdvancedPathDir(p Paths) string { return filepath.Join(p.BinDir, "echo-advanced") }

// LinkEchoAdvancedClient makes the `client` command that the conformance suite execs in
// echo-advanced containers: a link to weft-echo, which runs its advanced client when
// started under that name.
func LinkEchoAdvancedClient(p Paths) error {
	dir := echoAdvancedPathDir(p)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	link := filepath.Join(dir, "client")
	if target, err := os.Readlink(link); err == nil && target == "../weft-echo" {
		return nil
	}
	_ = os.Remove(link)
	if err := os.Symlink("../weft-echo", link); err != nil {
		return fmt.Errorf("link echo-advanced client: %w", err)
	}
	return nil
}

// NodeConfigs are the node runtime configs of an n-node lab.
func NodeConfigs(p Paths, n int, cgroupRoot string, creds map[string]cluster.NodeCredentials) []node.Config {
	cfgs := make([]node.Config, 0, n)
	images := Images(p)
	for i := 1; i <= n; i++ {
		name := NodeName(i)
		c := creds[name]
		cfgs = append(cfgs, node.Config{
			Name:               name,
			Index:              i,
			Kubeconfig:         c.Kubeconfig,
			StateDir:           filepath.Join(p.NodesDir, name),
			NodeIP:             NodeIP(i),
			PodCIDR:            PodCIDR(i),
			ServiceCIDR:        cluster.ServiceCIDR,
			ClusterDNS:         cluster.ClusterDNS,
			ClusterDomain:      cluster.ClusterDomain,
			APIServerVIP:       netip.AddrPortFrom(cluster.AdvertiseAddress, cluster.APIServerAddr.Port()),
			APIServerHost:      cluster.APIServerAddr.String(),
			KubeletPort:        KubeletPort(i),
			KubeletServingCert: c.ServingCert,
			KubeletServingKey:  c.ServingKey,
			ClientCA:           c.ClientCA,
			Images:             images,
			ImageStore:         p.imageStore(),
			PathDirs:           []string{p.BinDir, p.K8sBinDir},
			CgroupRoot:         cgroupRoot,
			KubeProxyBin:       filepath.Join(p.K8sBinDir, "kube-proxy"),
			CNIPluginDir:       p.CNIBinDir,
		})
	}
	return cfgs
}

// Cgroup2Root finds the cgroup v2 mount point (e.g. /sys/fs/cgroup or
// /sys/fs/cgroup/unified on a hybrid host) in /proc/self/mountinfo.
func Cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	return parseCgroup2Root(f)
}

func parseCgroup2Root(r interface{ Read([]byte) (int, error) }) (string, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// id parent maj:min root mountpoint options [optional...] - fstype source superopts
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) >= 5 && len(rf) >= 1 && rf[0] == "cgroup2" {
			return lf[4], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New("no cgroup2 mount in /proc/self/mountinfo (the lab needs cgroup v2)")
}

// ServeConfig configures Serve.
type ServeConfig struct {
	Paths  Paths
	Nodes  int
	Logger *slog.Logger
}

// Serve is the supervisor: it cleans up what a previous lab left, runs the control
// plane and one node runtime per node until ctx is done (or a node runtime fails), then
// stops everything and cleans up. Control-plane processes that exit are restarted (see
// cluster.Start); its state is in state.json, the control plane's pids in cp/pids.json.
func Serve(ctx context.Context, cfg ServeConfig) error {
	p, log := cfg.Paths, cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := checkNodes(cfg.Nodes); err != nil {
		return err
	}
	start, _ := cluster.ProcessStart(os.Getpid())
	// One lab per machine: ports, netns and cgroup names are machine-wide.
	// Wait a few seconds for the lock: a SIGKILLed supervisor's leader
	// thread is gone (and reported dead) before its other threads have
	// exited and released the lock.
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	unlock, err := lockFile(lctx, machineLockPath, true)
	cancel()
	if err != nil {
		return fmt.Errorf("another lab runs on this machine: %w", err)
	}
	defer unlock()
	st := State{PID: os.Getpid(), Start: start, Nodes: cfg.Nodes, Phase: PhaseStarting, Started: time.Now().UTC()}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	if err := writeState(p, st); err != nil {
		return fmt.Errorf("write lab state: %w", err)
	}
	err = serve(ctx, p, cfg.Nodes, log, func(ph Phase) {
		st.Phase = ph
		_ = writeState(p, st)
	})
	if err != nil {
		st.Phase, st.Error = PhaseFailed, err.Error()
		_ = writeState(p, st)
		log.Error("lab failed", "err", err)
		return err
	}
	_ = os.Remove(p.State)
	log.Info("lab stopped")
	return nil
}

func serve(ctx context.Context, p Paths, n int, log *slog.Logger, phase func(Phase)) error {
	t0 := time.Now()
	if err := cleanupLeftovers(p); err != nil {
		return err
	}
	cgroupRoot, err := Cgroup2Root()
	if err != nil {
		return err
	}
	if err := LinkEchoAdvancedClient(p); err != nil {
		return err
	}
	stopRegistry, err := startRegistry(p, log)
	if err != nil {
		return err
	}
	defer stopRegistry()
	crdDir, err := gatewayCRDDir(p.Root)
	if err != nil {
		return err
	}
	specs := make([]cluster.NodeSpec, 0, n)
	for i := 1; i <= n; i++ {
		specs = append(specs, cluster.NodeSpec{Name: NodeName(i), IP: NodeIP(i)})
	}
	cp, err := cluster.Start(ctx, cluster.Config{
		BinDir:          p.K8sBinDir,
		StateDir:        p.CPDir,
		AdminKubeconfig: p.Kubeconfig,
		CRDDir:          crdDir,
		Nodes:           specs,
		Logger:          log,
	})
	if err != nil {
		return fmt.Errorf("start control plane: %w", err)
	}
	defer func() {
		phase(PhaseStopping)
		cp.Stop()
		if err := node.Cleanup(p.Dir); err != nil {
			log.Error("node cleanup", "err", err)
		}
	}()

	crdsDone := make(chan error, 1)
	go func() { crdsDone <- cp.InstallCRDs(ctx) }()

	cfgs := NodeConfigs(p, n, cgroupRoot, cp.Nodes)
	if err := node.SetupFabric(cfgs, HostLink()); err != nil {
		return fmt.Errorf("set up node fabric: %w", err)
	}
	nctx, stopNodes := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	failed := make(chan error, n)
	for _, c := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := node.Run(nctx, c)
			if nctx.Err() == nil {
				failed <- fmt.Errorf("node %s stopped: %v", c.Name, err)
			} else if err != nil && !errors.Is(err, context.Canceled) {
				log.Error("node runtime", "node", c.Name, "err", err)
			}
		}()
	}
	defer func() {
		stopNodes()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(90 * time.Second):
			log.Error("node runtimes did not stop within 90s")
		}
	}()
	if err := cp.InstallDNS(ctx); err != nil {
		return err
	}
	defer startLoadBalancers(ctx, cp.Client, cfgs, log)()
	if err := <-crdsDone; err != nil {
		return fmt.Errorf("install Gateway API CRDs: %w", err)
	}
	phase(PhaseRunning)
	log.Info("lab running", "nodes", n, "after", time.Since(t0).Round(time.Millisecond).String(), "pids", fmt.Sprint(cp.PIDs()))

	// A control-plane process that exits is restarted by cp (as a kubelet restarts a
	// static pod) while the nodes and their pods keep running: only a node runtime
	// that stops ends the lab.
	select {
	case <-ctx.Done():
		log.Info("stopping lab")
		return nil
	case err := <-failed:
		return err
	}
}

// cleanupLeftovers removes what a crashed lab left: node netns, veths, cgroups,
// mounts and processes, and control-plane processes.
func cleanupLeftovers(p Paths) error {
	if err := node.Cleanup(p.Dir); err != nil {
		return fmt.Errorf("clean up previous lab nodes: %w", err)
	}
	if err := cluster.KillStale(p.CPDir); err != nil {
		return fmt.Errorf("clean up previous control plane: %w", err)
	}
	// The registry keeps manifests in memory only: a new lab starts with an empty
	// registry and no pulled images, so nothing runs that was not pushed to it.
	for _, dir := range []string{p.NodesDir, p.registryDir(), p.imageStore()} {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	return nil
}

// gatewayCRDDir finds the experimental CRDs of the pinned sigs.k8s.io/gateway-api
// module (downloading it into the module cache if needed).
func gatewayCRDDir(root string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", "sigs.k8s.io/gateway-api")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=auto")
	out, err := cmd.Output()
	var mod struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &mod); jerr == nil && mod.Error != "" {
		err = errors.New(mod.Error)
	} else if err == nil && jerr != nil {
		err = jerr
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("locate sigs.k8s.io/gateway-api module: %w", err)
	}
	return filepath.Join(mod.Dir, "config", "crd", "experimental"), nil
}
