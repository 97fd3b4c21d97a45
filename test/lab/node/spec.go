package node

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// systemPath is appended to every container's PATH after Config.PathDirs.
var systemPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// ErrImageNotMapped is reported (as ErrImagePull) for an image with no
// entry in Config.Images.
var ErrImageNotMapped = errors.New("image is not in the lab's image map")

// errNotMapped is the error for an image that is not in images when the
// node has no image store to pull it into.
func errNotMapped(image string, images map[string]Image) error {
	known := slices.Sorted(maps.Keys(images))
	return fmt.Errorf("%w: %q (known: %s)", ErrImageNotMapped, image, strings.Join(known, ", "))
}

// containerArgv computes what a container runs, as a container runtime
// does: command replaces the image Entrypoint (and drops its Cmd), args
// replace Cmd. $(VAR) references are expanded from env.
func containerArgv(c corev1.Container, img Image, env map[string]string) ([]string, error) {
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(expandAll(c.Command, env), expandAll(c.Args, env)...)
	case len(c.Args) > 0:
		argv = append(append([]string{}, img.Entrypoint...), expandAll(c.Args, env)...)
	default:
		argv = append(append([]string{}, img.Entrypoint...), img.Cmd...)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("container %s: image %q has no entrypoint and the pod gives no command", c.Name, c.Image)
	}
	return argv, nil
}

// mergeImageEnv puts an image's ENV under a container's environment as
// containerd does: a variable the container sets replaces the image's, and
// PATH is the runtime default when neither sets it.
func mergeImageEnv(image, container []string) []string {
	own := map[string]bool{}
	for _, kv := range container {
		k, _, _ := strings.Cut(kv, "=")
		own[k] = true
	}
	var out []string
	hasPath := own["PATH"]
	for _, kv := range image {
		k, _, _ := strings.Cut(kv, "=")
		hasPath = hasPath || k == "PATH"
		if !own[k] {
			out = append(out, kv)
		}
	}
	if !hasPath {
		out = append([]string{"PATH=" + strings.Join(systemPath, ":")}, out...)
	}
	return append(out, container...)
}

// withDefault appends key=value to env unless env sets key.
func withDefault(env []string, key, value string) []string {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return env
		}
	}
	return append(env, key+"="+value)
}

// lookPath resolves a bare program name in dirs; names with a slash are
// used as they are.
func lookPath(name string, dirs []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in %s", name, strings.Join(dirs, ":"))
}

// expand replaces $(VAR) with env[VAR] the way the kubelet does: $$ escapes,
// unknown references stay as they are.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := env[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func expandAll(in []string, env map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, env)
	}
	return out
}

// envFacts are the values the downward API and service variables draw on.
type envFacts struct {
	PodIP, HostIP netip.Addr
	APIService    netip.AddrPort // ClusterIP:port of default/kubernetes
	PathDirs      []string
	// ImagePath leaves PATH to the image's ENV (pulled images; see
	// mergeImageEnv) instead of PathDirs and the system directories.
	ImagePath bool
	// Lookup returns a key of a ConfigMap ("configmap") or Secret ("secret").
	Lookup func(kind, name, key string) (string, bool, error)
	// All returns every key of a ConfigMap or Secret.
	All func(kind, name string) (map[string]string, bool, error)
}

// containerEnv builds a container's environment in order: PATH and the
// kubernetes service variables, then envFrom, then env (later wins).
func containerEnv(pod *corev1.Pod, c corev1.Container, f envFacts) ([]string, map[string]string, error) {
	env := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}
	if !f.ImagePath {
		set("PATH", strings.Join(append(append([]string{}, f.PathDirs...), systemPath...), ":"))
	}
	set("HOSTNAME", pod.Name)
	if f.APIService.IsValid() {
		h, p := f.APIService.Addr().String(), fmt.Sprint(f.APIService.Port())
		set("KUBERNETES_SERVICE_HOST", h)
		set("KUBERNETES_SERVICE_PORT", p)
		set("KUBERNETES_SERVICE_PORT_HTTPS", p)
		set("KUBERNETES_PORT", "tcp://"+f.APIService.String())
		set("KUBERNETES_PORT_"+p+"_TCP", "tcp://"+f.APIService.String())
		set("KUBERNETES_PORT_"+p+"_TCP_PROTO", "tcp")
		set("KUBERNETES_PORT_"+p+"_TCP_PORT", p)
		set("KUBERNETES_PORT_"+p+"_TCP_ADDR", h)
	}
	for _, ef := range c.EnvFrom {
		kind, name, optional := "", "", false
		switch {
		case ef.ConfigMapRef != nil:
			kind, name, optional = "configmap", ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional != nil && *ef.ConfigMapRef.Optional
		case ef.SecretRef != nil:
			kind, name, optional = "secret", ef.SecretRef.Name, ef.SecretRef.Optional != nil && *ef.SecretRef.Optional
		default:
			continue
		}
		all, ok, err := f.All(kind, name)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			if optional {
				continue
			}
			return nil, nil, fmt.Errorf("%s %q not found", kind, name)
		}
		keys := make([]string, 0, len(all))
		for k := range all {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			set(ef.Prefix+k, all[k])
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, env))
			continue
		}
		v, ok, err := envSource(pod, e.ValueFrom, f)
		if err != nil {
			return nil, nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+env[k])
	}
	return out, env, nil
}

func envSource(pod *corev1.Pod, src *corev1.EnvVarSource, f envFacts) (string, bool, error) {
	switch {
	case src.FieldRef != nil:
		v, err := fieldRef(pod, src.FieldRef.FieldPath, f)
		return v, err == nil, err
	case src.ConfigMapKeyRef != nil:
		r := src.ConfigMapKeyRef
		return keyRef("configmap", r.Name, r.Key, r.Optional, f)
	case src.SecretKeyRef != nil:
		r := src.SecretKeyRef
		return keyRef("secret", r.Name, r.Key, r.Optional, f)
	case src.ResourceFieldRef != nil:
		return "", false, nil // no resource accounting in the lab
	}
	return "", false, nil
}

func keyRef(kind, name, key string, optional *bool, f envFacts) (string, bool, error) {
	v, ok, err := f.Lookup(kind, name, key)
	if err != nil {
		return "", false, err
	}
	if !ok {
		if optional != nil && *optional {
			return "", false, nil
		}
		return "", false, fmt.Errorf("key %q of %s %q not found", key, kind, name)
	}
	return v, true, nil
}

// fieldRef resolves a downward-API field path.
func fieldRef(pod *corev1.Pod, path string, f envFacts) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return f.PodIP.String(), nil
	case "status.hostIP", "status.hostIPs":
		return f.HostIP.String(), nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations} {
		if path == prefix {
			var lines []string
			for k, v := range m {
				lines = append(lines, fmt.Sprintf("%s=%q", k, v))
			}
			sort.Strings(lines)
			return strings.Join(lines, "\n"), nil
		}
		if strings.HasPrefix(path, prefix+"['") && strings.HasSuffix(path, "']") {
			return m[path[len(prefix)+2:len(path)-2]], nil
		}
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

// resolvConf returns the resolv.conf a pod gets, or "" when it keeps the
// host's file.
func resolvConf(pod *corev1.Pod, dns netip.Addr, domain string) string {
	var servers, search, options []string
	switch pod.Spec.DNSPolicy {
	case corev1.DNSDefault:
		return ""
	case corev1.DNSNone:
	case corev1.DNSClusterFirstWithHostNet:
		servers, search, options = clusterDNS(pod.Namespace, dns, domain)
	default: // ClusterFirst (also when empty)
		if pod.Spec.HostNetwork {
			return ""
		}
		servers, search, options = clusterDNS(pod.Namespace, dns, domain)
	}
	if c := pod.Spec.DNSConfig; c != nil {
		servers = append(servers, c.Nameservers...)
		search = append(search, c.Searches...)
		for _, o := range c.Options {
			if o.Value != nil {
				options = append(options, o.Name+":"+*o.Value)
			} else {
				options = append(options, o.Name)
			}
		}
	}
	var b strings.Builder
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	if len(options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(options, " "))
	}
	return b.String()
}

func clusterDNS(ns string, dns netip.Addr, domain string) ([]string, []string, []string) {
	return []string{dns.String()},
		[]string{ns + ".svc." + domain, "svc." + domain, domain},
		[]string{"ndots:5"}
}

// hostsFile is the /etc/hosts the kubelet writes for a pod: the localhost
// lines and the pod's IP with its hostname (and FQDN when it has a
// subdomain), then hostAliases. A hostNetwork pod gets nodeHosts (the
// node's file) and hostAliases.
func hostsFile(pod *corev1.Pod, podIP netip.Addr, hostname, domain string, nodeHosts []byte) string {
	var b strings.Builder
	if pod.Spec.HostNetwork {
		b.WriteString("# Kubernetes-managed hosts file (host network).\n")
		b.Write(nodeHosts)
	} else {
		b.WriteString("# Kubernetes-managed hosts file.\n" +
			"127.0.0.1\tlocalhost\n" +
			"::1\tlocalhost ip6-localhost ip6-loopback\n" +
			"fe00::0\tip6-localnet\n" +
			"fe00::0\tip6-mcastprefix\n" +
			"fe00::1\tip6-allnodes\n" +
			"fe00::2\tip6-allrouters\n")
		if sub := pod.Spec.Subdomain; sub != "" {
			fmt.Fprintf(&b, "%s\t%s.%s.%s.svc.%s\t%s\n", podIP, hostname, sub, pod.Namespace, domain, hostname)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", podIP, hostname)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.String()
}
