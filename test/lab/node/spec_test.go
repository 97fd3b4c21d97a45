package node

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "POD": "echo-0"}
	for in, want := range map[string]string{
		"$(A)":           "1",
		"x-$(POD)-y":     "x-echo-0-y",
		"$$(A)":          "$(A)",
		"$(MISSING)":     "$(MISSING)",
		"$(A":            "$(A",
		"cost $5":        "cost $5",
		"trailing $":     "trailing $",
		"$(A)$(A)$(POD)": "11echo-0",
	} {
		if got := expand(in, env); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerArgv(t *testing.T) {
	images := map[string]Image{
		"echo:dev":  {Entrypoint: []string{"/bin/weft-echo"}, Cmd: []string{"serve"}},
		"empty:dev": {},
	}
	env := map[string]string{"PORT": "9000"}
	for _, tc := range []struct {
		name string
		c    corev1.Container
		want []string
		err  error
	}{
		{"image defaults", corev1.Container{Image: "echo:dev"}, []string{"/bin/weft-echo", "serve"}, nil},
		{"args replace cmd", corev1.Container{Image: "echo:dev", Args: []string{"client", "--port=$(PORT)"}}, []string{"/bin/weft-echo", "client", "--port=9000"}, nil},
		{"command replaces both", corev1.Container{Image: "echo:dev", Command: []string{"sh", "-c"}, Args: []string{"echo $(PORT)"}}, []string{"sh", "-c", "echo 9000"}, nil},
		{"command alone drops cmd", corev1.Container{Image: "echo:dev", Command: []string{"sleep"}}, []string{"sleep"}, nil},
	} {
		got, err := containerArgv(tc.c, images[tc.c.Image], env)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := containerArgv(corev1.Container{Name: "c", Image: "empty:dev"}, images["empty:dev"], env); err == nil {
		t.Error("an image with nothing to run was accepted")
	}
	if err := errNotMapped("nginx:latest", images); !errors.Is(err, ErrImageNotMapped) || !strings.Contains(err.Error(), `"nginx:latest" (known: echo:dev, empty:dev)`) {
		t.Errorf("unmapped image: %v", err)
	}
}

func TestMergeImageEnv(t *testing.T) {
	for _, tc := range []struct {
		name             string
		image, container []string
		want             []string
	}{
		{"container wins, image order kept", []string{"PATH=/app", "A=image", "B=image"}, []string{"A=pod", "C=pod"}, []string{"PATH=/app", "B=image", "A=pod", "C=pod"}},
		{"container PATH wins", []string{"PATH=/app"}, []string{"PATH=/mine"}, []string{"PATH=/mine"}},
		{"default PATH", []string{"A=1"}, nil, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1"}},
	} {
		if got := mergeImageEnv(tc.image, tc.container); !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := withDefault([]string{"HOME=/x"}, "HOME", "/root"); !slices.Equal(got, []string{"HOME=/x"}) {
		t.Errorf("withDefault replaced HOME: %q", got)
	}
	if got := withDefault([]string{"A=1"}, "HOME", "/root"); !slices.Equal(got, []string{"A=1", "HOME=/root"}) {
		t.Errorf("withDefault: %q", got)
	}
}

func TestHostsFile(t *testing.T) {
	ip := netip.MustParseAddr("10.244.1.5")
	header := "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
	pod := testPod()
	if got := hostsFile(pod, ip, "echo-0", "cluster.local", nil); got != header+"10.244.1.5\techo-0\n" {
		t.Errorf("plain pod:\n%s", got)
	}
	pod.Spec.Subdomain = "echo"
	pod.Spec.HostAliases = []corev1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"a", "b"}}}
	want := header + "10.244.1.5\techo-0.echo.shop.svc.cluster.local\techo-0\n\n# Entries added by HostAliases.\n1.2.3.4\ta\tb\n"
	if got := hostsFile(pod, ip, "echo-0", "cluster.local", nil); got != want {
		t.Errorf("subdomain and aliases:\n%s", got)
	}
	pod.Spec.HostNetwork, pod.Spec.HostAliases = true, nil
	if got := hostsFile(pod, ip, "host", "cluster.local", []byte("127.0.0.1 localhost\n")); got != "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n" {
		t.Errorf("hostNetwork:\n%s", got)
	}
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "echo-0", Namespace: "shop", UID: "u-1", Labels: map[string]string{"app": "echo"}},
		Spec:       corev1.PodSpec{NodeName: "lab-node-1", ServiceAccountName: "echo"},
	}
}

func TestContainerEnv(t *testing.T) {
	objects := map[string]map[string]string{
		"configmap/cfg": {"MODE": "fast", "LEVEL": "3"},
		"secret/s":      {"TOKEN": "t0p"},
	}
	facts := envFacts{
		PodIP:      netip.MustParseAddr("10.244.1.2"),
		HostIP:     netip.MustParseAddr("172.30.0.11"),
		APIService: netip.MustParseAddrPort("10.96.0.1:443"),
		PathDirs:   []string{"/lab/bin"},
		Lookup: func(kind, name, key string) (string, bool, error) {
			v, ok := objects[kind+"/"+name][key]
			return v, ok, nil
		},
		All: func(kind, name string) (map[string]string, bool, error) {
			m, ok := objects[kind+"/"+name]
			return m, ok, nil
		},
	}
	ref := func(p string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: p}}
	}
	c := corev1.Container{
		EnvFrom: []corev1.EnvFromSource{{Prefix: "CFG_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		Env: []corev1.EnvVar{
			{Name: "POD_NAME", ValueFrom: ref("metadata.name")},
			{Name: "POD_NAMESPACE", ValueFrom: ref("metadata.namespace")},
			{Name: "POD_IP", ValueFrom: ref("status.podIP")},
			{Name: "NODE_NAME", ValueFrom: ref("spec.nodeName")},
			{Name: "SA", ValueFrom: ref("spec.serviceAccountName")},
			{Name: "APP", ValueFrom: ref("metadata.labels['app']")},
			{Name: "GREETING", Value: "hi $(POD_NAME)"},
			{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "TOKEN"}}},
		},
	}
	imageFacts := facts
	imageFacts.ImagePath = true
	if list, _, err := containerEnv(testPod(), c, imageFacts); err != nil || slices.ContainsFunc(list, func(s string) bool { return strings.HasPrefix(s, "PATH=") }) {
		t.Errorf("a pulled image's container got a PATH before its image ENV: %q, %v", list, err)
	}
	list, _, err := containerEnv(testPod(), c, facts)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"PATH=/lab/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"KUBERNETES_SERVICE_HOST=10.96.0.1", "KUBERNETES_SERVICE_PORT=443", "KUBERNETES_PORT=tcp://10.96.0.1:443",
		"CFG_MODE=fast", "CFG_LEVEL=3",
		"POD_NAME=echo-0", "POD_NAMESPACE=shop", "POD_IP=10.244.1.2", "NODE_NAME=lab-node-1", "SA=echo", "APP=echo",
		"GREETING=hi echo-0", "TOKEN=t0p",
	} {
		if !slices.Contains(list, want) {
			t.Errorf("env lacks %s:\n%s", want, strings.Join(list, "\n"))
		}
	}
	missing := corev1.Container{Env: []corev1.EnvVar{{Name: "X", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}}}}
	if _, _, err := containerEnv(testPod(), missing, facts); err == nil {
		t.Error("a missing required configMap key was accepted")
	}
	optional := true
	missing.Env[0].ValueFrom.ConfigMapKeyRef.Optional = &optional
	if list, _, err := containerEnv(testPod(), missing, facts); err != nil || slices.ContainsFunc(list, func(s string) bool { return strings.HasPrefix(s, "X=") }) {
		t.Errorf("optional missing key: %v, %v", err, list)
	}
}

func TestResolvConf(t *testing.T) {
	dns := netip.MustParseAddr("10.96.0.10")
	cluster := "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
	ndots := "2"
	for _, tc := range []struct {
		name   string
		policy corev1.DNSPolicy
		host   bool
		cfg    *corev1.PodDNSConfig
		want   string
	}{
		{"default policy is ClusterFirst", "", false, nil, cluster},
		{"ClusterFirst", corev1.DNSClusterFirst, false, nil, cluster},
		{"hostNetwork ClusterFirst keeps host", corev1.DNSClusterFirst, true, nil, ""},
		{"ClusterFirstWithHostNet", corev1.DNSClusterFirstWithHostNet, true, nil, cluster},
		{"Default keeps host", corev1.DNSDefault, false, nil, ""},
		{"None with config", corev1.DNSNone, false, &corev1.PodDNSConfig{Nameservers: []string{"1.2.3.4"}, Searches: []string{"a.b"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: &ndots}, {Name: "edns0"}}},
			"nameserver 1.2.3.4\nsearch a.b\noptions ndots:2 edns0\n"},
	} {
		pod := testPod()
		pod.Spec.DNSPolicy, pod.Spec.HostNetwork, pod.Spec.DNSConfig = tc.policy, tc.host, tc.cfg
		if got := resolvConf(pod, dns, "cluster.local"); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestAllocateIP(t *testing.T) {
	cidr := netip.MustParsePrefix("10.244.1.0/24")
	used := map[netip.Addr]bool{}
	a, err := allocateIP(cidr, used)
	if err != nil || a != netip.MustParseAddr("10.244.1.2") {
		t.Fatalf("first = %v, %v", a, err)
	}
	used[a] = true
	if b, _ := allocateIP(cidr, used); b != netip.MustParseAddr("10.244.1.3") {
		t.Errorf("second = %v", b)
	}
	small := netip.MustParsePrefix("10.244.9.0/30") // .0 net, .1 reserved, .2 usable, .3 broadcast
	used = map[netip.Addr]bool{}
	if c, err := allocateIP(small, used); err != nil || c != netip.MustParseAddr("10.244.9.2") {
		t.Fatalf("small = %v, %v", c, err)
	}
	used[netip.MustParseAddr("10.244.9.2")] = true
	if _, err := allocateIP(small, used); err == nil {
		t.Error("exhausted CIDR gave an address")
	}
}

func TestTailLines(t *testing.T) {
	b := []byte("a\nb\nc\n")
	for n, want := range map[int]string{0: "", 1: "c\n", 2: "b\nc\n", 3: "a\nb\nc\n", 10: "a\nb\nc\n"} {
		if got := string(tailLines(b, n)); got != want {
			t.Errorf("tail %d = %q, want %q", n, got, want)
		}
	}
}

func TestShouldRestart(t *testing.T) {
	for _, tc := range []struct {
		policy corev1.RestartPolicy
		init   bool
		code   int
		want   bool
	}{
		{corev1.RestartPolicyAlways, false, 0, true},
		{corev1.RestartPolicyAlways, false, 1, true},
		{corev1.RestartPolicyAlways, true, 0, false},
		{corev1.RestartPolicyAlways, true, 1, true},
		{corev1.RestartPolicyOnFailure, false, 0, false},
		{corev1.RestartPolicyOnFailure, false, 2, true},
		{corev1.RestartPolicyNever, false, 2, false},
	} {
		if got := shouldRestart(tc.policy, tc.init, tc.code); got != tc.want {
			t.Errorf("%s init=%v code=%d: got %v", tc.policy, tc.init, tc.code, got)
		}
	}
}

func TestNames(t *testing.T) {
	if v := podVeth("0b7f5b0c-7f7e-4c5c-9d43-3e8a0f1f7a11"); len(v) > 15 {
		t.Errorf("veth name %q longer than IFNAMSIZ-1", v)
	}
	if !ownedNetns("lab-node-1", "wl-lab-node-1_abc") || !ownedNetns("lab-node-1", "wl-lab-node-1") || ownedNetns("lab-node-1", "wl-lab-node-10") {
		t.Error("ownedNetns matches the wrong names")
	}
	if err := validateFabricSet(nil); !errors.Is(err, ErrConfig) {
		t.Errorf("empty fabric: %v", err)
	}
	bad := Config{Name: "Bad_Name", StateDir: "/x", NodeIP: netip.MustParseAddr("172.30.0.11")}
	if err := validateFabricSet([]Config{bad}); !errors.Is(err, ErrConfig) {
		t.Errorf("bad name accepted: %v", err)
	}
}

func TestPathDirsPutTheImagePathFirst(t *testing.T) {
	c := Config{
		PathDirs: []string{"/lab/bin"},
		Images:   map[string]Image{"adv": {Path: []string{"/lab/bin/adv"}}},
	}
	got := c.pathDirs("adv")
	if len(got) < 3 || got[0] != "/lab/bin/adv" || got[1] != "/lab/bin" || got[2] != systemPath[0] {
		t.Errorf("pathDirs(adv) = %v", got)
	}
	if got := c.pathDirs("other"); got[0] != "/lab/bin" {
		t.Errorf("pathDirs(other) = %v", got)
	}
}

func TestValidateImageStorePaths(t *testing.T) {
	ok := Config{
		Name: "lab-node-1", StateDir: "/var/lib/lab/n1", NodeIP: netip.MustParseAddr("172.30.0.11"),
		PodCIDR: netip.MustParsePrefix("10.244.1.0/24"), ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16"),
		APIServerVIP: netip.MustParseAddrPort("172.30.255.1:6443"), CgroupRoot: "/sys/fs/cgroup",
		Kubeconfig: "/k", ClusterDNS: netip.MustParseAddr("10.96.0.10"), ClusterDomain: "cluster.local",
		APIServerHost: "127.0.0.1:6443", KubeletPort: 10251, KubeletServingCert: "c", KubeletServingKey: "k", ClientCA: "ca",
		ImageStore: "/var/lib/lab/images",
	}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.ImageStore = "images" },
		func(c *Config) { c.ImageStore = "/var/lib/lab:images" },
		func(c *Config) { c.StateDir = "/var/lib/lab,n1" },
	} {
		c := ok
		bad(&c)
		if err := c.validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("ImageStore %q StateDir %q accepted: %v", c.ImageStore, c.StateDir, err)
		}
	}
}
