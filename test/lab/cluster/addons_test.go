package cluster

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCRDFilesSkipsNonCRDs(t *testing.T) {
	got := CRDFiles([]string{
		"kustomization.yaml",
		"gateway.networking.k8s.io_vap_safeupgrades.yaml",
		"gateway.networking.k8s.io_httproutes.yaml",
		"gateway.networking.x-k8s.io_xbackendtrafficpolicies.yaml",
		"gateway.networking.k8s.io_grpcroutes.yaml",
		"README.md",
	})
	want := []string{
		"gateway.networking.k8s.io_grpcroutes.yaml",
		"gateway.networking.k8s.io_httproutes.yaml",
		"gateway.networking.x-k8s.io_xbackendtrafficpolicies.yaml",
	}
	if !slices.Equal(got, want) {
		t.Errorf("CRDFiles = %v, want %v", got, want)
	}
}

func TestLoadCRDsOfThePinnedModule(t *testing.T) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("locate gateway-api: %v", err)
	}
	crds, err := LoadCRDs(filepath.Join(strings.TrimSpace(string(out)), "config", "crd", "experimental"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range crds {
		names = append(names, c.Name)
	}
	for _, want := range []string{"httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io", "tcproutes.gateway.networking.k8s.io", "xbackendtrafficpolicies.gateway.networking.x-k8s.io"} {
		if !slices.Contains(names, want) {
			t.Errorf("CRD %s missing from %v", want, names)
		}
	}
}

func TestLoadCRDsRejectsNonCRDFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "gateway.networking.k8s.io_bogus.yaml"), []byte("kind: ConfigMap\nmetadata:\n  name: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCRDs(dir); err == nil || !strings.Contains(err.Error(), "not a CustomResourceDefinition") {
		t.Errorf("err = %v", err)
	}
	if _, err := LoadCRDs(t.TempDir()); err == nil {
		t.Error("empty dir: no error")
	}
}

func TestCoreDNSObjects(t *testing.T) {
	o := CoreDNS()
	if o.Service.Spec.ClusterIP != "10.96.0.10" || o.Service.Name != "kube-dns" || o.Service.Namespace != "kube-system" {
		t.Errorf("service = %s/%s %s", o.Service.Namespace, o.Service.Name, o.Service.Spec.ClusterIP)
	}
	pod := o.Deployment.Spec.Template
	for k, v := range o.Deployment.Spec.Selector.MatchLabels {
		if pod.Labels[k] != v || o.Service.Spec.Selector[k] != v {
			t.Errorf("selector %s=%s does not match the pod template or the service", k, v)
		}
	}
	c := pod.Spec.Containers[0]
	if c.Image != CoreDNSImage || pod.Spec.ServiceAccountName != o.ServiceAccount.Name {
		t.Errorf("container %s, sa %s", c.Image, pod.Spec.ServiceAccountName)
	}
	if pod.Spec.Volumes[0].ConfigMap.Name != o.ConfigMap.Name || !strings.Contains(o.ConfigMap.Data["Corefile"], "kubernetes cluster.local") {
		t.Errorf("Corefile wiring: %+v", pod.Spec.Volumes[0])
	}
	if c.ReadinessProbe.HTTPGet.Port.IntValue() != 8181 || !strings.Contains(Corefile, "ready :8181") {
		t.Error("readiness probe does not match the ready plugin")
	}
}
