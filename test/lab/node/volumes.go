package node

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// volumes materializes a pod's volumes under root/<volume name>.
type volumes struct {
	client        kubernetes.Interface
	root          string
	podIP, hostIP netip.Addr
	// hostPath maps a hostPath volume's path to where it is on this node
	// (hostPathOf); nil: the path itself.
	hostPath func(string) string

	mu          sync.Mutex
	paths       map[string]string // volume name -> host path
	tokens      map[string]token  // volume/path -> token
	lastRefresh time.Time
}

type token struct {
	value           string
	issued, expires time.Time
}

// due reports whether a token should be renewed: past 80% of its life.
func (t token) due(now time.Time) bool {
	return t.value == "" || now.After(t.issued.Add(t.expires.Sub(t.issued)*8/10))
}

const volumeResync = 60 * time.Second

func newVolumes(client kubernetes.Interface, root string, podIP, hostIP netip.Addr) *volumes {
	return &volumes{client: client, root: root, podIP: podIP, hostIP: hostIP, paths: map[string]string{}, tokens: map[string]token{}}
}

// path returns the host path of a volume.
func (v *volumes) path(name string) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	p, ok := v.paths[name]
	return p, ok
}

// refresh writes every volume; after the first time it only works once a
// minute or when a token is due.
func (v *volumes) refresh(ctx context.Context, pod *corev1.Pod) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := time.Now()
	if !v.lastRefresh.IsZero() && now.Sub(v.lastRefresh) < volumeResync {
		due := false
		for _, t := range v.tokens {
			due = due || t.due(now)
		}
		if !due {
			return nil
		}
	}
	for _, vol := range pod.Spec.Volumes {
		if err := v.materialize(ctx, pod, vol); err != nil {
			return fmt.Errorf("volume %s: %w", vol.Name, err)
		}
	}
	v.lastRefresh = now
	return nil
}

func (v *volumes) materialize(ctx context.Context, pod *corev1.Pod, vol corev1.Volume) error {
	dir := filepath.Join(v.root, vol.Name)
	var files map[string][]byte
	var err error
	switch src := vol.VolumeSource; {
	case src.HostPath != nil:
		path := src.HostPath.Path
		if v.hostPath != nil {
			path = v.hostPath(path) // the node's own CNI directories (cni.go)
		}
		if t := src.HostPath.Type; t != nil && *t == corev1.HostPathDirectoryOrCreate {
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		}
		v.paths[vol.Name] = path
		return nil
	case src.EmptyDir != nil:
		v.paths[vol.Name] = dir
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		return os.Chmod(dir, 0o777) // world-writable whatever the umask, as the kubelet makes it
	case src.ConfigMap != nil:
		files, err = v.keyFiles(ctx, pod.Namespace, "configmap", src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional)
	case src.Secret != nil:
		files, err = v.keyFiles(ctx, pod.Namespace, "secret", src.Secret.SecretName, src.Secret.Items, src.Secret.Optional)
	case src.DownwardAPI != nil:
		files, err = v.downward(pod, src.DownwardAPI.Items)
	case src.Projected != nil:
		files, err = v.projected(ctx, pod, vol.Name, src.Projected.Sources)
	default:
		return fmt.Errorf("volume type not supported by the lab node")
	}
	if err != nil {
		return err
	}
	if err := writeFiles(dir, files); err != nil {
		return err
	}
	v.paths[vol.Name] = dir
	return nil
}

func (v *volumes) projected(ctx context.Context, pod *corev1.Pod, name string, sources []corev1.VolumeProjection) (map[string][]byte, error) {
	files := map[string][]byte{}
	add := func(m map[string][]byte, err error) error {
		for k, b := range m {
			files[k] = b
		}
		return err
	}
	for _, s := range sources {
		var err error
		switch {
		case s.ServiceAccountToken != nil:
			var tok string
			tok, err = v.token(ctx, pod, name, s.ServiceAccountToken)
			files[s.ServiceAccountToken.Path] = []byte(tok)
		case s.ConfigMap != nil:
			err = add(v.keyFiles(ctx, pod.Namespace, "configmap", s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional))
		case s.Secret != nil:
			err = add(v.keyFiles(ctx, pod.Namespace, "secret", s.Secret.Name, s.Secret.Items, s.Secret.Optional))
		case s.DownwardAPI != nil:
			err = add(v.downward(pod, s.DownwardAPI.Items))
		default:
			err = fmt.Errorf("projected source not supported by the lab node")
		}
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

// token returns a bound ServiceAccount token, requesting a new one when due.
func (v *volumes) token(ctx context.Context, pod *corev1.Pod, vol string, p *corev1.ServiceAccountTokenProjection) (string, error) {
	key := vol + "/" + p.Path
	now := time.Now()
	if t, ok := v.tokens[key]; ok && !t.due(now) {
		return t.value, nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	exp := int64(3600)
	if p.ExpirationSeconds != nil {
		exp = *p.ExpirationSeconds
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &exp,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if p.Audience != "" {
		req.Spec.Audiences = []string{p.Audience}
	}
	resp, err := v.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request token for serviceaccount %s/%s: %w", pod.Namespace, sa, err)
	}
	v.tokens[key] = token{value: resp.Status.Token, issued: now, expires: resp.Status.ExpirationTimestamp.Time}
	return resp.Status.Token, nil
}

// keyFiles returns the files of a ConfigMap or Secret volume.
func (v *volumes) keyFiles(ctx context.Context, ns, kind, name string, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	data, ok, err := fetchData(ctx, v.client, ns, kind, name)
	if err != nil {
		return nil, err
	}
	if !ok {
		if optional != nil && *optional {
			return nil, nil
		}
		return nil, fmt.Errorf("%s %q not found", kind, name)
	}
	return keyToPaths(data, items, optional)
}

// keyToPaths maps object keys to files: every key, or the listed items.
func keyToPaths(data map[string][]byte, items []corev1.KeyToPath, optional *bool) (map[string][]byte, error) {
	files := map[string][]byte{}
	if len(items) == 0 {
		for k, b := range data {
			files[k] = b
		}
		return files, nil
	}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			if optional != nil && *optional {
				continue
			}
			return nil, fmt.Errorf("key %q not found", it.Key)
		}
		files[it.Path] = b
	}
	return files, nil
}

func (v *volumes) downward(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile) (map[string][]byte, error) {
	files := map[string][]byte{}
	for _, it := range items {
		if it.FieldRef == nil {
			continue // resourceFieldRef: no resource accounting in the lab
		}
		val, err := fieldRef(pod, it.FieldRef.FieldPath, envFacts{PodIP: v.podIP, HostIP: v.hostIP})
		if err != nil {
			return nil, err
		}
		files[it.Path] = []byte(val)
	}
	return files, nil
}

// fetchData reads a ConfigMap's or Secret's data.
func fetchData(ctx context.Context, client kubernetes.Interface, ns, kind, name string) (map[string][]byte, bool, error) {
	data := map[string][]byte{}
	var err error
	switch kind {
	case "configmap":
		var cm *corev1.ConfigMap
		cm, err = client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for k, s := range cm.Data {
				data[k] = []byte(s)
			}
			for k, b := range cm.BinaryData {
				data[k] = b
			}
		}
	case "secret":
		var s *corev1.Secret
		s, err = client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			data = s.Data
		}
	default:
		return nil, false, fmt.Errorf("unknown object kind %q", kind)
	}
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("get %s %s/%s: %w", kind, ns, name, err)
	}
	return data, true, nil
}

// writeFiles writes files into dir atomically (rename) and removes files
// that are no longer listed.
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		clean := filepath.Clean(name)
		if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("file path %q escapes the volume", name)
		}
		names = append(names, clean)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		tmp := filepath.Join(filepath.Dir(p), ".tmp-"+filepath.Base(p))
		if err := os.WriteFile(tmp, files[name], 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, p); err != nil {
			return err
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok && !e.IsDir() {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}
