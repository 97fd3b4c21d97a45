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
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/memlimit"
	"github.com/weft-mesh/weft/controller/resolve"
	"github.com/weft-mesh/weft/test/kubetest"
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
	// envProfile, a directory: the controller writes its CPU profile of
	// the whole run and its heap profile at the end there.
	envProfile = "WEFT_SCALE_PROFILE"
	// envMemory, a quantity ("1Gi"): the controller runs as weft-controller
	// does in a container with that memory limit, its Go memory limit set
	// to memlimit.DefaultFraction of it. Unset: no limit.
	envMemory = "WEFT_SCALE_CONTROLLER_MEMORY"
)

// Benchmark shape.
const (
	routeChanges = 50
	churnPerSec  = 100
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
// stopped, its heap profile into dir.
func profile(dir string) (func(), error) {
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
//  3. 50 route changes, one at a time: change -> every node ACKed;
//  4. churn: 100 endpoint changes per second for 30 s: change -> every
//     node ACKed (p50, p99), controller CPU over the window;
//  5. bytes per change from what the agents received, controller RSS
//     (peak: VmHWM; steady: VmRSS at the end of the churn).
func BenchmarkScale(b *testing.B) {
	sc := Target
	if os.Getenv(envSize) == "small" {
		sc = Scale{Nodes: 50, Namespaces: 10, Services: 500, Endpoints: 10, Routes: 2}
	}
	churnFor := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv(envChurn)); err == nil && d > 0 {
		churnFor = d
	}
	ctx := context.Background()
	// etcd's data is kept in .cache/bench-scale: loading 140k objects
	// through the apiserver takes minutes, a later run reuses them
	root, err := kubetest.Root()
	if err != nil {
		b.Fatal(err)
	}
	cache := filepath.Join(root, ".cache", "bench-scale", fmt.Sprintf("n%d-ns%d-s%d-e%d-r%d", sc.Nodes, sc.Namespaces, sc.Services, sc.Endpoints, sc.Routes))
	// a load that failed is resumed: Load takes what exists
	loaded := filepath.Join(cache, "loaded")
	if err := os.MkdirAll(filepath.Join(cache, "etcd"), 0o700); err != nil {
		b.Fatal(err)
	}
	kc := kubetest.StartWith(b, kubetest.Options{EtcdDataDir: filepath.Join(cache, "etcd"), NoFsync: true})
	dir := b.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(kubeconfig, kc.Config); err != nil {
		b.Fatal(err)
	}
	rc := rest.CopyConfig(kc.Config)
	rc.QPS, rc.Burst = -1, 0
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		b.Fatal(err)
	}
	grc := rest.CopyConfig(kc.Config)
	grc.QPS, grc.Burst = -1, 0
	gw, err := gwclient.NewForConfig(grc)
	if err != nil {
		b.Fatal(err)
	}

	t := time.Now()
	var loadTime time.Duration
	if _, err := os.Stat(loaded); err == nil {
		fmt.Printf("scale: %s loaded by an earlier run (%s)\n", sc, cache)
	} else {
		fmt.Printf("scale: loading %s into the apiserver\n", sc)
		if err := Load(ctx, kube, gw, sc, 24, func(n int) { fmt.Printf("scale: %d services loaded (%v)\n", n, time.Since(t).Round(time.Second)) }); err != nil {
			b.Fatal(err)
		}
		loadTime = time.Since(t)
		if err := os.WriteFile(loaded, []byte(loadTime.String()+"\n"), 0o600); err != nil {
			b.Fatal(err)
		}
		fmt.Printf("scale: loaded in %v\n", loadTime.Round(time.Second))
	}

	// 2. initial sync
	t0 := time.Now()
	ctl := startChild(b, "controller", envKubeconfig+"="+kubeconfig, envNodes+"="+strconv.Itoa(sc.Nodes))
	f := strings.Fields(ctl.waitLine(b, "ADDR ", time.Minute, nil))
	grpcAddr, health := f[1], f[2]
	recvFile := filepath.Join(dir, "received")
	agents := startChild(b, "agents", envAddr+"="+grpcAddr, envNodes+"="+strconv.Itoa(sc.Nodes), envOut+"="+recvFile)

	var rmu sync.Mutex
	var rounds []Round
	var statusWrites, resolves int64
	roundOf := map[int]int{} // seq -> index in rounds
	roundCh := make(chan struct{}, 1)
	go func() {
		for l := range ctl.lines {
			f := strings.Fields(l)
			switch {
			case len(f) >= 4 && f[0] == "ROUND":
				base, _ := strconv.ParseUint(f[1], 10, 64)
				r := Round{Base: base}
				r.Start, _ = strconv.ParseInt(f[2], 10, 64)
				r.End, _ = strconv.ParseInt(f[3], 10, 64)
				for _, s := range f[4:] {
					n, _ := strconv.Atoi(s)
					r.Seqs = append(r.Seqs, n)
				}
				rmu.Lock()
				for _, s := range r.Seqs {
					roundOf[s] = len(rounds)
				}
				rounds = append(rounds, r)
				rmu.Unlock()
				select {
				case roundCh <- struct{}{}:
				default:
				}
			case len(f) == 3 && f[0] == "STATS":
				w, _ := strconv.ParseInt(f[1], 10, 64)
				r, _ := strconv.ParseInt(f[2], 10, 64)
				rmu.Lock()
				statusWrites, resolves = w, r
				rmu.Unlock()
			}
		}
	}()
	if !waitAcked(health, sc.Nodes, 0, 10*time.Minute, 100*time.Millisecond) {
		b.Fatal("initial sync: not every node ACKed in 10 minutes")
	}
	syncSeen := time.Since(t0)
	fmt.Printf("scale: every node ACKed its first policy %v after the controller started\n", syncSeen.Round(time.Millisecond))
	// route statuses (20,000 writes, counted when the whole pass ends)
	// are the controller's own start-up work: let them finish before
	// measuring changes
	settle := time.Now()
	var writes int64
	last, stable := int64(-1), 0
	for time.Since(settle) < 10*time.Minute {
		rmu.Lock()
		writes = statusWrites
		rmu.Unlock()
		if writes >= int64(sc.Services*sc.Routes) {
			break
		}
		if writes == last {
			stable++
		} else {
			last, stable = writes, 0
		}
		// statuses kept from an earlier run: the pass writes little
		if stable >= 5 && routesAccepted(ctx, gw, sc) {
			break
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	fmt.Printf("scale: route statuses written (%d writes, %v after the sync)\n", writes, time.Since(settle).Round(time.Second))
	waitRound := func(seq int, d time.Duration) (Round, bool) {
		deadline := time.After(d)
		for {
			rmu.Lock()
			i, ok := roundOf[seq]
			var r Round
			if ok {
				r = rounds[i]
			}
			rmu.Unlock()
			if ok {
				return r, true
			}
			select {
			case <-roundCh:
			case <-time.After(5 * time.Millisecond):
			case <-deadline:
				return Round{}, false
			}
		}
	}

	// 3. route changes, one at a time
	// written: when the change was sent to the apiserver; applied: when
	// the apiserver answered
	written, applied := map[int]time.Time{}, map[int]time.Time{}
	var routeSeqs, churnSeqs []int
	// sequence numbers differ from run to run (the objects keep theirs)
	seq := int(time.Now().Unix()%100000) * 100000
	firstSeq := seq
	for c := 0; c < routeChanges; c++ {
		seq++
		svc := (c * 7919) % sc.Services
		w, err := sc.RouteWeight(ctx, gw, svc, c%sc.Routes)
		if err != nil {
			b.Fatal(err)
		}
		written[seq] = time.Now()
		if err := sc.ChangeRoute(ctx, gw, svc, c%sc.Routes, w, seq); err != nil {
			b.Fatal(err)
		}
		applied[seq] = time.Now()
		routeSeqs = append(routeSeqs, seq)
		r, ok := waitRound(seq, time.Minute)
		if !ok {
			b.Fatalf("route change %d: no resolution saw it in a minute", seq)
		}
		if !waitAcked(health, sc.Nodes, r.Base, time.Minute, 2*time.Millisecond) {
			b.Fatalf("route change %d: not every node ACKed in a minute", seq)
		}
	}
	fmt.Printf("scale: %d route changes done\n", routeChanges)

	// 4. churn: the current not-ready endpoint of every Service (the
	// cluster may come from an earlier run), so that each change is one
	// request and changes something
	notReady := map[string]int{}
	all, err := kube.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range all.Items {
		es := &all.Items[i]
		notReady[es.Namespace+"/"+es.Name] = -1
		for j, e := range es.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				notReady[es.Namespace+"/"+es.Name] = j
				break
			}
		}
	}
	all = nil
	pid := ctl.cmd.Process.Pid
	before := readProc(pid)
	churnStart := time.Now()
	jobs := make(chan int, 100000)
	var wmu sync.Mutex
	var werr error
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			for s := range jobs {
				k := s - firstSeq - routeChanges - 1
				svc := (k * 7907) % sc.Services
				es := sc.Slice(svc, -1)
				next := notReady[es.Namespace+"/"+es.Name] + 1 // each Service changes once: no lock
				if next >= sc.Endpoints {
					next = -1
				}
				wmu.Lock()
				written[s] = time.Now()
				wmu.Unlock()
				err := sc.ChangeEndpoint(ctx, kube, svc, next, s)
				wmu.Lock()
				applied[s] = time.Now()
				wmu.Unlock()
				if err != nil {
					wmu.Lock()
					werr = err
					wmu.Unlock()
				}
			}
		})
	}
	tick := time.NewTicker(time.Second / churnPerSec)
	var rssSamples []int64
	lastSample := time.Now()
	for time.Since(churnStart) < churnFor {
		<-tick.C
		seq++
		churnSeqs = append(churnSeqs, seq)
		jobs <- seq
		if time.Since(lastSample) >= time.Second {
			rssSamples = append(rssSamples, readProc(pid).rss)
			lastSample = time.Now()
		}
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
	churnWall := time.Since(churnStart)
	after := readProc(pid)
	if werr != nil {
		b.Fatal(werr)
	}
	lastRound, ok := waitRound(seq, time.Minute)
	if !ok || !waitAcked(health, sc.Nodes, lastRound.Base, 2*time.Minute, 50*time.Millisecond) {
		b.Fatal("churn: the last change did not reach every node in time")
	}
	final := readProc(pid)
	fmt.Printf("scale: %d endpoint changes in %v\n", len(churnSeqs), churnWall.Round(time.Millisecond))

	agents.stop()
	ctl.stop()
	fh, err := os.Open(recvFile)
	if err != nil {
		b.Fatal(err)
	}
	received, err := ReadReceived(fh)
	fh.Close()
	if err != nil {
		b.Fatal(err)
	}

	// 5. figures, from what the agents received
	byNode := make([][]Received, sc.Nodes)
	for _, r := range received {
		byNode[r.Node] = append(byNode[r.Node], r)
	}
	var firstAt int64
	var fullBytes int
	nacks, fulls := 0, 0
	for n, rs := range byNode {
		sort.Slice(rs, func(i, j int) bool { return rs[i].At < rs[j].At })
		if len(rs) == 0 {
			b.Fatalf("node %d received nothing", n)
		}
		firstAt = max(firstAt, rs[0].At)
		fullBytes = max(fullBytes, rs[0].Bytes)
		for _, r := range rs[1:] {
			if r.Nack {
				nacks++
			}
			if r.Full {
				fulls++
			}
		}
	}
	syncTime := time.Duration(firstAt - t0.UnixNano())
	// delivered: when every node had a version above base, and the bytes
	// of those messages
	delivered := func(base uint64) (time.Time, int, bool) {
		var at int64
		bytes := 0
		for _, rs := range byNode {
			// versions only grow in the order received
			i := sort.Search(len(rs), func(i int) bool { return rs[i].Version > base })
			for i < len(rs) && rs[i].Nack {
				i++
			}
			if i == len(rs) {
				return time.Time{}, 0, false
			}
			at = max(at, rs[i].At)
			bytes += rs[i].Bytes
		}
		return time.Unix(0, at), bytes, true
	}
	type del struct {
		at    time.Time
		bytes int
		ok    bool
	}
	dcache := map[int]del{}
	// parts of each change's way: apiserver write, then informer event,
	// debounce and any round in progress (to the resolution's start),
	// resolution, push and ACKs (resolution end to every node ACKed)
	type parts struct{ write, toRound, resolve, push []time.Duration }
	var routeParts, churnParts parts
	latencies := func(seqs []int, pt *parts) ([]time.Duration, int, int) {
		var lat []time.Duration
		bytes, missing := 0, 0
		counted := map[int]bool{}
		for _, s := range seqs {
			i, ok := roundOf[s]
			if !ok {
				missing++
				continue
			}
			d, ok := dcache[i]
			if !ok {
				d.at, d.bytes, d.ok = delivered(rounds[i].Base)
				dcache[i] = d
			}
			at, n, ok := d.at, d.bytes, d.ok
			if !ok {
				missing++
				continue
			}
			lat = append(lat, at.Sub(written[s]))
			rd := rounds[i]
			pt.write = append(pt.write, applied[s].Sub(written[s]))
			pt.toRound = append(pt.toRound, time.Unix(0, rd.Start).Sub(applied[s]))
			pt.resolve = append(pt.resolve, time.Duration(rd.End-rd.Start))
			pt.push = append(pt.push, at.Sub(time.Unix(0, rd.End)))
			if !counted[i] {
				counted[i] = true
				bytes += n
			}
		}
		return lat, bytes, missing
	}
	rmu.Lock()
	routeLat, routeBytes, routeMissing := latencies(routeSeqs, &routeParts)
	churnLat, churnBytes, churnMissing := latencies(churnSeqs, &churnParts)
	resolutions := resolves
	rmu.Unlock()
	cpu := float64(after.cpu-before.cpu) / float64(churnWall)
	slices.Sort(rssSamples)
	steady := final.rss
	if len(rssSamples) > 0 {
		steady = rssSamples[len(rssSamples)/2]
	}
	perRoute := routeBytes / max(1, len(routeLat))
	perEndpoint := churnBytes / max(1, len(churnLat))

	w := os.Stdout
	fmt.Fprintf(w, "\nWeft control plane at scale: %s, namespaces=%d (load %v, %d resolutions)\n", sc, sc.Namespaces, loadTime.Round(time.Second), resolutions)
	row := func(k, v, goal string) { fmt.Fprintf(w, "  %-44s %16s   %s\n", k, v, goal) }
	row("initial sync (controller start -> all ACKed)", ms(syncTime)+" ms", "")
	row("full snapshot per node", strconv.Itoa(fullBytes>>10)+" KiB", "")
	row("route change -> all nodes ACKed, p50", ms(pct(routeLat, 0.5))+" ms", "goal <= 200 ms")
	row("route change -> all nodes ACKed, p99", ms(pct(routeLat, 0.99))+" ms", "goal <= 1000 ms")
	row(fmt.Sprintf("churn %d endpoint changes/s: p50", churnPerSec), ms(pct(churnLat, 0.5))+" ms", "")
	row(fmt.Sprintf("churn %d endpoint changes/s: p99", churnPerSec), ms(pct(churnLat, 0.99))+" ms", "goal <= 2000 ms")
	row("churn: controller CPU", strconv.FormatFloat(cpu, 'f', 2, 64)+" cores", "")
	for _, p := range []struct {
		name string
		pt   parts
	}{{"route", routeParts}, {"churn", churnParts}} {
		pp := func(d []time.Duration) string { return ms(pct(d, 0.5)) + " / " + ms(pct(d, 0.99)) + " ms" }
		row(p.name+" parts p50/p99: apiserver write", pp(p.pt.write), "")
		row(p.name+"   write done -> resolution start", pp(p.pt.toRound), "informer, debounce, earlier round, snapshot")
		row(p.name+"   resolution (snapshot taken)", pp(p.pt.resolve), "")
		row(p.name+"   resolution end -> all nodes ACKed", pp(p.pt.push), "diff, push, agents")
	}
	row("bytes per route change, per node", strconv.Itoa(perRoute/sc.Nodes)+" B", "")
	row("bytes per route change, all nodes", strconv.Itoa(perRoute)+" B", "")
	row("bytes per endpoint change, per node", strconv.Itoa(perEndpoint/sc.Nodes)+" B", "")
	row("bytes per endpoint change, all nodes", strconv.Itoa(perEndpoint)+" B", "")
	row("controller RSS peak (VmHWM)", mib(final.hwm)+" MiB", "goal <= 1024 MiB")
	row("controller RSS steady (median under churn)", mib(steady)+" MiB", "")
	row("changes not measured (route, churn)", fmt.Sprintf("%d, %d", routeMissing, churnMissing), "")
	row("NACKs, full resyncs after the first", fmt.Sprintf("%d, %d", nacks, fulls), "")
	fmt.Fprintf(w, "scale services=%d endpoints=%d routes=%d nodes=%d sync_s=%.1f route_p50_ms=%s route_p99_ms=%s churn_p99_ms=%s churn_cpu=%.2f bytes_per_route_change=%d bytes_per_endpoint_change=%d rss_mb=%s\n",
		sc.Services, sc.Services*sc.Endpoints, sc.Services*sc.Routes, sc.Nodes, syncTime.Seconds(),
		ms(pct(routeLat, 0.5)), ms(pct(routeLat, 0.99)), ms(pct(churnLat, 0.99)), cpu, perRoute, perEndpoint, mib(final.hwm))
	b.ReportMetric(pct(routeLat, 0.5).Seconds()*1000, "route-p50-ms")
	b.ReportMetric(pct(churnLat, 0.99).Seconds()*1000, "churn-p99-ms")
}
