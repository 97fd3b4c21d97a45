// Package install tests Weft's two installs: the Helm chart (manifests/chart)
// and kubectl apply -k manifests/, whose objects manifests/gen.sh renders from
// the chart. Both run the pinned helm (make tools) and the lab's kubectl
// (make lab-binaries); no cluster is needed.
package install

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/diff"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/test/kubetest"
)

const (
	controllerKey = "Deployment weft-system/weft-controller"
	agentKey      = "DaemonSet weft-system/weft-agent"
)

// install holds the paths the tests need.
type install struct {
	root, chart, helm, kubectl string
	kubeconfig                 string // of the apiserver the tools talk to; none when empty
}

// setup finds the repository and the tools. A missing tool fails the test
// (CI always has them; a skip would hide a broken install step) except with
// -short.
func setup(t *testing.T) install {
	t.Helper()
	root, err := kubetest.Root()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := kubetest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	in := install{
		root:    root,
		chart:   filepath.Join(root, "manifests", "chart"),
		helm:    filepath.Join(root, ".cache", "tools", "helm"),
		kubectl: filepath.Join(bin, "kubectl"),
	}
	for _, p := range []string{in.helm, in.kubectl} {
		if _, err := os.Stat(p); err != nil {
			if testing.Short() {
				t.Skipf("%v (-short)", err)
			}
			t.Fatalf("%v: run `make tools lab-binaries`", err)
		}
	}
	return in
}

// run runs a tool and returns its standard output. Helm gets its own empty
// homes and no kubeconfig: rendering must not depend on the machine.
func (in install) run(t *testing.T, tool string, args ...string) ([]byte, error) {
	t.Helper()
	home := t.TempDir()
	kubeconfig := cmp.Or(in.kubeconfig, filepath.Join(home, "kubeconfig"))
	cmd := exec.Command(tool, args...)
	cmd.Dir = in.root
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+kubeconfig)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %w\n%s", filepath.Base(tool), strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}

// render is `helm template` of the chart in weft-system, CRDs included.
func (in install) render(t *testing.T, extra ...string) map[string]map[string]any {
	t.Helper()
	args := append([]string{"template", "weft", in.chart, "-n", mesh.SystemNamespace, "--include-crds"}, extra...)
	out, err := in.run(t, in.helm, args...)
	if err != nil {
		t.Fatal(err)
	}
	return objects(t, out)
}

// objects parses a multi-document YAML stream into objects keyed by
// "Kind namespace/name" (documents of comments only are skipped).
func objects(t *testing.T, stream []byte) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(stream)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatalf("%v in\n%s", err, doc)
		}
		if len(obj) == 0 {
			continue
		}
		k := key(obj)
		if _, dup := objs[k]; dup {
			t.Fatalf("%s twice", k)
		}
		objs[k] = obj
	}
}

func key(obj map[string]any) string {
	meta, _ := obj["metadata"].(map[string]any)
	ns, _ := meta["namespace"].(string)
	return fmt.Sprintf("%s %s/%s", obj["kind"], ns, meta["name"])
}

// TestChartMatchesKustomize: helm install and kubectl apply -k create the
// same objects, field for field, but for the Namespace, which only the
// kustomize install carries (Helm's --create-namespace creates it). A
// difference means manifests/ was not regenerated (make generate) or
// kustomization.yaml misses a file of the chart.
func TestChartMatchesKustomize(t *testing.T) {
	in := setup(t)
	helm := in.render(t)
	out, err := in.run(t, in.kubectl, "kustomize", filepath.Join(in.root, "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	kust := objects(t, out)

	ns := "Namespace /" + mesh.SystemNamespace
	if _, ok := kust[ns]; !ok {
		t.Errorf("kubectl kustomize manifests/ has no %s", ns)
	}
	if _, ok := helm[ns]; ok {
		t.Errorf("the chart renders %s: it conflicts with helm install --create-namespace", ns)
	}
	delete(kust, ns)

	crds := 0
	for k, h := range helm {
		if h["kind"] == "CustomResourceDefinition" {
			crds++
		}
		k8, ok := kust[k]
		if !ok {
			t.Errorf("%s: in the chart, not in kubectl kustomize manifests/", k)
			continue
		}
		if !reflect.DeepEqual(h, k8) {
			t.Errorf("%s differs (- chart, + kustomize):\n%s", k, diff.Diff(h, k8))
		}
	}
	for k := range kust {
		if _, ok := helm[k]; !ok {
			t.Errorf("%s: in kubectl kustomize manifests/, not in the chart", k)
		}
	}
	if crds == 0 {
		t.Error("the chart has no CRDs (manifests/gen.sh copies them into manifests/chart/crds)")
	}
}

// TestChartDefaults pins what the agent needs on every node, as the
// manifests had it before the chart: a surging rollout (the handoff), the
// host's network and PIDs, the capabilities instead of privileged, the host
// volumes; and the default images.
func TestChartDefaults(t *testing.T) {
	in := setup(t)
	objs := in.render(t)
	ds := objs[agentKey]
	if ds == nil {
		t.Fatalf("no %s", agentKey)
	}
	spec := field(t, ds, "spec", "template", "spec").(map[string]any)
	agent := container(t, ds)
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"updateStrategy", field(t, ds, "spec", "updateStrategy"), value(t, "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}")},
		{"hostNetwork", spec["hostNetwork"], true},
		{"hostPID", spec["hostPID"], true},
		{"dnsPolicy", spec["dnsPolicy"], "ClusterFirstWithHostNet"},
		{"priorityClassName", spec["priorityClassName"], "system-node-critical"},
		{"terminationGracePeriodSeconds", spec["terminationGracePeriodSeconds"], value(t, "60")},
		{"tolerations", spec["tolerations"], value(t, "[{operator: Exists}]")},
		{"securityContext", agent["securityContext"], value(t, `
privileged: false
capabilities:
  drop: [ALL]
  add: [BPF, NET_ADMIN, SYS_ADMIN, SYS_PTRACE, PERFMON, SYS_RESOURCE]`)},
		{"volumeMounts", agent["volumeMounts"], value(t, `
- {name: bpffs, mountPath: /sys/fs/bpf, mountPropagation: HostToContainer}
- {name: cgroup, mountPath: /sys/fs/cgroup, readOnly: false}
- {name: state, mountPath: /var/lib/weft}
- {name: weft-token, mountPath: /var/run/secrets/weft, readOnly: true}
- {name: cni-conf, mountPath: /host/cni/net.d}
- {name: cni-bin, mountPath: /host/cni/bin}
- {name: netns, mountPath: /run/netns, mountPropagation: HostToContainer}
- {name: netns, mountPath: /var/run/netns, mountPropagation: HostToContainer}`)},
		{"volumes", spec["volumes"], value(t, `
- name: bpffs
  hostPath: {path: /sys/fs/bpf, type: DirectoryOrCreate}
- name: cgroup
  hostPath: {path: /sys/fs/cgroup, type: Directory}
- name: state
  hostPath: {path: /var/lib/weft, type: DirectoryOrCreate}
- name: cni-conf
  hostPath: {path: /etc/cni/net.d, type: DirectoryOrCreate}
- name: cni-bin
  hostPath: {path: /opt/cni/bin, type: DirectoryOrCreate}
- name: netns
  hostPath: {path: /run/netns, type: DirectoryOrCreate}
- name: weft-token
  projected:
    sources:
    - serviceAccountToken: {audience: weft, expirationSeconds: 3600, path: token}
    - configMap:
        name: weft-ca-bundle
        items: [{key: ca.crt, path: ca.crt}]`)},
		{"agent image", agent["image"], "ghcr.io/weft-mesh/weft-agent:dev"},
		{"controller image", container(t, objs[controllerKey])["image"], "ghcr.io/weft-mesh/weft-controller:dev"},
		{"controller replicas", field(t, objs[controllerKey], "spec", "replicas"), value(t, "2")},
	} {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
}

// TestChartValues renders testdata/values.yaml, which sets every value, and
// compares each object with the default rendering changed exactly where the
// values must land: nothing else may move.
func TestChartValues(t *testing.T) {
	in := setup(t)
	valuesFile := filepath.Join("testdata", "values.yaml")
	b, err := os.ReadFile(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(valuesFile)
	if err != nil {
		t.Fatal(err)
	}
	got := in.render(t, "-f", abs)
	want := in.render(t)

	for _, c := range []struct{ key, image, values string }{
		{controllerKey, "weft-controller", "controller"},
		{agentKey, "weft-agent", "agent"},
	} {
		obj := want[c.key]
		if obj == nil {
			t.Fatalf("no %s", c.key)
		}
		pod := field(t, obj, "spec", "template").(map[string]any)
		meta := pod["metadata"].(map[string]any)
		port := fmt.Sprint(field(t, v, "metrics", "port"))
		ann := map[string]any{"prometheus.io/scrape": "true", "prometheus.io/port": port, "prometheus.io/path": "/metrics"}
		maps.Copy(ann, field(t, v, "podAnnotations").(map[string]any))
		meta["annotations"] = ann
		labels := meta["labels"].(map[string]any)
		for k, l := range field(t, v, "podLabels").(map[string]any) {
			if _, own := labels[k]; !own {
				labels[k] = l
			}
		}
		spec := pod["spec"].(map[string]any)
		spec["imagePullSecrets"] = field(t, v, "imagePullSecrets")
		ctr := container(t, obj)
		ctr["image"] = fmt.Sprintf("%s/%s:%s", field(t, v, "image", "registry"), c.image, field(t, v, "image", "tag"))
		ctr["imagePullPolicy"] = field(t, v, "image", "pullPolicy")
		args := ctr["args"].([]any)
		for i, a := range args {
			if a == "--metrics-addr=:15020" {
				args[i] = "--metrics-addr=:" + port
			}
		}
		ports, _ := ctr["ports"].([]any) // none on the agent
		for _, p := range ports {
			if p := p.(map[string]any); p["name"] == "metrics" {
				p["containerPort"] = field(t, v, "metrics", "port")
			}
		}
		// The values' flags come before the weft-cni ones (the chart's
		// order).
		extra := []any{"--trust-domain=" + field(t, v, "trustDomain").(string), "--log-level=" + field(t, v, "logLevel").(string)}
		if c.values == "agent" {
			extra = append(extra, fmt.Sprintf("--outbound-loops=%v", field(t, v, "agent", "outboundLoops")))
		}
		at := slices.Index(args, any("--cni"))
		if at < 0 {
			at = len(args)
		}
		ctr["args"] = slices.Insert(slices.Clone(args), at, extra...)
		ctr["resources"] = field(t, v, c.values, "resources")
	}
	// The agent pod's init container (mount-bpffs) and socket holder run the
	// agent's image; the holder takes the agent's metrics address and log level.
	agentPod := field(t, want[agentKey], "spec", "template", "spec").(map[string]any)
	others := append(slices.Clone(agentPod["initContainers"].([]any)), agentPod["containers"].([]any)[1:]...)
	for _, o := range others {
		ctr := o.(map[string]any)
		ctr["image"] = fmt.Sprintf("%s/weft-agent:%s", field(t, v, "image", "registry"), field(t, v, "image", "tag"))
		ctr["imagePullPolicy"] = field(t, v, "image", "pullPolicy")
		if ctr["name"] != "holder" {
			continue
		}
		args := ctr["args"].([]any)
		for i, a := range args {
			if a == "--metrics-addr=:15020" {
				args[i] = "--metrics-addr=:" + fmt.Sprint(field(t, v, "metrics", "port"))
			}
		}
		ctr["args"] = append(args, "--log-level="+field(t, v, "logLevel").(string))
	}
	field(t, want[controllerKey], "spec").(map[string]any)["replicas"] = field(t, v, "controller", "replicas")
	agentSpec := field(t, want[agentKey], "spec", "template", "spec").(map[string]any)
	agentSpec["nodeSelector"] = field(t, v, "agent", "nodeSelector")
	agentSpec["tolerations"] = field(t, v, "agent", "tolerations")

	for _, k := range slices.Sorted(maps.Keys(want)) {
		if !reflect.DeepEqual(got[k], want[k]) {
			t.Errorf("%s with %s (- got, + want):\n%s", k, valuesFile, diff.Diff(got[k], want[k]))
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d objects with %s, %d with the defaults", len(got), valuesFile, len(want))
	}
}

// TestChartMetrics: by default both components serve /metrics on :15020,
// announced by the prometheus.io annotations; the controller declares it as
// its container port "metrics", the agent declares no port (in the host's
// network a port is a hostPort, which would keep the surge pod of a rollout
// pending and break the listener handoff). metrics.enabled=false turns the
// endpoint, the port and the annotations off; the schema refuses a port
// Weft already uses on the node.
func TestChartMetrics(t *testing.T) {
	in := setup(t)
	on := in.render(t)
	ann := value(t, `{prometheus.io/scrape: "true", prometheus.io/port: "15020", prometheus.io/path: /metrics}`)
	for _, k := range []string{controllerKey, agentKey} {
		if got := field(t, on[k], "spec", "template", "metadata", "annotations"); !reflect.DeepEqual(got, ann) {
			t.Errorf("%s annotations: %v, want %v", k, got, ann)
		}
		if args := container(t, on[k])["args"].([]any); !slices.Contains(args, any("--metrics-addr=:15020")) {
			t.Errorf("%s args lack --metrics-addr=:15020: %v", k, args)
		}
	}
	if ports := container(t, on[controllerKey])["ports"].([]any); !slices.ContainsFunc(ports, func(p any) bool {
		return reflect.DeepEqual(p, value(t, "{name: metrics, containerPort: 15020}"))
	}) {
		t.Errorf("controller ports %v lack metrics 15020", ports)
	}
	if ports, ok := container(t, on[agentKey])["ports"]; ok {
		t.Errorf("the agent declares ports %v: a hostNetwork port is a hostPort, which blocks the rollout's surge pod", ports)
	}

	off := in.render(t, "--set", "metrics.enabled=false")
	for _, k := range []string{controllerKey, agentKey} {
		meta := field(t, off[k], "spec", "template", "metadata").(map[string]any)
		if a, ok := meta["annotations"]; ok {
			t.Errorf("%s with metrics off has annotations %v", k, a)
		}
		if args := container(t, off[k])["args"].([]any); !slices.Contains(args, any("--metrics-addr=")) {
			t.Errorf("%s with metrics off: args %v lack an empty --metrics-addr", k, args)
		}
	}
	for _, p := range container(t, off[controllerKey])["ports"].([]any) {
		if p.(map[string]any)["name"] == "metrics" {
			t.Errorf("controller with metrics off declares %v", p)
		}
	}
	// a user's annotation wins over the chart's
	mine := in.render(t, "--set-string", `podAnnotations.prometheus\.io/scrape=false`)
	if got := field(t, mine[agentKey], "spec", "template", "metadata", "annotations").(map[string]any)["prometheus.io/scrape"]; got != "false" {
		t.Errorf("podAnnotations prometheus.io/scrape=false rendered %v", got)
	}
	for _, port := range []string{"15001", "15008", "15012", "15021", "0"} {
		if _, err := in.run(t, in.helm, "template", "weft", in.chart, "-n", mesh.SystemNamespace, "--set", "metrics.port="+port); err == nil {
			t.Errorf("metrics.port=%s accepted", port)
		}
	}
}

// TestChartNamespace: the chart installs into weft-system only (weftctl and
// the components' defaults look there) and says how when asked for another.
func TestChartNamespace(t *testing.T) {
	in := setup(t)
	_, err := in.run(t, in.helm, "template", "weft", in.chart, "-n", "mesh")
	if err == nil || !strings.Contains(err.Error(), "-n weft-system --create-namespace") {
		t.Errorf("helm template -n mesh: %v, want an error naming -n weft-system --create-namespace", err)
	}
}

// TestChartLint: helm lint --strict passes (make lint runs it too).
func TestChartLint(t *testing.T) {
	in := setup(t)
	if _, err := in.run(t, in.helm, "lint", "--strict", "-n", mesh.SystemNamespace, in.chart); err != nil {
		t.Error(err)
	}
}

// TestHelmInstall installs the chart as the README says into a real
// apiserver (no nodes: the objects, not the pods), upgrades it with every
// value set, and uninstalls it: the apiserver accepts every object, Helm
// installs the CRDs of crds/ and, by its convention, leaves them behind.
func TestHelmInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an apiserver (-short)")
	}
	in := setup(t)
	bin, err := kubetest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	// envtest directly, not kubetest.Start: that one installs the Gateway API
	// CRDs itself, and here Helm must.
	env := &envtest.Environment{BinaryAssetsDirectory: bin}
	if _, err := env.Start(); err != nil {
		t.Fatalf("start test apiserver: %v (run `make tools lab-binaries`)", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stop test apiserver: %v", err)
		}
	})
	in.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(in.kubeconfig, env.KubeConfig, 0o600); err != nil {
		t.Fatal(err)
	}
	ns := mesh.SystemNamespace
	must := func(tool string, args ...string) string {
		t.Helper()
		out, err := in.run(t, tool, args...)
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}

	must(in.helm, "install", "weft", in.chart, "-n", ns, "--create-namespace")
	var names []string
	for _, obj := range in.render(t) {
		names = append(names, strings.ToLower(obj["kind"].(string))+"/"+field(t, obj, "metadata", "name").(string))
	}
	must(in.kubectl, append([]string{"get", "-n", ns, "-o", "name"}, names...)...)

	values, err := filepath.Abs(filepath.Join("testdata", "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	must(in.helm, "upgrade", "weft", in.chart, "-n", ns, "-f", values)
	image := must(in.kubectl, "get", "-n", ns, "daemonset/weft-agent", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
	if want := "registry.example.com/mirror/weft/weft-agent:v1.2.3"; image != want {
		t.Errorf("agent image after helm upgrade: %q, want %q", image, want)
	}

	must(in.helm, "uninstall", "weft", "-n", ns)
	if _, err := in.run(t, in.kubectl, "get", "-n", ns, "daemonset/weft-agent"); err == nil {
		t.Error("daemonset/weft-agent is still there after helm uninstall")
	}
	must(in.kubectl, "get", "crd/xmeshes.gateway.networking.x-k8s.io")
}

// field returns the value at path in obj, failing the test when it is absent.
func field(t *testing.T, obj map[string]any, path ...string) any {
	t.Helper()
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("%s: %s is not an object", key(obj), strings.Join(path, "."))
		}
		if cur, ok = m[p]; !ok {
			t.Fatalf("%s: no %s", key(obj), strings.Join(path, "."))
		}
	}
	return cur
}

// container returns the main container of a workload's pod template: the
// first (the agent's pod also runs its socket holder, second).
func container(t *testing.T, obj map[string]any) map[string]any {
	t.Helper()
	cs, _ := field(t, obj, "spec", "template", "spec", "containers").([]any)
	if len(cs) == 0 {
		t.Fatalf("%s: no containers", key(obj))
	}
	return cs[0].(map[string]any)
}

// value parses a YAML snippet as the objects are parsed, so numbers compare.
func value(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}
