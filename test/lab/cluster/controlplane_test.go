package cluster_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-mesh/weft/test/lab"
	"github.com/weft-mesh/weft/test/lab/cluster"
)

// TestControlPlaneStartsAndStops runs the real control plane (no nodes): version,
// CRDs, RBAC with the Node authorizer, CoreDNS objects, and a clean stop.
func TestControlPlaneStartsAndStops(t *testing.T) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// The lab's ports are fixed: wait for any other lab user on this machine.
	unlock, err := lab.LockSuite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
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
	}
	cp, err := cluster.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			cp.Stop()
		}
	}()
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
	stopped = true
	if err := cp.Err(); err == nil {
		t.Error("Err() is nil after Stop")
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
