// Package acceptance checks the lab the way a new user meets it (issue 2): two Ready
// nodes, an echo Deployment spread over them behind a Service, DNS and ClusterIP
// traffic across nodes through `kubectl exec`, pod deletion and restarts, a control
// plane that comes back from a crash while the pods run on, and a `down` that leaves
// nothing behind.
package acceptance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/weft-mesh/weft/test/echo"
	"github.com/weft-mesh/weft/test/lab"
	"github.com/weft-mesh/weft/test/lab/cluster"
	"github.com/weft-mesh/weft/test/lab/labtest"
)

const (
	echoImage    = "ghcr.io/weft-mesh/echo:dev"
	toolboxImage = "ghcr.io/weft-mesh/toolbox:dev"
)

// TestPrivilegedLab runs the acceptance steps in order on one lab: the last step takes
// the lab down and checks that nothing is left.
func TestPrivilegedLab(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	l, err := labtest.Start(ctx, labtest.Options{Nodes: 2})
	if errors.Is(err, labtest.ErrSkip) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			if err := l.Stop(); err != nil {
				t.Errorf("stop lab: %v", err)
			}
		}
	}()
	ns, deleteNS, err := l.Namespace(ctx, "lab-accept", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { deleteNS() }()

	steps := []struct {
		name string
		fn   func(*testing.T, context.Context, *labtest.Lab, string)
	}{
		{"ControlPlane", testControlPlane},
		{"NodesReady", testNodesReady},
		{"EchoSpreadsWithEndpoints", testEchoDeployment},
		{"ExecAcrossNodesThroughDNS", testExecAcrossNodes},
		{"LogsThroughAPIServer", testLogs},
		{"DeletedPodIsGoneAndReplaced", testDeletePod},
		{"FailingContainerRestarts", testRestart},
		{"ControlPlaneCrashKeepsPods", testControlPlaneCrash},
	}
	for _, s := range steps {
		if !t.Run(s.name, func(t *testing.T) { s.fn(t, ctx, l, ns) }) {
			t.Fatalf("%s failed; later steps depend on it", s.name)
		}
	}
	t.Run("CrashedLabIsCleanedUpByNextUp", func(t *testing.T) {
		if !l.Owned() {
			t.Skip("the lab was started outside this test (`weft-lab up`); not crashing it")
		}
		testCrashRecovery(t, ctx, l)
	})
	t.Run("DownLeavesNothingBehind", func(t *testing.T) {
		if !l.Owned() {
			t.Skip("the lab was started outside this test (`weft-lab up`); not taking it down")
		}
		before := snapshotLab(t, l)
		deleteNS = func() {}
		stopped = true
		if err := l.Stop(); err != nil {
			t.Fatalf("down: %v", err)
		}
		checkNothingLeft(t, l.Paths, before)
	})
}

func testControlPlane(t *testing.T, ctx context.Context, l *labtest.Lab, _ string) {
	v, err := l.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.37.0" {
		t.Errorf("server version %s, want v1.37.0", v.GitVersion)
	}
	// kubectl works against the admin kubeconfig.
	kubectl := filepath.Join(l.Paths.K8sBinDir, "kubectl")
	out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", l.Kubeconfig(), "get", "crd", "-o", "name").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get crd: %v\n%s", err, out)
	}
	for _, crd := range []string{"httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io", "tcproutes.gateway.networking.k8s.io", "xbackendtrafficpolicies.gateway.networking.x-k8s.io"} {
		if !strings.Contains(string(out), crd) {
			t.Errorf("CRD %s not installed:\n%s", crd, out)
		}
	}
	// The kubernetes Service advertises the address node netns forward to the apiserver.
	ep, err := l.Client.DiscoveryV1().EndpointSlices("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ep.Endpoints) != 1 || ep.Endpoints[0].Addresses[0] != "172.30.255.1" {
		t.Errorf("kubernetes endpoints = %+v", ep.Endpoints)
	}
}

func testNodesReady(t *testing.T, ctx context.Context, l *labtest.Lab, _ string) {
	nodes, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if msg := lab.NodesReady(nodes.Items, 2); msg != "" || len(nodes.Items) != 2 {
		t.Fatalf("%d nodes: %s", len(nodes.Items), msg)
	}
	for _, n := range nodes.Items {
		if n.Spec.PodCIDR == "" || len(n.Spec.Taints) > 0 {
			t.Errorf("node %s: podCIDR %q, taints %v", n.Name, n.Spec.PodCIDR, n.Spec.Taints)
		}
		lease, err := l.Client.CoordinationV1().Leases("kube-node-lease").Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Errorf("lease of %s: %v", n.Name, err)
			continue
		}
		if lease.Spec.RenewTime == nil || time.Since(lease.Spec.RenewTime.Time) > 30*time.Second {
			t.Errorf("lease of %s not renewed recently: %v", n.Name, lease.Spec.RenewTime)
		}
	}
}

func echoDeployment(ns string) *appsv1.Deployment {
	labels := map[string]string{"app": "echo"}
	env := []corev1.EnvVar{
		{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
		{Name: "NODE_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}}},
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](5),
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{{
						Name:  "echo",
						Image: echoImage,
						Env:   env,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "grpc", ContainerPort: 9090}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

func testEchoDeployment(t *testing.T, ctx context.Context, l *labtest.Lab, ns string) {
	if _, err := l.Client.AppsV1().Deployments(ns).Create(ctx, echoDeployment(ns), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "echo", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "echo"},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "grpc", Port: 9090, TargetPort: intstr.FromString("grpc"), AppProtocol: ptr.To("kubernetes.io/h2c")},
			},
		},
	}
	if _, err := l.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods, err := l.WaitPodsReady(ctx, ns, "app=echo", 3, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.WaitDeploymentAvailable(ctx, ns, "echo", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	nodes := map[string]int{}
	want := map[string]bool{}
	for _, p := range pods {
		nodes[p.Spec.NodeName]++
		want[p.Status.PodIP] = true
	}
	if len(nodes) != 2 {
		t.Errorf("pods not spread over both nodes: %v", nodes)
	}
	err = labtest.Poll(ctx, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		slices, err := l.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=echo"})
		if err != nil {
			return false, err.Error(), nil
		}
		got := map[string]bool{}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					for _, a := range e.Addresses {
						got[a] = true
					}
				}
			}
		}
		return mapsEqual(got, want), fmt.Sprintf("ready endpoints %v, pod IPs %v", got, want), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mapsEqual(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// toolbox starts an idle toolbox pod on node and waits until it is Ready.
func toolbox(t *testing.T, ctx context.Context, l *labtest.Lab, ns, name, node string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers:                    []corev1.Container{{Name: "toolbox", Image: toolboxImage}},
		},
	}
	if _, err := l.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.WaitPodReady(ctx, ns, name, 60*time.Second); err != nil {
		t.Fatal(err)
	}
}

func testExecAcrossNodes(t *testing.T, ctx context.Context, l *labtest.Lab, ns string) {
	toolbox(t, ctx, l, ns, "toolbox", lab.NodeName(1))
	pods, err := l.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
	if err != nil {
		t.Fatal(err)
	}
	nodeOf := map[string]string{}
	for _, p := range pods.Items {
		nodeOf[p.Name] = p.Spec.NodeName
	}
	client := func(ctx context.Context, url string, count int) (echo.Result, error) {
		stdout, _, err := l.Exec(ctx, ns, "toolbox", "weft-echo", "client", "--url", url, "--count", fmt.Sprint(count), "--timeout", "2s")
		if err != nil {
			return echo.Result{}, err
		}
		var res echo.Result
		if err := json.Unmarshal([]byte(stdout), &res); err != nil {
			return echo.Result{}, fmt.Errorf("client output %q: %w", stdout, err)
		}
		return res, nil
	}
	fromNode := func(res echo.Result, node string) int {
		n := 0
		for pod, c := range res.Pods {
			if nodeOf[pod] == node {
				n += c
			}
		}
		return n
	}
	// Ready endpoints precede kube-proxy programming them on every node by up to its
	// sync period: wait until node 1 reaches a pod on node 2 through the Service, by
	// its full DNS name, as a user would.
	url := "http://echo." + ns + ".svc.cluster.local/"
	err = labtest.Poll(ctx, 30*time.Second, func(ctx context.Context) (bool, string, error) {
		res, err := client(ctx, url, 10)
		if err != nil {
			return false, err.Error(), nil
		}
		return res.Errors == 0 && fromNode(res, lab.NodeName(2)) > 0, fmt.Sprintf("%+v", res), nil
	})
	if err != nil {
		t.Fatalf("no answer from a pod on %s: %v", lab.NodeName(2), err)
	}
	for _, host := range []string{"echo." + ns + ".svc.cluster.local", "echo." + ns, "echo"} {
		res, err := client(ctx, "http://"+host+"/", 20)
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		if res.Requests != 20 || res.Errors != 0 || res.Status["200"] != 20 {
			t.Fatalf("%s: %+v", host, res)
		}
		for pod := range res.Pods {
			if nodeOf[pod] == "" {
				t.Errorf("%s: answer from unknown pod %s", host, pod)
			}
		}
	}
	// The answer is JSON with the echo-basic fields; gRPC goes through the Service too.
	stdout, _, err := l.Exec(ctx, ns, "toolbox", "weft-echo", "client", "--grpc", "--url", "echo."+ns+".svc.cluster.local:9090", "--method", "Ping", "--count", "5")
	if err != nil {
		t.Fatal(err)
	}
	var res echo.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Status["OK"] != 5 {
		t.Errorf("grpc: %q %v", stdout, err)
	}
}

func testLogs(t *testing.T, ctx context.Context, l *labtest.Lab, ns string) {
	pods, err := l.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
	if err != nil {
		t.Fatal(err)
	}
	p := pods.Items[0]
	b, err := l.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "echo"}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "weft-echo serving") || !strings.Contains(string(b), p.Name) {
		t.Errorf("logs of %s: %q", p.Name, b)
	}
}

func testDeletePod(t *testing.T, ctx context.Context, l *labtest.Lab, ns string) {
	pods, err := l.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=echo"})
	if err != nil {
		t.Fatal(err)
	}
	victim := pods.Items[0]
	cg := podCgroup(t, victim)
	procs := procsOf(cgroupPIDs(cg))
	if len(procs) == 0 {
		t.Fatalf("no processes in %s", cg)
	}
	netns := "/run/netns/wl-" + victim.Spec.NodeName + "_" + string(victim.UID)
	if _, err := os.Stat(netns); err != nil {
		t.Fatalf("pod netns: %v", err)
	}
	if err := l.Client.CoreV1().Pods(ns).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = labtest.Poll(ctx, 60*time.Second, func(ctx context.Context) (bool, string, error) {
		_, err := l.Client.CoreV1().Pods(ns).Get(ctx, victim.Name, metav1.GetOptions{})
		return err != nil, "pod still exists", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range procs {
		if running(p) {
			t.Errorf("process %d of the deleted pod still runs", p.pid)
		}
	}
	for _, path := range []string{netns, cg} {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists (%v)", path, err)
		}
	}
	after, err := l.WaitPodsReady(ctx, ns, "app=echo", 3, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range after {
		if p.Name == victim.Name {
			t.Errorf("deleted pod %s is back", p.Name)
		}
	}
}

func testRestart(t *testing.T, ctx context.Context, l *labtest.Lab, ns string) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crasher", Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{
				Name: "crash", Image: toolboxImage,
				Command: []string{"sh", "-c", "sleep 0.5; exit 3"},
			}},
		},
	}
	if _, err := l.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := labtest.Poll(ctx, 60*time.Second, func(ctx context.Context) (bool, string, error) {
		p, err := l.Client.CoreV1().Pods(ns).Get(ctx, "crasher", metav1.GetOptions{})
		if err != nil || len(p.Status.ContainerStatuses) == 0 {
			return false, fmt.Sprint(err), nil
		}
		cs := p.Status.ContainerStatuses[0]
		term := cs.LastTerminationState.Terminated
		ok := cs.RestartCount >= 2 && term != nil && term.ExitCode == 3
		return ok, fmt.Sprintf("restartCount %d, last state %+v", cs.RestartCount, cs.LastTerminationState), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testCrashRecovery SIGKILLs the supervisor (as a crash would) and checks that the next
// up removes everything the crashed lab left and comes up again.
func testCrashRecovery(t *testing.T, ctx context.Context, l *labtest.Lab) {
	before := snapshotLab(t, l)
	st, err := lab.ReadState(l.Paths)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := labtest.Poll(ctx, 10*time.Second, func(context.Context) (bool, string, error) {
		return !st.Alive(), "supervisor still alive", nil
	}); err != nil {
		t.Fatal(err)
	}
	started, err := lab.Up(ctx, lab.UpConfig{
		Paths:      l.Paths,
		Nodes:      l.Nodes,
		Supervisor: []string{filepath.Join(l.Paths.BinDir, "weft-lab"), "serve", "--root", l.Paths.Root},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !started {
		t.Fatal("up reused the crashed lab")
	}
	if err := l.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, p := range before.procs {
		if running(p) {
			t.Errorf("process %d of the crashed lab still runs", p.pid)
		}
	}
	nodes, err := l.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if msg := lab.NodesReady(nodes.Items, l.Nodes); msg != "" {
		t.Error(msg)
	}
}

// labSnapshot is what a running lab owns on the host, taken before down.
type labSnapshot struct {
	procs []proc
}

func snapshotLab(t *testing.T, l *labtest.Lab) labSnapshot {
	t.Helper()
	var pids []int
	if st, err := lab.ReadState(l.Paths); err == nil {
		pids = append(pids, st.PID)
	}
	var recs []struct{ PID int }
	if b, err := os.ReadFile(filepath.Join(l.Paths.CPDir, "pids.json")); err == nil {
		_ = json.Unmarshal(b, &recs)
	}
	for _, r := range recs {
		pids = append(pids, r.PID)
	}
	root, err := lab.Cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	pids = append(pids, cgroupPIDs(filepath.Join(root, "weft-lab"))...)
	s := labSnapshot{procs: procsOf(pids)}
	// supervisor, etcd, apiserver, controller manager, scheduler, and pods' processes.
	if len(s.procs) < 6 {
		t.Fatalf("snapshot found only %d lab processes: %v", len(s.procs), s.procs)
	}
	return s
}

func checkNothingLeft(t *testing.T, p lab.Paths, before labSnapshot) {
	t.Helper()
	for _, p := range before.procs {
		if running(p) {
			t.Errorf("process %d still runs after down", p.pid)
		}
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "wl-lab-node-") {
			t.Errorf("netns %s left behind", e.Name())
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, "/run/netns/wl-lab-node-") || strings.Contains(line, p.Dir) {
			t.Errorf("mount left behind: %s", line)
		}
	}
	root, err := lab.Cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(filepath.Join(root, "weft-lab")); err == nil {
		for _, e := range ents {
			if e.IsDir() && strings.HasPrefix(e.Name(), "lab-node-") {
				t.Errorf("cgroup %s left behind", filepath.Join(root, "weft-lab", e.Name()))
			}
		}
	}
	out, err := exec.Command("ip", "-o", "link", "show").Output()
	if err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "wl-") || strings.Contains(line, "lab-node") {
				t.Errorf("host link left behind: %s", line)
			}
		}
	}
	for _, f := range []string{p.State, p.Kubeconfig} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind", f)
		}
	}
}

func podCgroup(t *testing.T, p corev1.Pod) string {
	t.Helper()
	root, err := lab.Cgroup2Root()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "weft-lab", p.Spec.NodeName, "kubepods", "pod"+string(p.UID))
}

// cgroupPIDs lists the processes in dir and its descendants.
func cgroupPIDs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(b)) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	slices.Sort(pids)
	return slices.Compact(pids)
}

// proc identifies a process across pid reuse: pid and start time (clock ticks).
type proc struct {
	pid   int
	start string
}

func procOf(pid int) (proc, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return proc{}, false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return proc{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is the state (field 3), f[19] the start time (field 22).
	if len(f) < 20 || f[0] == "Z" {
		return proc{}, false
	}
	return proc{pid: pid, start: f[19]}, true
}

// procsOf identifies the running processes among pids.
func procsOf(pids []int) []proc {
	var ps []proc
	for _, pid := range pids {
		if p, ok := procOf(pid); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// running reports whether the very process p still runs (a zombie counts as gone).
func running(p proc) bool {
	now, ok := procOf(p.pid)
	return ok && now.start == p.start
}

// testControlPlaneCrash kills every control-plane process with SIGKILL at once, as the
// crash of a control-plane machine would, and checks that the supervisor restarts each
// one, that the nodes kept their pods running (traffic through a Service works while
// the apiserver is away, no pod is replaced, no container restarted), that the nodes
// heartbeat again, and that `weft-lab status` shows the new processes. The down at the
// end of the suite then stops the restarted processes.
func testControlPlaneCrash(t *testing.T, ctx context.Context, l *labtest.Lab, ns string) {
	type podState struct {
		uid      string
		restarts int32
	}
	podStates := func() map[string]podState {
		pods, err := l.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]podState{}
		for _, p := range pods.Items {
			// The crasher of FailingContainerRestarts restarts all along (and is
			// briefly Ready each time).
			if p.Name == "crasher" || p.DeletionTimestamp != nil || !labtest.PodReady(&p) {
				continue
			}
			var n int32
			for _, c := range p.Status.ContainerStatuses {
				n += c.RestartCount
			}
			m[p.Name] = podState{uid: string(p.UID), restarts: n}
		}
		return m
	}
	before := podStates()
	if _, ok := before["toolbox"]; !ok {
		t.Fatalf("no running toolbox pod in %s: %v", ns, before)
	}
	recs, err := l.ControlPlane()
	if err != nil || len(recs) != 4 {
		t.Fatalf("control-plane record: %+v, %v; want 4 processes", recs, err)
	}
	old := map[string]cluster.PIDRecord{}
	for _, r := range recs {
		old[r.Name] = r
	}
	for _, r := range recs {
		if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %s (pid %d): %v", r.Name, r.PID, err)
		}
	}
	killed := time.Now()
	// The apiserver is away for at least the 1s restart back-off: the pods serve
	// through their Service meanwhile (exec straight through the node's kubelet).
	url := "http://echo." + ns + ".svc.cluster.local/"
	stdout, _, err := l.ExecOnNode(ctx, lab.NodeName(1), ns, "toolbox", "toolbox", "weft-echo", "client", "--url", url, "--count", "20", "--timeout", "2s")
	var res echo.Result
	if err == nil {
		err = json.Unmarshal([]byte(stdout), &res)
	}
	if err != nil || res.Errors != 0 || res.Status["200"] != 20 {
		t.Errorf("traffic with the control plane down: %+v, %v", res, err)
	}

	var now []cluster.PIDRecord
	err = labtest.Poll(ctx, 3*time.Minute, func(ctx context.Context) (bool, string, error) {
		now, err = l.ControlPlane()
		if err != nil {
			return false, err.Error(), nil
		}
		for _, r := range now {
			if r.PID == old[r.Name].PID || !r.Running() || r.Restarts != old[r.Name].Restarts+1 {
				return false, fmt.Sprintf("%+v", now), nil
			}
		}
		if body, err := l.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			return false, fmt.Sprintf("/readyz: %v %s", err, body), nil
		}
		return true, "", nil
	})
	if err != nil {
		t.Fatalf("control plane not back after kill -9: %v\n%s", err, tailFile(l.Paths.Log, 20))
	}
	ready := time.Now()
	t.Logf("control plane back (all four restarted, /readyz ok) %s after kill -9", ready.Sub(killed).Round(10*time.Millisecond))

	for i := 1; i <= l.Nodes; i++ {
		name := lab.NodeName(i)
		err := labtest.Poll(ctx, time.Minute, func(ctx context.Context) (bool, string, error) {
			lease, err := l.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error(), nil
			}
			return lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(ready), fmt.Sprintf("renewTime %v", lease.Spec.RenewTime), nil
		})
		if err != nil {
			t.Errorf("%s does not heartbeat after the restart: %v", name, err)
		}
	}
	if after := podStates(); !maps.Equal(before, after) {
		t.Errorf("pods changed across the control-plane crash:\nbefore %v\nafter  %v", before, after)
	}
	// kubectl exec works through the new apiserver.
	if _, _, err := l.Exec(ctx, ns, "toolbox", "weft-echo", "client", "--url", url, "--count", "5"); err != nil {
		t.Errorf("exec through the restarted apiserver: %v", err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(l.Paths.BinDir, "weft-lab"), "status", "--root", l.Paths.Root).CombinedOutput()
	for _, r := range now {
		if want := fmt.Sprintf("%s: pid %d, running, %d restarts", r.Name, r.PID, r.Restarts); err != nil || !strings.Contains(string(out), want) {
			t.Errorf("weft-lab status (%v) lacks %q:\n%s", err, want, out)
		}
	}
}

// tailFile returns the last n lines of a file.
func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
