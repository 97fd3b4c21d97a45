// Package conformance runs the upstream Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance v1.7.0: tests for Gateways and tests/mesh)
// unmodified against Weft installed on the lab from manifests/, in one suite run with
// the profiles GATEWAY-HTTP, GATEWAY-TLS, GATEWAY-GRPC, GATEWAY-TCP, MESH-HTTP and
// MESH-GRPC, and writes the upstream ConformanceReport.
//
// It is a nested module so that the suite's dependencies stay out of Weft's go.mod.
// The supported features are read from the status of GatewayClass weft and of Weft's
// XMesh (-gateway-class, -mesh-name); the upstream flags (utils/flags) override any
// option, for example
//
//	go test -run TestPrivilegedConformance -count=1 -v . -args -run-test=MeshPorts
//	go test -run TestPrivilegedConformance -count=1 -v . -args -conformance-profiles=GATEWAY-HTTP
package conformance

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientset "k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	xv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	meshtests "sigs.k8s.io/gateway-api/conformance/tests/mesh"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/flags"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/controller/gatewayclass"
	"github.com/weft-mesh/weft/controller/xmesh"
	weftlab "github.com/weft-mesh/weft/test/lab"
	"github.com/weft-mesh/weft/test/lab/labtest"
)

// MeshName is the XMesh weft-controller creates when the cluster has none of its own.
const MeshName = "weft"

// GatewayClassName is the GatewayClass weft-controller creates (controllerName
// weft.dev/gateway-controller).
const GatewayClassName = "weft"

var lab *labtest.Lab

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(labtest.Main(m, labtest.Options{Nodes: 2, Build: []string{
		"./cmd/weft-lab", "./cmd/weft-images", "./cmd/weftctl",
		"./test/echo/cmd/weft-echo",
	}}, &lab))
}

func TestPrivilegedConformance(t *testing.T) {
	labtest.Require(t, lab)
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))
	root := lab.Paths.Root

	install(t)
	c := newClient(t)
	cs, err := clientset.NewForConfig(lab.Config)
	if err != nil {
		t.Fatal(err)
	}

	opts := suite.ConfigurableOptions{
		GatewayClassName: GatewayClassName,
		MeshName:         MeshName,
		// Every namespace the suite creates is enrolled: the Gateway tests' backends
		// too, so traffic from a gateway to them crosses nodes inside Weft's mTLS.
		NamespaceAnnotations: map[string]string{"weft.dev/mesh": "enabled"},
		ConformanceProfiles: []suite.ConformanceProfileName{
			suite.GatewayHTTPConformanceProfileName, suite.GatewayTLSConformanceProfileName,
			suite.GatewayGRPCConformanceProfileName, suite.GatewayTCPConformanceProfileName,
			suite.MeshHTTPConformanceProfileName, suite.MeshGRPCConformanceProfileName,
		},
		CleanupBaseResources: true,
		CleanupTestResources: true,
		Mode:                 flags.DefaultMode,
		ReportOutputPath:     filepath.Join(root, ".cache", "conformance", "report.yaml"),
		TimeoutConfig:        config.DefaultTimeoutConfig(),
		Implementation: confv1.Implementation{
			Organization: "weft-mesh",
			Project:      "weft",
			URL:          "https://github.com/weft-mesh/weft",
			Version:      version(root),
			Contact:      []string{"https://github.com/weft-mesh/weft/issues"},
		},
	}
	flags.ApplyAll(&opts)
	if opts.MeshName != "" {
		waitMeshAccepted(t, c, opts.MeshName)
	}
	if opts.GatewayClassName != "" {
		waitGatewayClassAccepted(t, c, opts.GatewayClassName)
	}

	moduleDir := conformanceModuleDir(t)
	options := suite.ConformanceOptions{
		ConfigurableOptions: opts,
		Client:              c,
		Clientset:           cs,
		RestConfig:          lab.Config,
		ManifestFS:          []fs.FS{os.DirFS(moduleDir)},
	}
	if err := options.Implementation.Validate(); err != nil {
		t.Fatalf("implementation details: %v", err)
	}
	t.Logf("suite from %s; GatewayClass %q; mesh %q; profiles %v; namespace annotations %v", moduleDir, opts.GatewayClassName, opts.MeshName, opts.ConformanceProfiles, opts.NamespaceAnnotations)

	cSuite, err := suite.NewConformanceTestSuite(options)
	if err != nil {
		t.Fatalf("conformance suite: %v", err)
	}
	if opts.ReportOutputPath != "" {
		t.Cleanup(func() {
			report, err := cSuite.Report()
			if err != nil {
				t.Errorf("conformance report: %v", err)
				return
			}
			if err := writeReport(opts.ReportOutputPath, report); err != nil {
				t.Errorf("write report: %v", err)
				return
			}
			t.Logf("conformance report written to %s", opts.ReportOutputPath)
		})
	}
	all := append(slices.Clone(tests.ConformanceTests), meshtests.MeshConformanceTests...)
	cSuite.Setup(t, all)
	if err := cSuite.Run(t, all); err != nil {
		t.Fatal(err)
	}
}

// newClient is a controller-runtime client of the lab that knows the Gateway API types.
func newClient(t *testing.T) client.Client {
	t.Helper()
	c, err := client.New(lab.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, add := range []func(*runtime.Scheme) error{xv1a1.Install, gwv1.Install, apiextensionsv1.AddToScheme} {
		if err := add(c.Scheme()); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

var installed bool

// install applies manifests/ with kustomize as a user does (the images built from the
// code under test, pushed to the lab's registry and set with a kustomize images:
// entry) and waits for the rollouts (once per run). The e2e suite installs with Helm.
func install(t *testing.T) {
	t.Helper()
	if installed {
		return
	}
	installed = true
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	var out strings.Builder
	if err := lab.InstallWeft(ctx, weftlab.Kustomize, "dev", &out); err != nil {
		t.Fatalf("install weft: %v", err)
	}
	t.Logf("weft installed from manifests/ (kustomize, lab registry images) in %s", time.Since(start).Round(time.Millisecond))
}

func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := kubectlErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectlErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	bin := filepath.Join(lab.Paths.K8sBinDir, "kubectl")
	out, err := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", lab.Kubeconfig()}, args...)...).CombinedOutput()
	return string(out), err
}

// waitMeshAccepted waits until the controller has accepted the XMesh and published
// the features of the build under test, which the suite reads once at start (right
// after an install the status may still be the previous build's).
func waitMeshAccepted(t *testing.T, c client.Client, name string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var m xv1a1.XMesh
		err := c.Get(context.Background(), types.NamespacedName{Name: name}, &m)
		if err == nil && meta.IsStatusConditionTrue(m.Status.Conditions, string(xv1a1.MeshConditionAccepted)) && sameFeatures(m.Status.SupportedFeatures, xmesh.SupportedFeatures) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("XMesh %s not accepted with supported features after 2m (err %v, status %+v)", name, err, m.Status)
		}
		time.Sleep(time.Second)
	}
}

// waitGatewayClassAccepted waits until the controller has accepted the GatewayClass
// and published the features of the build under test, which the suite reads once at
// start.
func waitGatewayClassAccepted(t *testing.T, c client.Client, name string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var gc gwv1.GatewayClass
		err := c.Get(context.Background(), types.NamespacedName{Name: name}, &gc)
		if err == nil && meta.IsStatusConditionTrue(gc.Status.Conditions, string(gwv1.GatewayClassConditionStatusAccepted)) && sameFeatures(gc.Status.SupportedFeatures, gatewayclass.SupportedFeatures) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GatewayClass %s not accepted with supported features after 2m (err %v, status %+v)", name, err, gc.Status)
		}
		time.Sleep(time.Second)
	}
}

// sameFeatures reports whether a status lists exactly the features want.
func sameFeatures(got []gwv1.SupportedFeature, want []features.FeatureName) bool {
	have := map[string]bool{}
	for _, f := range got {
		have[string(f.Name)] = true
	}
	for _, f := range want {
		if !have[string(f)] {
			return false
		}
	}
	return len(have) == len(want)
}

// conformanceModuleDir is the directory of the sigs.k8s.io/gateway-api/conformance
// module this module requires: the suite reads its manifests (base/, mesh/,
// tests/) from there.
func conformanceModuleDir(t *testing.T) string {
	t.Helper()
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api/conformance")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=auto", "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		t.Fatalf("locate the conformance module: %v", err)
	}
	dir := strings.TrimSpace(string(out))
	if _, err := os.Stat(filepath.Join(dir, "mesh", "manifests.yaml")); err != nil {
		t.Fatalf("conformance module at %q has no mesh manifests: %v", dir, err)
	}
	return dir
}

// version names the Weft build under test: the commit, "-dirty" with local changes.
func version(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty", "--abbrev=12").Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

func writeReport(path string, report *confv1.ConformanceReport) error {
	b, err := yaml.Marshal(report)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
