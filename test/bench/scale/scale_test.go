package scale

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/memlimit"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	"github.com/weft-mesh/weft/controller/resolve"
)

// Environment of the child processes and knobs of the benchmark.
const (
	envRole       = "WEFT_SCALE_ROLE" // "controller" or "agents": run as that child
	envKubeconfig = "WEFT_SCALE_KUBECONFIG"
	envNodes      = "WEFT_SCALE_NODES"
	envAddr       = "WEFT_SCALE_ADDR"
	envOut        = "WEFT_SCALE_OUT"
	// envSize "small" runs a 500-Service, 50-node cluster (a quick check).
	envSize = "WEFT_SCALE_SIZE"
	// envChurn is the churn duration (default 30s).
	envChurn = "WEFT_SCALE_CHURN"
	// envChurnPods "1": a churn change also writes the Ready condition of
	// the pods whose endpoints it flips, before the EndpointSlice, as the
	// kubelet and the EndpointSlice controller do in a cluster (by default
	// only the EndpointSlice is written). "replace": the pod whose endpoint
	// turns not ready is deleted and created again (not Ready yet), as a
	// restart or a rolling update replaces pods.
	envChurnPods = "WEFT_SCALE_CHURN_PODS"
	// envProfile, a directory: the controller writes its CPU profile of
	// the whole run and its heap profile at the end there.
	envProfile = "WEFT_SCALE_PROFILE"
	// envMemory, a quantity ("1Gi"): the controller runs as weft-controller
	// does in a container with that memory limit, its Go memory limit set
	// to memlimit.DefaultFraction of it. Unset: no limit.
	envMemory = "WEFT_SCALE_CONTROLLER_MEMORY"
	// envAuthz "1": the cluster has an AuthorizationPolicy per Service
	// (loaded into its own etcd data), and a phase of policy changes runs
	// after the route changes.
	envAuthz = "WEFT_SCALE_AUTHZ"
)

// Benchmark shape.
const (
	routeChanges  = 50
	policyChanges = 20
	churnPerSec   = 100
)

func TestMain(m *testing.M) {
	switch os.Getenv(envRole) {
	case "controller":
		os.Exit(controllerChild())
	case "agents":
		os.Exit(agentsChild())
	}
	os.Exit(m.Run())
}

func controllerChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	rc, err := clientcmd.BuildConfigFromFlags("", os.Getenv(envKubeconfig))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	nodes, _ := strconv.Atoi(os.Getenv(envNodes))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if v := os.Getenv(envMemory); v != "" {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", envMemory, err)
			return 1
		}
		debug.SetMemoryLimit(int64(float64(q.Value()) * memlimit.DefaultFraction))
	}
	if dir := os.Getenv(envProfile); dir != "" {
		stop, err := profile(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer stop()
	}
	if err := RunController(ctx, ControllerConfig{Kube: rc, Nodes: nodes, Out: os.Stdout, Log: log}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// profile writes the controller's CPU profile (whole run) and, when
// stopped, its heap profile into dir, which it creates if need be.
func profile(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cpu, err := os.Create(filepath.Join(dir, "controller-cpu.pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		if h, err := os.Create(filepath.Join(dir, "controller-heap.pprof")); err == nil {
			_ = pprof.Lookup("heap").WriteTo(h, 0)
			h.Close()
		}
	}, nil
}

func agentsChild() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nodes, _ := strconv.Atoi(os.Getenv(envNodes))
	got := RunAgents(ctx, os.Getenv(envAddr), nodes, func() { fmt.Println("READY") })
	f, err := os.Create(os.Getenv(envOut))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := WriteReceived(f, got); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// child is a running child process with its stdout lines on a channel.
type child struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
}

func startChild(b *testing.B, role string, env ...string) *child {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), append(env, envRole+"="+role)...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	b.Cleanup(func() { c.stop() })
	return c
}

// stop ends the child (SIGTERM, then SIGKILL after 30 s) and waits for it.
func (c *child) stop() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-exited
	}
}

// waitLine returns the next line with prefix (others are handed to other).
func (c *child) waitLine(b *testing.B, prefix string, d time.Duration, other func(string)) string {
	b.Helper()
	t := time.After(d)
	for {
		select {
		case l := <-c.lines:
			if strings.HasPrefix(l, prefix) {
				return l
			}
			if other != nil {
				other(l)
			}
		case <-c.done:
			b.Fatalf("child exited before %q", prefix)
		case <-t:
			b.Fatalf("no %q in %v", prefix, d)
		}
	}
}

// procStat is a process's CPU time and memory.
type procStat struct {
	cpu      time.Duration
	rss, hwm int64 // bytes
}

func readProc(pid int) procStat {
	var st procStat
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// fields after the command's closing parenthesis: utime is the 12th, stime the 13th
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) > 13 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			st.cpu = time.Duration(u+s) * time.Second / 100 // USER_HZ
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				switch f[0] {
				case "VmRSS:":
					st.rss = kb << 10
				case "VmHWM:":
					st.hwm = kb << 10
				}
			}
		}
	}
	return st
}

// nodeState is what /debug/nodes says of a node.
type nodeState struct {
	Node         string
	Version      uint64
	AckedVersion uint64
}

func debugNodes(health string) ([]nodeState, error) {
	resp, err := http.Get("http://" + health + "/debug/nodes")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var v struct{ Nodes []nodeState }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return nil, err
	}
	return v.Nodes, nil
}

// waitAcked polls until every one of nodes has ACKed a version above base
// (and its newest), or d passes.
func waitAcked(health string, nodes int, base uint64, d time.Duration, poll time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ns, err := debugNodes(health)
		if err == nil && len(ns) >= nodes {
			ok := 0
			for _, n := range ns {
				if n.AckedVersion > base && n.AckedVersion == n.Version {
					ok++
				}
			}
			if ok >= nodes {
				return true
			}
		}
		time.Sleep(poll)
	}
	return false
}

// waitNodesAcked polls until each of nodes has ACKed a version above base
// (and its newest), or d passes.
func waitNodesAcked(health string, nodes []string, base uint64, d time.Duration, poll time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		ns, err := debugNodes(health)
		if err == nil {
			ok := 0
			for _, n := range ns {
				if slices.Contains(nodes, n.Node) && n.AckedVersion > base && n.AckedVersion == n.Version {
					ok++
				}
			}
			if ok == len(nodes) {
				return true
			}
		}
		time.Sleep(poll)
	}
	return false
}

// routesAccepted reports whether every route of the last namespace (the
// status writer goes in namespace order) carries Weft's status for its
// generation.
func routesAccepted(ctx context.Context, gw gwclient.Interface, sc Scale) bool {
	ns := "ns-99"
	if sc.Namespaces < 100 {
		ns = sc.namespace(sc.Namespaces - 1)
	}
	list, err := gw.GatewayV1().HTTPRoutes(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) == 0 {
		return false
	}
	for i := range list.Items {
		got := &list.Items[i]
		ok := false
		for _, p := range got.Status.Parents {
			for _, c := range p.Conditions {
				ok = ok || p.ControllerName == resolve.ControllerName && c.Type == "Accepted" && c.ObservedGeneration == got.Generation
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// policiesAccepted reports whether every AuthorizationPolicy of the last
// namespace carries Weft's Accepted condition for its generation (true
// without Scale.Policies).
func policiesAccepted(ctx context.Context, dyn dynamic.Interface, sc Scale) bool {
	if !sc.Policies {
		return true
	}
	list, err := dyn.Resource(policyv1a1.GroupVersionResource).Namespace(sc.namespace(sc.Namespaces-1)).List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) == 0 {
		return false
	}
	for i := range list.Items {
		p, err := policyv1a1.FromUnstructured(&list.Items[i])
		if err != nil || !slices.ContainsFunc(p.Status.Conditions, func(c metav1.Condition) bool {
			return c.Type == policyv1a1.ConditionAccepted && c.ObservedGeneration == p.Generation
		}) {
			return false
		}
	}
	return true
}

func writeKubeconfig(path string, rc *rest.Config) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["bench"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	cfg.AuthInfos["bench"] = &clientcmdapi.AuthInfo{ClientCertificateData: rc.CertData, ClientKeyData: rc.KeyData, Token: rc.BearerToken}
	cfg.Contexts["bench"] = &clientcmdapi.Context{Cluster: "bench", AuthInfo: "bench"}
	cfg.CurrentContext = "bench"
	return clientcmd.WriteToFile(*cfg, path)
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*p+0.5)]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64)
}

func mib(b int64) string { return strconv.FormatInt(b>>20, 10) }

// BenchmarkScale measures the controller at the scale (or
// WEFT_SCALE_SIZE=small): run it with `make bench-scale`. Phases:
//
//  1. load the cluster into a fresh kube-apiserver (not measured);
//  2. start the controller, then one simulated agent per node: initial
//     sync = controller start -> every node ACKed its first policy;
//  3. 50 route changes, one at a time: change -> every node ACKed; with
//     WEFT_SCALE_AUTHZ=1, then 20 AuthorizationPolicy changes, one at a
//     time: change -> the nodes of the pods it selects ACKed;
//  4. churn: 100 endpoint changes per second for 30 s: change -> every
//     node ACKed (p50, p99), controller CPU over the window;
//  5. bytes per change from what the agents received, controller RSS
//     (peak: VmHWM; steady: VmRSS at the end of the churn).
func BenchmarkScale(b *testing.B) {
	sc := Target
	if os.Getenv(envSize) == "small" {
		sc = Scale{Nodes: 50, Namespaces: 10, Services: 500, Endpoints: 10, Routes: 2}
	}
	sc.Policies = os.Getenv(envAuthz) == "1"
	churnFor := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv(envChurn)); err == nil && d > 0 {
		churnFor = d
	}
	cl := openCluster(b, sc)
	r := startRun(b, cl)
	r.initialSync()
	r.settleStatuses()
	r.routeChanges()
	r.policyChanges()
	ch := r.churn(churnFor)
	received := r.stop()
	fig := r.figures(received, ch)
	fig.print(os.Stdout, cl, ch)
	b.ReportMetric(pct(fig.routeLat, 0.5).Seconds()*1000, "route-p50-ms")
	b.ReportMetric(pct(fig.churnLat, 0.99).Seconds()*1000, "churn-p99-ms")
}
