// Package labtest gives end-to-end test suites a running lab: Start it from TestMain,
// Stop it after m.Run. It is for tests only.
//
//	var lab *labtest.Lab
//
//	func TestMain(m *testing.M) { os.Exit(labtest.Main(m, labtest.Options{Nodes: 2}, &lab)) }
//
//	func TestPrivilegedSomething(t *testing.T) {
//		labtest.Require(t, lab) // skips with the reason when no lab can run here
//		...
//	}
//
// Suites that use the lab are serialized machine-wide (lab.LockSuite): the lab has fixed
// ports and names. If a lab is already running when a suite starts (`make lab-up`), the
// suite uses it and leaves it running; otherwise it brings one up and takes it down.
package labtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-mesh/weft/test/lab"
)

// Options configures Start.
type Options struct {
	Nodes int // default 2
	// Build lists the packages built into .cache/bin before the lab starts, so pods run
	// the code under test. Default: ./cmd/weft-lab and ./test/echo/cmd/weft-echo; e2e
	// suites add ./cmd/weft-controller, ./cmd/weft-agent. Empty after defaults: none.
	Build []string
	// SkipBuild builds nothing (the binaries in .cache/bin are used as they are).
	SkipBuild bool
}

// Lab is a running lab.
type Lab struct {
	Paths  lab.Paths
	Nodes  int
	Config *rest.Config
	Client kubernetes.Interface
	owned  bool
	unlock func()
}

// ErrSkip means the lab cannot run here (not root, binaries not built): the suite
// should skip, not fail. Under CI a missing build is an error instead.
var ErrSkip = errors.New("lab unavailable")

// Start takes the suite lock, builds the weft binaries (so pods run the code under
// test), and brings up a lab unless one of the same size is running.
func Start(ctx context.Context, opts Options) (*Lab, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: the lab needs root (network namespaces, cgroups)", ErrSkip)
	}
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	root, err := lab.FindRoot(wd)
	if err != nil {
		return nil, err
	}
	p := lab.PathsFor(root)
	if _, err := os.Stat(filepath.Join(p.K8sBinDir, "kube-apiserver")); err != nil {
		msg := fmt.Sprintf("control-plane binaries not built in %s: run `make lab-binaries`", p.K8sBinDir)
		if os.Getenv("CI") != "" {
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("%w: %s", ErrSkip, msg)
	}
	if _, err := os.Stat(filepath.Join(p.CNIBinDir, "ptp")); err != nil {
		msg := fmt.Sprintf("the lab nodes' CNI plugins are not built in %s: run `make cni-plugins`", p.CNIBinDir)
		if os.Getenv("CI") != "" {
			return nil, errors.New(msg)
		}
		return nil, fmt.Errorf("%w: %s", ErrSkip, msg)
	}
	unlock, err := lab.LockSuite(ctx)
	if err != nil {
		return nil, err
	}
	l := &Lab{Paths: p, Nodes: opts.Nodes, unlock: unlock}
	if err := l.start(ctx, opts); err != nil {
		if l.owned {
			_ = lab.Down(p, 0)
		}
		unlock()
		return nil, err
	}
	return l, nil
}

func (l *Lab) start(ctx context.Context, opts Options) error {
	p := l.Paths
	if !opts.SkipBuild {
		pkgs := opts.Build
		if len(pkgs) == 0 {
			pkgs = []string{"./cmd/weft-lab", "./test/echo/cmd/weft-echo"}
		}
		cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", p.BinDir + "/"}, pkgs...)...)
		cmd.Dir = p.Root
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=auto", "GOFLAGS=-buildvcs=false")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build weft binaries: %v\n%s", err, out)
		}
	}
	weftLab := filepath.Join(p.BinDir, "weft-lab")
	if _, err := os.Stat(weftLab); err != nil {
		return fmt.Errorf("%s missing: run `make build`", weftLab)
	}
	started, err := lab.Up(ctx, lab.UpConfig{
		Paths:      p,
		Nodes:      l.Nodes,
		Supervisor: []string{weftLab, "serve", "--root", p.Root},
	})
	l.owned = started
	if err != nil {
		return err
	}
	return l.Reload()
}

// Reload rebuilds Config and Client from the kubeconfig (a lab brought up again has a
// new CA and credentials).
func (l *Lab) Reload() error {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.Paths.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load lab kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 50, 100
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	l.Config, l.Client = cfg, cs
	return nil
}

// Owned reports whether this suite brought the lab up (and Stop takes it down).
func (l *Lab) Owned() bool { return l.owned }

// Stop takes the lab down if this suite brought it up, and releases the suite lock.
func (l *Lab) Stop() error {
	defer l.unlock()
	if !l.owned {
		return nil
	}
	return lab.Down(l.Paths, 2*time.Minute)
}

// Kubeconfig is the admin kubeconfig path (for kubectl).
func (l *Lab) Kubeconfig() string { return l.Paths.Kubeconfig }

// Main runs a suite on a lab: it starts the lab, stores it in *out, runs m, stops the
// lab, and returns the exit code. When the lab cannot run here (ErrSkip) the tests still
// run with a nil lab, so each test calls Require and skips with the reason.
func Main(m interface{ Run() int }, opts Options, out **Lab) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	l, err := Start(ctx, opts)
	cancel()
	if err != nil && !errors.Is(err, ErrSkip) {
		fmt.Fprintln(os.Stderr, "labtest: start lab:", err)
		return 1
	}
	if err != nil {
		skipReason = err.Error()
	}
	*out = l
	code := m.Run()
	if l != nil {
		if err := l.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "labtest: stop lab:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

var skipReason string

// Require skips t when Main could not start a lab here (the reason is given).
func Require(t interface {
	Helper()
	Skip(...any)
}, l *Lab) {
	t.Helper()
	if l == nil {
		t.Skip("no lab: " + skipReason)
	}
}
