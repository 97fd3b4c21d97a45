package scale

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/test/kubetest"
)

// The phases of BenchmarkScale, in order.

// cluster is the apiserver the benchmark runs against, loaded.
type cluster struct {
	sc         Scale
	kube       kubernetes.Interface
	gw         gwclient.Interface
	dyn        dynamic.Interface
	kubeconfig string
	loadTime   time.Duration // 0: loaded by an earlier run
}

// openCluster starts kube-apiserver and etcd on the data kept in
// .cache/bench-scale (loading 140k objects through the apiserver takes
// minutes; a later run reuses them, a load that failed is resumed).
func openCluster(b *testing.B, sc Scale) cluster {
	ctx := context.Background()
	root, err := kubetest.Root()
	if err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("n%d-ns%d-s%d-e%d-r%d", sc.Nodes, sc.Namespaces, sc.Services, sc.Endpoints, sc.Routes)
	if sc.Policies {
		name += "-authz"
	}
	cache := filepath.Join(root, ".cache", "bench-scale", name)
	loaded := filepath.Join(cache, "loaded")
	if err := os.MkdirAll(filepath.Join(cache, "etcd"), 0o700); err != nil {
		b.Fatal(err)
	}
	kc := kubetest.StartWith(b, kubetest.Options{EtcdDataDir: filepath.Join(cache, "etcd"), NoFsync: true})
	cl := cluster{sc: sc, kubeconfig: filepath.Join(b.TempDir(), "kubeconfig")}
	if err := writeKubeconfig(cl.kubeconfig, kc.Config); err != nil {
		b.Fatal(err)
	}
	rc := rest.CopyConfig(kc.Config)
	rc.QPS, rc.Burst = -1, 0
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	if cl.kube, err = kubernetes.NewForConfig(rc); err != nil {
		b.Fatal(err)
	}
	grc := rest.CopyConfig(kc.Config)
	grc.QPS, grc.Burst = -1, 0
	if cl.gw, err = gwclient.NewForConfig(grc); err != nil {
		b.Fatal(err)
	}
	if cl.dyn, err = dynamic.NewForConfig(grc); err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(loaded); err == nil {
		fmt.Printf("scale: %s loaded by an earlier run (%s)\n", sc, cache)
		return cl
	}
	fmt.Printf("scale: loading %s into the apiserver\n", sc)
	t := time.Now()
	if err := Load(ctx, cl.kube, cl.gw, cl.dyn, sc, 24, func(n int) { fmt.Printf("scale: %d services loaded (%v)\n", n, time.Since(t).Round(time.Second)) }); err != nil {
		b.Fatal(err)
	}
	cl.loadTime = time.Since(t)
	if err := os.WriteFile(loaded, []byte(cl.loadTime.String()+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	fmt.Printf("scale: loaded in %v\n", cl.loadTime.Round(time.Second))
	return cl
}

// rounds collects the controller's resolution rounds and counters from
// its output lines (ROUND base start end seq..., STATS writes resolves).
type rounds struct {
	mu           sync.Mutex
	list         []Round
	of           map[int]int // change seq -> index in list
	statusWrites int64
	resolves     int64
	added        chan struct{}
}

func followRounds(lines <-chan string) *rounds {
	rs := &rounds{of: map[int]int{}, added: make(chan struct{}, 1)}
	go func() {
		for l := range lines {
			rs.parse(strings.Fields(l))
		}
	}()
	return rs
}

func (rs *rounds) parse(f []string) {
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
		rs.mu.Lock()
		for _, s := range r.Seqs {
			rs.of[s] = len(rs.list)
		}
		rs.list = append(rs.list, r)
		rs.mu.Unlock()
		select {
		case rs.added <- struct{}{}:
		default:
		}
	case len(f) == 3 && f[0] == "STATS":
		w, _ := strconv.ParseInt(f[1], 10, 64)
		r, _ := strconv.ParseInt(f[2], 10, 64)
		rs.mu.Lock()
		rs.statusWrites, rs.resolves = w, r
		rs.mu.Unlock()
	}
}

// wait returns the round that resolved change seq, waiting at most d.
func (rs *rounds) wait(seq int, d time.Duration) (Round, bool) {
	deadline := time.After(d)
	for {
		rs.mu.Lock()
		i, ok := rs.of[seq]
		var r Round
		if ok {
			r = rs.list[i]
		}
		rs.mu.Unlock()
		if ok {
			return r, true
		}
		select {
		case <-rs.added:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			return Round{}, false
		}
	}
}

func (rs *rounds) writes() int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.statusWrites
}

// run is one run of the benchmark: the controller and the agents as
// children, and every change sent, by sequence number.
type run struct {
	b      *testing.B
	ctx    context.Context
	cl     cluster
	sc     Scale
	start  time.Time // the controller started
	ctl    *child
	agents *child
	health string
	recv   string // the agents' record of what they received
	rounds *rounds
	// churnPods is what churn writes of pods (envChurnPods)
	churnPods churnPods

	wmu              sync.Mutex
	written, applied map[int]time.Time // sent to the apiserver; its answer
	seq, firstSeq    int
	routeSeqs        []int
	churnSeqs        []int
	// policySeqs are the policy changes, and the nodes each reaches
	policySeqs  []int
	policyNodes map[int][]string
}

// startRun starts the controller, then one simulated agent per node.
func startRun(b *testing.B, cl cluster) *run {
	r := &run{b: b, ctx: context.Background(), cl: cl, sc: cl.sc, start: time.Now(),
		written: map[int]time.Time{}, applied: map[int]time.Time{}, churnPods: churnPodsOf(os.Getenv(envChurnPods))}
	r.ctl = startChild(b, "controller", envKubeconfig+"="+cl.kubeconfig, envNodes+"="+strconv.Itoa(r.sc.Nodes))
	f := strings.Fields(r.ctl.waitLine(b, "ADDR ", time.Minute, nil))
	grpcAddr := f[1]
	r.health = f[2]
	r.recv = filepath.Join(b.TempDir(), "received")
	r.agents = startChild(b, "agents", envAddr+"="+grpcAddr, envNodes+"="+strconv.Itoa(r.sc.Nodes), envOut+"="+r.recv)
	r.rounds = followRounds(r.ctl.lines)
	// sequence numbers differ from run to run (the objects keep theirs)
	r.seq = int(time.Now().Unix()%100000) * 100000
	r.firstSeq = r.seq
	return r
}

// initialSync waits until every node ACKed its first policy.
func (r *run) initialSync() {
	if !waitAcked(r.health, r.sc.Nodes, 0, 10*time.Minute, 100*time.Millisecond) {
		r.b.Fatal("initial sync: not every node ACKed in 10 minutes")
	}
	fmt.Printf("scale: every node ACKed its first policy %v after the controller started\n", time.Since(r.start).Round(time.Millisecond))
}

// settleStatuses waits for the route statuses (20,000 writes, and 10,000
// policy statuses with Scale.Policies; counted when the whole pass ends),
// the controller's own start-up work, before any change is measured.
func (r *run) settleStatuses() {
	settle := time.Now()
	want := int64(r.sc.Services * r.sc.Routes)
	if r.sc.Policies {
		want += int64(r.sc.Services) // and the policies'
	}
	var writes int64
	last, stable := int64(-1), 0
	for time.Since(settle) < 10*time.Minute {
		writes = r.rounds.writes()
		if writes >= want {
			break
		}
		if writes == last {
			stable++
		} else {
			last, stable = writes, 0
		}
		// statuses kept from an earlier run: the pass writes little
		if stable >= 5 && routesAccepted(r.ctx, r.cl.gw, r.sc) && policiesAccepted(r.ctx, r.cl.dyn, r.sc) {
			break
		}
		time.Sleep(time.Second)
	}
	time.Sleep(2 * time.Second)
	fmt.Printf("scale: route statuses written (%d writes, %v after the sync)\n", writes, time.Since(settle).Round(time.Second))
}

// routeChanges changes route weights one at a time, each waited for until
// every node ACKed it.
func (r *run) routeChanges() {
	for c := 0; c < routeChanges; c++ {
		r.seq++
		seq, svc := r.seq, (c*7919)%r.sc.Services
		w, err := r.sc.RouteWeight(r.ctx, r.cl.gw, svc, c%r.sc.Routes)
		if err != nil {
			r.b.Fatal(err)
		}
		r.written[seq] = time.Now()
		if err := r.sc.ChangeRoute(r.ctx, r.cl.gw, svc, c%r.sc.Routes, w, seq); err != nil {
			r.b.Fatal(err)
		}
		r.applied[seq] = time.Now()
		r.routeSeqs = append(r.routeSeqs, seq)
		rd, ok := r.rounds.wait(seq, time.Minute)
		if !ok {
			r.b.Fatalf("route change %d: no resolution saw it in a minute", seq)
		}
		if !waitAcked(r.health, r.sc.Nodes, rd.Base, time.Minute, 2*time.Millisecond) {
			r.b.Fatalf("route change %d: not every node ACKed in a minute", seq)
		}
	}
	fmt.Printf("scale: %d route changes done\n", routeChanges)
}

// policyChanges changes AuthorizationPolicies one at a time (with
// Scale.Policies), each waited for until the nodes of the pods it selects
// ACKed it: no other node's policy changes.
func (r *run) policyChanges() {
	if !r.sc.Policies {
		return
	}
	r.policyNodes = map[int][]string{}
	for c := 0; c < policyChanges; c++ {
		r.seq++
		seq, svc := r.seq, (c*7919+17)%r.sc.Services
		n, err := r.sc.PolicyCallers(r.ctx, r.cl.dyn, svc)
		if err != nil {
			r.b.Fatal(err)
		}
		r.written[seq] = time.Now()
		if err := r.sc.ChangePolicy(r.ctx, r.cl.dyn, svc, 3-n, seq); err != nil { // 1 caller, 2, 1, ...
			r.b.Fatal(err)
		}
		r.applied[seq] = time.Now()
		r.policySeqs = append(r.policySeqs, seq)
		nodes := r.sc.PolicyNodes(svc)
		r.policyNodes[seq] = nodes
		rd, ok := r.rounds.wait(seq, time.Minute)
		if !ok {
			r.b.Fatalf("policy change %d: no resolution saw it in a minute", seq)
		}
		if !waitNodesAcked(r.health, nodes, rd.Base, time.Minute, 2*time.Millisecond) {
			r.b.Fatalf("policy change %d: its nodes did not ACK it in a minute", seq)
		}
	}
	fmt.Printf("scale: %d policy changes done\n", policyChanges)
}

// churned is what the churn phase measured of the controller process.
type churned struct {
	wall         time.Duration
	cpu          float64 // cores, over wall
	steady, peak int64   // RSS: median under churn; VmHWM at the end
	pods         churnPods
}

// churnPods is what a churn change writes of pods before the slice.
type churnPods int

const (
	podsUntouched churnPods = iota
	podsReadiness           // the Ready conditions that flip
	podsReplaced            // and the pod turning not ready is replaced
)

// churnPodsOf reads envChurnPods: "" nothing, "replace", anything else
// readiness.
func churnPodsOf(v string) churnPods {
	switch v {
	case "":
		return podsUntouched
	case "replace":
		return podsReplaced
	}
	return podsReadiness
}

// churn flips one endpoint of a Service between ready and not ready,
// churnPerSec times a second for d, from 16 writers, then waits until
// every node ACKed the last change.
func (r *run) churn(d time.Duration) churned {
	notReady := r.notReadyEndpoints()
	pid := r.ctl.cmd.Process.Pid
	before := readProc(pid)
	start := time.Now()
	jobs := make(chan int, 100000)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for s := range jobs {
				if err := r.changeEndpoint(s, notReady); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		})
	}
	tick := time.NewTicker(time.Second / churnPerSec)
	var rss []int64
	lastSample := time.Now()
	for time.Since(start) < d {
		<-tick.C
		r.seq++
		r.churnSeqs = append(r.churnSeqs, r.seq)
		jobs <- r.seq
		if time.Since(lastSample) >= time.Second {
			rss = append(rss, readProc(pid).rss)
			lastSample = time.Now()
		}
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
	ch := churned{wall: time.Since(start), pods: r.churnPods}
	after := readProc(pid)
	select {
	case err := <-errc:
		r.b.Fatal(err)
	default:
	}
	last, ok := r.rounds.wait(r.seq, time.Minute)
	if !ok || !waitAcked(r.health, r.sc.Nodes, last.Base, 2*time.Minute, 50*time.Millisecond) {
		r.b.Fatal("churn: the last change did not reach every node in time")
	}
	final := readProc(pid)
	fmt.Printf("scale: %d endpoint changes in %v\n", len(r.churnSeqs), ch.wall.Round(time.Millisecond))
	ch.cpu = float64(after.cpu-before.cpu) / float64(ch.wall)
	ch.peak, ch.steady = final.hwm, final.rss
	if len(rss) > 0 {
		slices.Sort(rss)
		ch.steady = rss[len(rss)/2]
	}
	return ch
}

// notReadyEndpoints finds the current not-ready endpoint of every
// EndpointSlice (-1: none; the cluster may come from an earlier run), so
// that each churn change is one request and changes something.
func (r *run) notReadyEndpoints() map[string]int {
	notReady := map[string]int{}
	all, err := r.cl.kube.DiscoveryV1().EndpointSlices("").List(r.ctx, metav1.ListOptions{})
	if err != nil {
		r.b.Fatal(err)
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
	return notReady
}

// changeEndpoint makes churn change s: the next endpoint of its Service
// not ready. A Service comes round again after every other one (at the
// small size, every 5 s): notReady follows what was written, so that each
// change changes the slice's endpoints, not only its annotation (a slice
// written again as it was gives the agents nothing new, and the last
// change would never be ACKed).
func (r *run) changeEndpoint(s int, notReady map[string]int) error {
	k := s - r.firstSeq - routeChanges - 1
	svc := (k * 7907) % r.sc.Services
	es := r.sc.Slice(svc, -1)
	r.wmu.Lock()
	key := es.Namespace + "/" + es.Name
	prev := notReady[key]
	next := prev + 1
	if next >= r.sc.Endpoints {
		next = -1
	}
	notReady[key] = next
	r.written[s] = time.Now()
	r.wmu.Unlock()
	if r.churnPods != podsUntouched {
		// the kubelets first, as in a cluster: the pod that was not ready
		// is again, the next one is not
		if prev >= 0 {
			if err := r.sc.SetPodReady(r.ctx, r.cl.kube, svc, prev, true); err != nil {
				return err
			}
		}
		if next >= 0 {
			set := func() error { return r.sc.SetPodReady(r.ctx, r.cl.kube, svc, next, false) }
			if r.churnPods == podsReplaced {
				set = func() error { return r.sc.ReplacePod(r.ctx, r.cl.kube, svc, next) }
			}
			if err := set(); err != nil {
				return err
			}
		}
	}
	err := r.sc.ChangeEndpoint(r.ctx, r.cl.kube, svc, next, s)
	r.wmu.Lock()
	r.applied[s] = time.Now()
	r.wmu.Unlock()
	return err
}

// stop ends the children and returns what the agents received.
func (r *run) stop() []Received {
	r.agents.stop()
	r.ctl.stop()
	fh, err := os.Open(r.recv)
	if err != nil {
		r.b.Fatal(err)
	}
	defer fh.Close()
	received, err := ReadReceived(fh)
	if err != nil {
		r.b.Fatal(err)
	}
	return received
}

// parts of each change's way: apiserver write, then informer event,
// debounce and any round in progress (to the resolution's start),
// resolution, push and ACKs (resolution end to every node ACKed).
type parts struct{ write, toRound, resolve, push []time.Duration }

// figures is what the run measured, from what the agents received.
type figures struct {
	syncTime                  time.Duration
	fullBytes                 int // the largest first snapshot of a node
	nacks, fulls              int
	routeLat, churnLat        []time.Duration
	routeParts, churnParts    parts
	perRoute, perEndpoint     int // bytes per change, all nodes
	routeMissing, churnMissed int
	policyLat                 []time.Duration
	policyParts               parts
	perPolicy, policyMissing  int
	resolves                  int64
	slowest                   slowPush
}

// slowPush is the slowest route change's push: which change (0-based), and
// how long after its round ended the median node and the last node had it.
// A late last node alone is one stream held up; a late median, the
// controller or the whole machine.
type slowPush struct {
	change       int
	median, last time.Duration
	lastNode     int
	over100ms    int // nodes that had it over 100 ms after the median node
	roundChanges int // changes the round carried
	found        bool
}

func (r *run) figures(received []Received, ch churned) figures {
	byNode := make([][]Received, r.sc.Nodes)
	for _, rc := range received {
		byNode[rc.Node] = append(byNode[rc.Node], rc)
	}
	var fig figures
	var firstAt int64
	for n, rs := range byNode {
		sort.Slice(rs, func(i, j int) bool { return rs[i].At < rs[j].At })
		if len(rs) == 0 {
			r.b.Fatalf("node %d received nothing", n)
		}
		firstAt = max(firstAt, rs[0].At)
		fig.fullBytes = max(fig.fullBytes, rs[0].Bytes)
		for _, rc := range rs[1:] {
			if rc.Nack {
				fig.nacks++
			}
			if rc.Full {
				fig.fulls++
			}
		}
	}
	fig.syncTime = time.Duration(firstAt - r.start.UnixNano())
	d := deliveries{byNode: byNode, cache: map[int]delivery{}}
	r.rounds.mu.Lock()
	defer r.rounds.mu.Unlock()
	var routeBytes, churnBytes int
	everyNode := func(_, i int) delivery { return d.of(i, r.rounds.list[i].Base) }
	fig.routeLat, routeBytes, fig.routeMissing = r.latencies(r.routeSeqs, &fig.routeParts, everyNode)
	fig.churnLat, churnBytes, fig.churnMissed = r.latencies(r.churnSeqs, &fig.churnParts, everyNode)
	var policyBytes int
	fig.policyLat, policyBytes, fig.policyMissing = r.latencies(r.policySeqs, &fig.policyParts, func(s, i int) delivery {
		return d.ofNodes(r.rounds.list[i].Base, r.policyNodes[s])
	})
	fig.perPolicy = policyBytes / max(1, len(fig.policyLat))
	fig.slowest = r.slowestPush(&d)
	fig.resolves = r.rounds.resolves
	fig.perRoute = routeBytes / max(1, len(fig.routeLat))
	fig.perEndpoint = churnBytes / max(1, len(fig.churnLat))
	return fig
}

// deliveries finds when every node had a version above a base, and the
// bytes of those messages (cached per round).
type deliveries struct {
	byNode [][]Received // each node's, in the order received
	cache  map[int]delivery
}

type delivery struct {
	at    time.Time
	bytes int
	ok    bool
}

func (d *deliveries) of(round int, base uint64) delivery {
	if dl, ok := d.cache[round]; ok {
		return dl
	}
	var at int64
	dl := delivery{ok: true}
	for _, rs := range d.byNode {
		i := firstAbove(rs, base)
		if i == len(rs) {
			dl = delivery{}
			break
		}
		at = max(at, rs[i].At)
		dl.bytes += rs[i].Bytes
	}
	if dl.ok {
		dl.at = time.Unix(0, at)
	}
	d.cache[round] = dl
	return dl
}

// firstAbove is the index in rs (a node's, in the order received) of the
// first version above base that the node took (not NACKed); len(rs) when
// there is none.
func firstAbove(rs []Received, base uint64) int {
	// versions only grow in the order received
	i := sort.Search(len(rs), func(i int) bool { return rs[i].Version > base })
	for i < len(rs) && rs[i].Nack {
		i++
	}
	return i
}

// slowestPush finds the route change whose push (round end -> every node
// had it) took longest, and how its nodes spread. r.rounds.mu is held.
func (r *run) slowestPush(d *deliveries) slowPush {
	var sp slowPush
	var worst time.Duration
	var rd Round
	for c, s := range r.routeSeqs {
		i, ok := r.rounds.of[s]
		if !ok {
			continue
		}
		dl := d.of(i, r.rounds.list[i].Base)
		if !dl.ok {
			continue
		}
		if push := dl.at.Sub(time.Unix(0, r.rounds.list[i].End)); !sp.found || push > worst {
			worst, rd, sp = push, r.rounds.list[i], slowPush{change: c, found: true, roundChanges: len(r.rounds.list[i].Seqs)}
		}
	}
	if !sp.found {
		return sp
	}
	// d.of found a version above the base for every node
	at := make([]int64, len(d.byNode))
	for n, rs := range d.byNode {
		at[n] = rs[firstAbove(rs, rd.Base)].At
		if at[n] > at[sp.lastNode] {
			sp.lastNode = n
		}
	}
	sp.last = time.Duration(at[sp.lastNode] - rd.End)
	sorted := slices.Clone(at)
	slices.Sort(sorted)
	med := sorted[len(sorted)/2]
	sp.median = time.Duration(med - rd.End)
	for _, a := range at {
		if a-med > int64(100*time.Millisecond) {
			sp.over100ms++
		}
	}
	return sp
}

// ofNodes is when each of nodes had a version above base, and the bytes of
// those messages: for a change that reaches these nodes only.
func (d *deliveries) ofNodes(base uint64, nodes []string) delivery {
	var at int64
	dl := delivery{ok: true}
	for _, name := range nodes {
		n, err := strconv.Atoi(strings.TrimPrefix(name, "node-"))
		if err != nil || n < 0 || n >= len(d.byNode) {
			return delivery{}
		}
		rs := d.byNode[n]
		i := firstAbove(rs, base)
		if i == len(rs) {
			return delivery{}
		}
		at = max(at, rs[i].At)
		dl.bytes += rs[i].Bytes
	}
	dl.at = time.Unix(0, at)
	return dl
}

// measured adds the parts of change s, carried by round rd and had by the
// last node at at, to pt, and returns change -> that node had it.
func (r *run) measured(pt *parts, s int, rd Round, at time.Time) time.Duration {
	pt.write = append(pt.write, r.applied[s].Sub(r.written[s]))
	pt.toRound = append(pt.toRound, time.Unix(0, rd.Start).Sub(r.applied[s]))
	pt.resolve = append(pt.resolve, time.Duration(rd.End-rd.Start))
	pt.push = append(pt.push, at.Sub(time.Unix(0, rd.End)))
	return at.Sub(r.written[s])
}

// latencies returns, for the changes seqs, change -> the nodes deliver
// names (by change and round) had it, the bytes of the rounds that carried
// them (each round once) and how many were not seen; pt gets each change's
// parts. r.rounds.mu is held.
func (r *run) latencies(seqs []int, pt *parts, deliver func(seq, round int) delivery) (lat []time.Duration, bytes, missing int) {
	counted := map[int]bool{}
	for _, s := range seqs {
		i, ok := r.rounds.of[s]
		if !ok {
			missing++
			continue
		}
		rd := r.rounds.list[i]
		dl := deliver(s, i)
		if !dl.ok {
			missing++
			continue
		}
		lat = append(lat, r.measured(pt, s, rd, dl.at))
		if !counted[i] {
			counted[i] = true
			bytes += dl.bytes
		}
	}
	return lat, bytes, missing
}

// print writes the table and, last, the one-line summary.
func (fig figures) print(w io.Writer, cl cluster, ch churned) {
	sc := cl.sc
	fmt.Fprintf(w, "\nWeft control plane at scale: %s, namespaces=%d (load %v, %d resolutions)\n", sc, sc.Namespaces, cl.loadTime.Round(time.Second), fig.resolves)
	row := func(k, v, goal string) { fmt.Fprintf(w, "  %-44s %16s   %s\n", k, v, goal) }
	row("initial sync (controller start -> all ACKed)", ms(fig.syncTime)+" ms", "")
	row("full snapshot per node", strconv.Itoa(fig.fullBytes>>10)+" KiB", "")
	row("route change -> all nodes ACKed, p50", ms(pct(fig.routeLat, 0.5))+" ms", "goal <= 200 ms")
	row("route change -> all nodes ACKed, p99", ms(pct(fig.routeLat, 0.99))+" ms", "goal <= 1000 ms")
	churn := fmt.Sprintf("churn %d endpoint changes/s", churnPerSec)
	switch ch.pods {
	case podsReplaced:
		churn += " (+pod replaced)"
	case podsReadiness:
		churn += " (+pods)"
	}
	row(churn+": p50", ms(pct(fig.churnLat, 0.5))+" ms", "")
	row(churn+": p99", ms(pct(fig.churnLat, 0.99))+" ms", "goal <= 2000 ms")
	row("churn: controller CPU", strconv.FormatFloat(ch.cpu, 'f', 2, 64)+" cores", "")
	phases := []struct {
		name string
		pt   parts
	}{{"route", fig.routeParts}, {"churn", fig.churnParts}}
	if sc.Policies {
		row("policy change -> its nodes ACKed, p50", ms(pct(fig.policyLat, 0.5))+" ms", "")
		row("policy change -> its nodes ACKed, p99", ms(pct(fig.policyLat, 0.99))+" ms", "")
		phases = append(phases, struct {
			name string
			pt   parts
		}{"policy", fig.policyParts})
	}
	for _, p := range phases {
		pp := func(d []time.Duration) string { return ms(pct(d, 0.5)) + " / " + ms(pct(d, 0.99)) + " ms" }
		row(p.name+" parts p50/p99: apiserver write", pp(p.pt.write), "")
		row(p.name+"   write done -> resolution start", pp(p.pt.toRound), "informer, debounce, earlier round, snapshot")
		row(p.name+"   resolution (snapshot taken)", pp(p.pt.resolve), "")
		row(p.name+"   resolution end -> all nodes ACKed", pp(p.pt.push), "diff, push, agents")
	}
	if sp := fig.slowest; sp.found {
		row(fmt.Sprintf("slowest route push (change %d of %d)", sp.change+1, len(fig.routeLat)),
			fmt.Sprintf("%s / %s ms", ms(sp.median), ms(sp.last)),
			fmt.Sprintf("median node / last node (node-%d); %d nodes over 100 ms after the median; round of %d changes", sp.lastNode, sp.over100ms, sp.roundChanges))
	}
	row("bytes per route change, per node", strconv.Itoa(fig.perRoute/sc.Nodes)+" B", "")
	row("bytes per route change, all nodes", strconv.Itoa(fig.perRoute)+" B", "")
	row("bytes per endpoint change, per node", strconv.Itoa(fig.perEndpoint/sc.Nodes)+" B", "")
	row("bytes per endpoint change, all nodes", strconv.Itoa(fig.perEndpoint)+" B", "")
	if sc.Policies {
		row("bytes per policy change, all nodes", strconv.Itoa(fig.perPolicy)+" B", fmt.Sprintf("to the %d nodes of its pods at most", sc.Endpoints))
		row("policy changes not measured", strconv.Itoa(fig.policyMissing), "")
	}
	row("controller RSS peak (VmHWM)", mib(ch.peak)+" MiB", "goal <= 1024 MiB")
	row("controller RSS steady (median under churn)", mib(ch.steady)+" MiB", "")
	row("changes not measured (route, churn)", fmt.Sprintf("%d, %d", fig.routeMissing, fig.churnMissed), "")
	row("NACKs, full resyncs after the first", fmt.Sprintf("%d, %d", fig.nacks, fig.fulls), "")
	fmt.Fprintf(w, "scale services=%d endpoints=%d routes=%d nodes=%d sync_s=%.1f route_p50_ms=%s route_p99_ms=%s churn_p99_ms=%s churn_cpu=%.2f bytes_per_route_change=%d bytes_per_endpoint_change=%d rss_mb=%s\n",
		sc.Services, sc.Services*sc.Endpoints, sc.Services*sc.Routes, sc.Nodes, fig.syncTime.Seconds(),
		ms(pct(fig.routeLat, 0.5)), ms(pct(fig.routeLat, 0.99)), ms(pct(fig.churnLat, 0.99)), ch.cpu, fig.perRoute, fig.perEndpoint, mib(ch.peak))
}
