// Command weft-agent is Weft's node agent (one per node, a DaemonSet):
//
//	weft-agent [flags]          run: redirect, proxy, identities, policy
//	weft-agent check            preflight: what this kernel and host offer
//	weft-agent cleanup --node N detach and unpin node N's redirect
//	weft-agent dump --node N    print the last good policy of node N as JSON
//	weft-agent gateway --gateway=NS/NAME  data plane of one Gateway (north-south)
//	weft-agent mount-bpffs      init container: bpffs at /sys/fs/bpf in the host's mount namespace
//	weft-agent hold [flags]     socket holder: keeps the node's listeners open across agent crashes
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/weft-mesh/weft/agent"
	"github.com/weft-mesh/weft/agent/cni/install"
	"github.com/weft-mesh/weft/agent/datapath"
	"github.com/weft-mesh/weft/agent/policy"
	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/proxy/limits"
	"github.com/weft-mesh/weft/agent/sockholder"
	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/memlimit"
	"github.com/weft-mesh/weft/api/mesh"
)

// version is the release this binary was built as; weft-images sets it with
// -ldflags "-X main.version=...".
var version = "dev"

func main() {
	slog.SetDefault(newLogger(os.Stderr, slog.LevelInfo))
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = run(args)
	case "check":
		rep := datapath.Preflight("")
		fmt.Print(rep.Format())
		if !rep.OK() {
			os.Exit(1)
		}
	case "cleanup":
		err = cleanup(args)
	case "dump":
		err = dump(args)
	case "gateway":
		err = runGateway(args)
	case "mount-bpffs":
		err = mountBPFFS(args)
	case "hold":
		err = hold(args)
	default:
		err = fmt.Errorf("unknown command %q (run, check, cleanup, dump, gateway, mount-bpffs, hold)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-agent:", err)
		os.Exit(1)
	}
}

type flags struct {
	node, nodeIP, controller, controllerCA               string
	insecure                                             *bool
	tokenFile, stateDir, healthAddr, cgroupPath, pinRoot string
	metricsAddr                                          string
	trustDomain                                          string
	logLevel                                             slog.Level
	grace, handoffWait                                   time.Duration
	namespace, daemonSet                                 string
	limits                                               *limits.Limits
	outboundLoops                                        int
	holderSocket                                         string
	allowPrivateBPFFS                                    bool
	cni                                                  cniFlags
}

// cniFlags configure weft-cni's side in the agent (agent.CNIConfig).
type cniFlags struct {
	enabled                                    bool
	confDir, binDir, plugin, timeout, logLevel string
}

func parse(name string, args []string) (*flags, error) {
	f := &flags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.node, "node", os.Getenv("NODE_NAME"), "this node's name")
	fs.StringVar(&f.nodeIP, "node-ip", os.Getenv("NODE_IP"), fmt.Sprintf("this node's IPv4 address (proxy listens on :%d and :%d)", mesh.CapturePort, mesh.TunnelPort))
	fs.StringVar(&f.controller, "controller", "weft-controller.weft-system.svc:15012", "controller gRPC address")
	fs.StringVar(&f.controllerCA, "controller-ca", "/var/run/secrets/weft/ca.crt", "mesh root bundle (PEM, ConfigMap weft-ca-bundle) the controller's certificate chains to")
	f.insecure = insecureFlag(fs)
	fs.StringVar(&f.tokenFile, "token-file", "/var/run/secrets/weft/token", "projected ServiceAccount token (audience weft)")
	fs.StringVar(&f.stateDir, "state-dir", "/var/lib/weft", "where the last good policy is kept (a subdirectory per node)")
	fs.StringVar(&f.healthAddr, "health-addr", fmt.Sprintf(":%d", mesh.HealthPort), "health and readiness endpoint")
	fs.StringVar(&f.metricsAddr, "metrics-addr", fmt.Sprintf(":%d", mesh.MetricsPort), "Prometheus metrics endpoint (/metrics); empty: metrics off")
	fs.StringVar(&f.cgroupPath, "cgroup-path", "", "cgroup (relative to the cgroup2 mount) to attach to and find pods under; default: the kubepods ancestor of the agent's own cgroup")
	fs.StringVar(&f.pinRoot, "pin-root", datapath.DefaultPinRoot, "bpffs directory for pins (one subdirectory per node)")
	fs.StringVar(&f.trustDomain, "trust-domain", mesh.DefaultTrustDomain, "SPIFFE trust domain")
	fs.TextVar(&f.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	fs.DurationVar(&f.grace, "grace", 20*time.Second, "drain grace period on SIGTERM")
	fs.IntVar(&f.outboundLoops, "outbound-loops", proxy.DefaultOutboundLoops(), "event loops serving captured HTTP/1.1 clients (default: half the usable CPUs, at least 1); 0: a goroutine per connection")
	fs.DurationVar(&f.handoffWait, "handoff-wait", 25*time.Second, "on SIGTERM, keep serving up to this long until the next agent on the node takes the listeners over (not when weft is being uninstalled; 0: no wait); --handoff-wait + --grace must fit in terminationGracePeriodSeconds")
	fs.StringVar(&f.namespace, "namespace", cmp.Or(os.Getenv("POD_NAMESPACE"), "weft-system"), "namespace of the agent's DaemonSet")
	fs.StringVar(&f.daemonSet, "daemonset", "weft-agent", "the agent's DaemonSet: when it is gone at shutdown, the redirect is removed")
	f.limits = limitFlags(fs)
	fs.StringVar(&f.holderSocket, "holder-socket", "", "the node's socket holder (weft-agent hold), asked for the listeners when no agent serves them; default <state-dir>/<node>/"+sockholder.HolderSocket+"; \"none\": no holder")
	fs.BoolVar(&f.allowPrivateBPFFS, "allow-private-bpffs", false, "when /sys/fs/bpf is not a bpffs, mount one in this process's mount namespace instead of failing (tests only: in a container the pins, and the redirect, die with the agent)")
	fs.BoolVar(&f.cni.enabled, "cni", false, "serve weft-cni on <state-dir>/<node>/cni.sock (new pods are enrolled before their containers start)")
	fs.StringVar(&f.cni.confDir, "cni-conf-dir", "", "the node's CNI config directory (its /etc/cni/net.d) to chain weft-cni into; empty: install nothing")
	fs.StringVar(&f.cni.binDir, "cni-bin-dir", "", "the node's CNI plugin directory (its /opt/cni/bin) to copy weft-cni into")
	fs.StringVar(&f.cni.plugin, "cni-plugin", "/usr/local/bin/weft-cni", "the weft-cni binary to install")
	fs.StringVar(&f.cni.timeout, "cni-timeout", "10s", "weft-cni's timeout for one call to the agent (written into the conflist)")
	fs.StringVar(&f.cni.logLevel, "cni-log-level", "info", "weft-cni's log level (written into the conflist)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.node == "" {
		return nil, errors.New("--node (or NODE_NAME) is required")
	}
	switch f.holderSocket {
	case "":
		f.holderSocket, _ = sockholder.Paths(f.stateDir, f.node)
	case "none":
		f.holderSocket = ""
	}
	return f, nil
}

// newLogger is the agent's JSON logger on w, dropping records below level.
func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

func run(args []string) error {
	f, err := parse("run", args)
	if err != nil {
		return err
	}
	log := newLogger(os.Stderr, f.logLevel)
	slog.SetDefault(log)
	log.Info("starting", logkey.Build, version)
	memlimit.Apply(log, os.Getenv("GOMEMLIMIT"))
	ip, err := netip.ParseAddr(f.nodeIP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("--node-ip %q: an IPv4 address is required", f.nodeIP)
	}
	td, err := spiffeid.TrustDomainFromString(f.trustDomain)
	if err != nil {
		return fmt.Errorf("--trust-domain: %w", err)
	}
	cg := f.cgroupPath
	if cg == "" {
		if cg, err = ownKubepods(); err != nil {
			return err
		}
	}
	var kube kubernetes.Interface
	if rc, err := rest.InClusterConfig(); err == nil {
		kube, err = kubernetes.NewForConfig(rc)
		if err != nil {
			return err
		}
	} else {
		log.Warn("no in-cluster Kubernetes config: pods will not be marked enrolled", logkey.Error, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return agent.Run(ctx, agent.Config{
		Node:               f.node,
		NodeIP:             ip,
		ControllerAddr:     f.controller,
		ControllerCAFile:   f.controllerCA,
		InsecureController: *f.insecure,
		Token:              func() (string, error) { return readToken(f.tokenFile) },
		Kube:               kube,
		StateDir:           f.stateDir,
		Datapath:           datapath.Config{CgroupPath: cg, PinRoot: f.pinRoot, AllowPrivateBPFFS: f.allowPrivateBPFFS},
		HolderPath:         f.holderSocket,
		TrustDomain:        td,
		HealthAddr:         f.healthAddr,
		MetricsAddr:        f.metricsAddr,
		GracePeriod:        f.grace,
		HandoffWait:        handoffWait(f.handoffWait),
		ProxyLimits:        *f.limits,
		OutboundLoops:      f.outboundLoops,
		CNI:                cniConfig(f),
		Logger:             log,
		Uninstalling: func(ctx context.Context) bool {
			return kube != nil && daemonSetGone(ctx, kube, f.namespace, f.daemonSet, log)
		},
	})
}

// cniConfig maps the --cni flags to agent.CNIConfig.
func cniConfig(f *flags) agent.CNIConfig {
	if !f.cni.enabled {
		return agent.CNIConfig{}
	}
	return agent.CNIConfig{
		Socket:   filepath.Join(f.stateDir, f.node, "cni.sock"),
		Install:  install.Config{ConfDir: f.cni.confDir, BinDir: f.cni.binDir, Plugin: f.cni.plugin},
		Timeout:  f.cni.timeout,
		LogLevel: f.cni.logLevel,
		// weft's own pods start while no agent serves the node; the
		// namespace is never enrolled
		ExcludeNamespaces: []string{f.namespace},
	}
}

// handoffWait maps the flag (0: no wait) to agent.Config.HandoffWait
// (0: the default, negative: no wait).
func handoffWait(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// ownKubepods finds the "kubepods" (or "kubepods.slice") ancestor of this
// process's cgroup v2 path: the node's pod parent, where the redirect is
// attached and pods are found.
func ownKubepods() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read own cgroup: %w", err)
	}
	p, err := kubepodsAncestor(string(b))
	if err != nil {
		return "", fmt.Errorf("%w: pass --cgroup-path", err)
	}
	return p, nil
}

func kubepodsAncestor(procCgroup string) (string, error) {
	for _, line := range strings.Split(procCgroup, "\n") {
		path, ok := strings.CutPrefix(line, "0::/")
		if !ok {
			continue
		}
		parts := strings.Split(path, "/")
		for i := len(parts) - 1; i >= 0; i-- {
			if parts[i] == "kubepods" || parts[i] == "kubepods.slice" {
				return strings.Join(parts[:i+1], "/"), nil
			}
		}
		return "", fmt.Errorf("own cgroup /%s has no kubepods ancestor", path)
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

func cleanup(args []string) error {
	f, err := parse("cleanup", args)
	if err != nil {
		return err
	}
	cg := f.cgroupPath
	if cg == "" {
		cg, _ = ownKubepods()
	}
	return datapath.Cleanup(datapath.Config{Node: f.node, CgroupPath: cg, PinRoot: f.pinRoot})
}

func dump(args []string) error {
	f, err := parse("dump", args)
	if err != nil {
		return err
	}
	snap, err := (&policy.Store{Path: filepath.Join(f.stateDir, f.node, "policy.pb")}).Load()
	if err != nil {
		return err
	}
	b, err := protojson.MarshalOptions{Multiline: true}.Marshal(snap)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

// daemonSetGone reports whether the agent's DaemonSet is deleted or being
// deleted (kubectl delete -k manifests/). A 401 or 403 means the agent's
// ServiceAccount or its Role went with the install. Any other error keeps
// the redirect: a restart must never leave a node without it.
func daemonSetGone(ctx context.Context, kube kubernetes.Interface, ns, name string, log *slog.Logger) bool {
	ds, err := kube.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		log.Info("agent DaemonSet is gone: removing the redirect", logkey.DaemonSet, ns+"/"+name, logkey.Error, err)
		return true
	case err != nil:
		log.Warn("cannot tell whether weft is being uninstalled; keeping the redirect", logkey.Error, err)
		return false
	}
	if ds.DeletionTimestamp != nil {
		log.Info("agent DaemonSet is being deleted: removing the redirect", logkey.DaemonSet, ns+"/"+name)
		return true
	}
	// kubectl delete -k deletes the namespace first: its pods go before
	// the DaemonSet object does.
	n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err), apierrors.IsUnauthorized(err), apierrors.IsForbidden(err):
		log.Info("agent namespace is gone: removing the redirect", logkey.Namespace, ns, logkey.Error, err)
		return true
	case err != nil:
		log.Warn("cannot tell whether weft is being uninstalled; keeping the redirect", logkey.Error, err)
		return false
	}
	if n.DeletionTimestamp != nil {
		log.Info("agent namespace is being deleted: removing the redirect", logkey.Namespace, ns)
		return true
	}
	log.Info("agent stopping for a restart: the redirect stays pinned for the next agent")
	return false
}

// mountBPFFS is the DaemonSet's init container: it makes /sys/fs/bpf a
// bpffs in the host's mount namespace (that of pid 1, with hostPID) unless
// it is one already, so that the agent's pins live on the host and outlive
// every agent (datapath.MountBPFFSIn says why not Bidirectional).
func mountBPFFS(args []string) error {
	fs := flag.NewFlagSet("mount-bpffs", flag.ContinueOnError)
	pid := fs.Int("pid", 1, "a process in the mount namespace to mount in (1 with hostPID: the host's)")
	dir := fs.String("path", datapath.DefaultBPFFS, "where bpffs must be mounted")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mounted, err := datapath.MountBPFFSIn(*pid, *dir)
	if errors.Is(err, os.ErrPermission) {
		// pid 1 may be out of reach (a sandbox whose init is in an
		// ancestor user namespace). The process that started this
		// container (containerd's shim, the lab's node runtime) runs in
		// the host's mount namespace too.
		slog.Warn("cannot enter the mount namespace of pid 1; using the container runtime's (the parent process)", logkey.Error, err)
		*pid = os.Getppid()
		mounted, err = datapath.MountBPFFSIn(*pid, *dir)
	}
	if err != nil {
		return err
	}
	if mounted {
		slog.Info("mounted bpffs in the host's mount namespace", logkey.Path, *dir, logkey.Pid, *pid)
	} else {
		slog.Info("bpffs already mounted in the host's mount namespace", logkey.Path, *dir, logkey.Pid, *pid)
	}
	return nil
}
