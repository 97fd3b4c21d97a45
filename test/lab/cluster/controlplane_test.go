package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-mesh/weft/test/lab"
	"github.com/weft-mesh/weft/test/lab/cluster"
	"github.com/weft-mesh/weft/test/lab/labtest"
	"github.com/weft-mesh/weft/test/syncbuf"
)

// startControlPlane starts a control plane of its own (one node's credentials) for a
// test, holding the machine-wide lab suite lock until the test ends; it skips when the
// binaries are not built or a lab runs. The control plane is stopped when the test ends.
func startControlPlane(t *testing.T, ctx context.Context, log *slog.Logger) (*cluster.ControlPlane, cluster.Config, lab.Paths) {
	t.Helper()
	wd, _ := os.Getwd()
	root, err := lab.FindRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	p := lab.PathsFor(root)
	if _, err := os.Stat(filepath.Join(p.K8sBinDir, "kube-apiserver")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("control-plane binaries not built: run `make lab-binaries`")
		}
		t.Skip("control-plane binaries not built: run `make lab-binaries`")
	}
	// The lab's ports are fixed: wait for any other lab user on this machine.
	unlock, err := lab.LockSuite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unlock)
	if st, err := lab.ReadState(p); err == nil && st.Alive() {
		t.Skip("a lab is running on this machine (`weft-lab up`); its ports are taken")
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := cluster.Config{
		BinDir:          p.K8sBinDir,
		StateDir:        filepath.Join(dir, "cp"),
		AdminKubeconfig: filepath.Join(dir, "kubeconfig"),
		CRDDir:          filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "experimental"),
		Nodes:           []cluster.NodeSpec{{Name: "lab-node-1", IP: netip.MustParseAddr("172.30.0.11")}},
		Logger:          log,
	}
	cp, err := cluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop) // after unlock's registration, so it runs first
	return cp, cfg, p
}

// TestControlPlaneStartsAndStops runs the real control plane (no nodes): version,
// CRDs, RBAC with the Node authorizer, CoreDNS objects, and a clean stop.
func TestControlPlaneStartsAndStops(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cp, cfg, p := startControlPlane(t, ctx, nil)
	if err := cp.InstallCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := cp.Client.Discovery().ServerVersion()
	if err != nil || v.GitVersion != "v1.37.0" {
		t.Errorf("version %v, %v; want v1.37.0", v, err)
	}
	if _, err := cp.Client.Discovery().ServerResourcesForGroupVersion("gateway.networking.x-k8s.io/v1alpha1"); err != nil {
		t.Errorf("experimental Gateway API group: %v", err)
	}
	if err := cp.InstallDNS(ctx); err != nil {
		t.Fatal(err)
	}
	svc, err := cp.Client.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil || svc.Spec.ClusterIP != "10.96.0.10" {
		t.Errorf("kube-dns service: %v %v", svc, err)
	}
	// InstallDNS is idempotent.
	if err := cp.InstallDNS(ctx); err != nil {
		t.Errorf("second InstallDNS: %v", err)
	}

	// The node identity is a kubelet's: the Node authorizer lets it read its own Node
	// but not other secrets; kube-proxy's rights come from the node-proxier binding.
	creds := cp.Nodes["lab-node-1"]
	rc, err := clientcmd.BuildConfigFromFlags("", creds.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	nodeClient := kubernetes.NewForConfigOrDie(rc)
	_, err = nodeClient.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("node listing secrets: %v, want Forbidden", err)
	}
	if _, err := nodeClient.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{}); err != nil {
		t.Errorf("node (kube-proxy) listing endpointslices: %v", err)
	}
	for _, f := range []string{creds.ServingCert, creds.ServingKey, creds.ClientCA} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	ssar, err := nodeClient.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{Spec: authv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authv1.ResourceAttributes{Verb: "update", Resource: "nodes", Subresource: "status", Name: "lab-node-1"},
	}}, metav1.CreateOptions{})
	if err != nil || !ssar.Status.Allowed {
		t.Errorf("node may not update its own status: %+v %v", ssar, err)
	}

	kubectl := filepath.Join(p.K8sBinDir, "kubectl")
	if out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", cfg.AdminKubeconfig, "get", "httproutes", "-A").CombinedOutput(); err != nil {
		t.Errorf("kubectl get httproutes: %v\n%s", err, out)
	}

	pids := cp.PIDs()
	if len(pids) != 4 {
		t.Errorf("pids = %v, want etcd, apiserver, controller manager, scheduler", pids)
	}
	cp.Stop()
	if err := cp.Err(); !errors.Is(err, cluster.ErrStopped) {
		t.Errorf("Err() after Stop = %v, want ErrStopped", err)
	}
	for name, pid := range pids {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			t.Errorf("%s (pid %d) still runs after Stop", name, pid)
		}
	}
	// KillStale after a clean stop has nothing to do.
	if err := cluster.KillStale(cfg.StateDir); err != nil {
		t.Error(err)
	}
}

// TestControlPlaneSurvivesCrash kills etcd, then kube-apiserver with SIGKILL (a crash)
// and checks that each is restarted, the apiserver serves /readyz again with the data
// written before, and the restarts are logged, counted and recorded in pids.json.
func TestControlPlaneSurvivesCrash(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var logs syncbuf.Buffer
	cp, cfg, _ := startControlPlane(t, ctx, slog.New(slog.NewTextHandler(&logs, nil)))
	cms := cp.Client.CoreV1().ConfigMaps("default")
	if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "before-crash"}, Data: map[string]string{"k": "v"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		old := cp.PIDs()[name]
		if old == 0 {
			t.Fatalf("no pid for %s: %v", name, cp.PIDs())
		}
		killed := time.Now()
		if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var now int
		if err := labtest.Poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, string, error) {
			now = cp.PIDs()[name]
			if now == 0 || now == old {
				return false, fmt.Sprintf("%s not restarted: %+v", name, cp.Processes()), nil
			}
			body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			if err != nil {
				return false, fmt.Sprintf("/readyz: %v %s", err, body), nil
			}
			return true, "", nil
		}); err != nil {
			t.Fatalf("after kill -9 of %s (pid %d): %v\nlog:\n%s", name, old, err, logs.String())
		}
		t.Logf("%s: kill -9 of pid %d -> pid %d, /readyz ok after %s", name, old, now, time.Since(killed).Round(10*time.Millisecond))
		cm, err := cms.Get(ctx, "before-crash", metav1.GetOptions{})
		if err != nil || cm.Data["k"] != "v" {
			t.Errorf("after the %s crash: configmap %v, %v", name, cm, err)
		}
		recs, err := cluster.ReadPIDs(cfg.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range recs {
			if r.Name == name {
				found = true
				if r.PID != now || r.Restarts != 1 || !r.Running() || !strings.Contains(r.LastExit, "killed") {
					t.Errorf("pids.json for %s: %+v, want pid %d running, 1 restart after a kill", name, r, now)
				}
			}
		}
		if !found {
			t.Errorf("pids.json lacks %s: %+v", name, recs)
		}
		if !strings.Contains(logs.String(), "process="+name) || !strings.Contains(logs.String(), "control-plane process restarted") {
			t.Errorf("restart of %s not logged:\n%s", name, logs.String())
		}
	}
	if err := cp.Err(); err != nil {
		t.Errorf("Err() = %v after restarts, want nil", err)
	}
	// Stop ends the restarted processes (and KillStale then has nothing to do).
	pids := cp.PIDs()
	cp.Stop()
	for name, pid := range pids {
		if _, ok := cluster.ProcessStart(pid); ok {
			t.Errorf("%s (pid %d) still runs after Stop", name, pid)
		}
	}
}
