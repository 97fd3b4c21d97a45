// Package kubetest starts a real etcd and kube-apiserver (the lab's build in
// .cache/k8s/bin) for integration tests, through controller-runtime's envtest.
// The Gateway API CRDs (experimental channel) of the pinned module are
// installed, and Weft's own CRDs (manifests/chart/crds/policy.weft.dev_*).
// Use it from tests only.
package kubetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// ServiceCIDR is the test apiserver's Service ClusterIP range.
const ServiceCIDR = "10.0.0.0/16"

// Cluster is a running test apiserver.
type Cluster struct {
	Config *rest.Config
	Client kubernetes.Interface
	env    *envtest.Environment
}

// Root returns the repository root (the directory of the weft go.mod).
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/weft-mesh/weft\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no weft go.mod above the working directory")
		}
		dir = parent
	}
}

// BinDir is where `make lab-binaries` puts etcd, kube-apiserver and kubectl.
func BinDir() (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache", "k8s", "bin"), nil
}

// GatewayAPICRDDir returns the experimental-channel CRD directory of the
// pinned sigs.k8s.io/gateway-api module.
func GatewayAPICRDDir() (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		return "", fmt.Errorf("locate sigs.k8s.io/gateway-api module: %w", err)
	}
	return filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "experimental"), nil
}

// Start runs an apiserver for the test and stops it in t.Cleanup. When the
// binaries are not built it skips with the reason, except under CI (CI set),
// where a missing build is a failure.
func Start(t testing.TB) *Cluster { return StartWith(t, Options{}) }

// Options tunes StartWith.
type Options struct {
	// EtcdDataDir keeps etcd's data there across runs (the caller owns
	// it); a temporary directory when empty.
	EtcdDataDir string
	// NoFsync runs etcd without fsync (--unsafe-no-fsync): faster bulk
	// writes, for benchmarks whose data can be rebuilt.
	NoFsync bool
}

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Cluster {
	t.Helper()
	bin, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err != nil {
		msg := fmt.Sprintf("kube-apiserver not built in %s: run `make lab-binaries`", bin)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	crdDir, err := GatewayAPICRDDir()
	if err != nil {
		t.Fatal(err)
	}
	crds, err := crdFiles(crdDir)
	if err != nil {
		t.Fatal(err)
	}
	// Weft's own CRDs, as the chart installs them: every integration test
	// applies them to a real apiserver
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	own, err := filepath.Glob(filepath.Join(root, "manifests", "chart", "crds", "policy.weft.dev_*.yaml"))
	if err != nil || len(own) == 0 {
		t.Fatalf("weft's CRDs in manifests/chart/crds: %v %v", own, err)
	}
	crds = append(crds, own...)
	env := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDInstallOptions:     envtest.CRDInstallOptions{Paths: crds, ErrorIfPathMissing: true},
	}
	// Room for thousands of Services (envtest's default 10.0.0.0/24 holds
	// 254); a superset of it, so addresses tests pick there stay valid.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", ServiceCIDR)
	if o.EtcdDataDir != "" || o.NoFsync {
		if env.ControlPlane.Etcd == nil {
			env.ControlPlane.Etcd = &envtest.Etcd{}
		}
		env.ControlPlane.Etcd.DataDir = o.EtcdDataDir
		if o.NoFsync {
			env.ControlPlane.Etcd.Configure().Set("unsafe-no-fsync", "true")
		}
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start test apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stop test apiserver: %v", err)
		}
	})
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Cluster{Config: cfg, Client: cs, env: env}
}

// crdFiles lists the CRD manifests in dir, skipping files that are not CRDs
// (kustomization.yaml, the ValidatingAdmissionPolicy).
func crdFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read CRD dir: %w", err)
	}
	var files []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".yaml") || !strings.HasPrefix(name, "gateway.networking") || strings.Contains(name, "_vap_") {
			continue
		}
		files = append(files, filepath.Join(dir, name))
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CRDs in %s", dir)
	}
	return files, nil
}
