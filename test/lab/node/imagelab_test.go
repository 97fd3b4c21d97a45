package node

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/weft-mesh/weft/test/kubetest"
)

// imageLab is a running lab of two nodes sharing an image store, a
// registry holding the test images, and a namespace prepared the way the
// controllers and admission plugins would.
type imageLab struct {
	t     *testing.T
	cs    kubernetes.Interface
	ca    []byte
	pki   testPKI
	root  string
	store string
	nodes []Config
	ns    string
	reg   string // host:port
	stop  func() // stops the nodes (idempotent)
}

// skipWithoutOverlay skips when the kernel cannot mount overlayfs.
func skipWithoutOverlay(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil || !strings.Contains(string(b), "\toverlay\n") {
		if err := exec.Command("modprobe", "overlay").Run(); err != nil {
			t.Skip("needs overlayfs (not in /proc/filesystems, modprobe overlay failed)")
		}
	}
}

func startImageLab(t *testing.T) *imageLab {
	privileged(t)
	skipWithoutOverlay(t)
	kc := kubetest.Start(t)
	pki := newTestPKI(t)
	kubeconfig := writeKubeconfig(t, kc.Config)
	host, err := url.Parse(kc.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	root, nodes := testNodes(t, 2)
	lab := &imageLab{t: t, cs: kc.Client, ca: kc.Config.CAData, pki: pki, root: root, store: filepath.Join(root, "images"), reg: testRegistry(t)}
	for i := range nodes {
		n := &nodes[i]
		n.Kubeconfig, n.APIServerHost = kubeconfig, host.Host
		n.KubeletPort = 21250 + os.Getpid()%1000*2 + i
		n.KubeletServingCert, n.KubeletServingKey, n.ClientCA = pki.ServingCert, pki.ServingKey, pki.CA
		n.ImageStore = lab.store
	}
	lab.nodes = nodes
	if err := SetupFabric(nodes, HostLink{}); err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if err := Run(runCtx, n); err != nil {
				t.Errorf("run %s: %v", n.Name, err)
			}
		})
	}
	var once sync.Once
	lab.stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(lab.stop)
	lab.prepareNamespace()
	return lab
}

// prepareNamespace creates the namespace, its default ServiceAccount and
// root CA ConfigMap, and the ConfigMap and Secret the test pods mount.
func (l *imageLab) prepareNamespace() {
	ctx, cs := l.t.Context(), l.cs
	l.ns = fmt.Sprintf("img%d", os.Getpid())
	for _, f := range []func() error{
		func() error {
			_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: l.ns}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().ServiceAccounts(l.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().ConfigMaps(l.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": string(l.ca)}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().ConfigMaps(l.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg"}, Data: map[string]string{"greeting": "hello"}}, metav1.CreateOptions{})
			return err
		},
		func() error {
			_, err := cs.CoreV1().Secrets(l.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "sec"}, Data: map[string][]byte{"password": []byte("s3cret")}}, metav1.CreateOptions{})
			return err
		},
	} {
		mustCreate(l.t, f)
	}
}

// buildProbe builds testdata/imageprobe as a static binary.
func buildProbe(t *testing.T) []byte {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("needs the go command to build the test image's program: %v", err)
	}
	out := filepath.Join(t.TempDir(), "probe")
	cmd := exec.Command(goBin, "build", "-o", out, "./testdata/imageprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// appLayer is the filesystem of the test images: the probe, a passwd and
// group file with user nonroot (65532), and a marker file.
func appLayer(t *testing.T, probe []byte) v1.Layer {
	return testLayer(t,
		tarFile{Name: "etc/", Type: tar.TypeDir},
		tarFile{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/home/nonroot:/sbin/nologin\n"},
		tarFile{Name: "etc/group", Body: "root:x:0:\nnonroot:x:65532:\n"},
		tarFile{Name: "app/", Type: tar.TypeDir},
		tarFile{Name: "app/probe", Body: string(probe), Mode: 0o755},
		tarFile{Name: "srv/", Type: tar.TypeDir},
		tarFile{Name: "srv/data/", Type: tar.TypeDir},
		tarFile{Name: "srv/data/marker", Body: "image-marker"},
		tarFile{Name: "home/nonroot/", Type: tar.TypeDir, UID: 65532, GID: 65532},
		tarFile{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
	)
}

// appConfig is the config of the good test image.
func appConfig() v1.Config {
	return v1.Config{
		User:       "65532",
		Entrypoint: []string{"/app/probe"},
		Cmd:        []string{"serve"},
		Env:        []string{"PATH=/app:/usr/bin:/bin", "IMAGE_VAR=from-image", "POD_VAR=from-image"},
		WorkingDir: "/srv",
	}
}

// dynamicLayer holds /bin/true of the host without its shared libraries
// and, with loader, its ELF interpreter (but still no libc). It skips the
// test when /bin/true is not dynamically linked.
func dynamicLayer(t *testing.T, loader bool) v1.Layer {
	t.Helper()
	f, err := elf.Open("/bin/true")
	if err != nil {
		t.Skipf("needs an ELF /bin/true: %v", err)
	}
	defer f.Close()
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(p.Open())
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if interp == "" {
		t.Skip("/bin/true is statically linked")
	}
	prog, _ := os.ReadFile("/bin/true")
	files := []tarFile{{Name: "bin/true", Body: string(prog), Mode: 0o755}}
	if loader {
		ld, err := os.ReadFile(interp)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, tarFile{Name: strings.TrimPrefix(interp, "/"), Body: string(ld), Mode: 0o755})
	}
	return testLayer(t, files...)
}

// pod returns a one-container pod of image on node i, changed by opts.
func (l *imageLab) pod(name string, node int, image string, opts ...func(*corev1.Pod)) *corev1.Pod {
	grace := int64(1)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: l.ns},
		Spec: corev1.PodSpec{
			NodeName:                      l.nodes[node].Name,
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []corev1.Container{{Name: "main", Image: image}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func (l *imageLab) create(pods ...*corev1.Pod) {
	for _, p := range pods {
		mustCreate(l.t, func() error {
			_, err := l.cs.CoreV1().Pods(l.ns).Create(l.t.Context(), p, metav1.CreateOptions{})
			return err
		})
	}
}

func (l *imageLab) get(name string) *corev1.Pod {
	p, err := l.cs.CoreV1().Pods(l.ns).Get(l.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	return p
}

// waitStatus waits until the pod's container status satisfies ok.
func (l *imageLab) waitStatus(name, what string, ok func(corev1.ContainerStatus) bool) corev1.ContainerStatus {
	l.t.Helper()
	var last corev1.ContainerStatus
	waitFor(l.t, name+": "+what, 60*time.Second, func() (bool, error) {
		p := l.get(name)
		if len(p.Status.ContainerStatuses) != 1 {
			return false, nil
		}
		last = p.Status.ContainerStatuses[0]
		return ok(last), fmt.Errorf("status %+v", last)
	})
	return last
}

// waiting matches a container waiting with reason and a message holding msg.
func waitingFor(reason, msg string) func(corev1.ContainerStatus) bool {
	return func(s corev1.ContainerStatus) bool {
		w := s.State.Waiting
		return w != nil && w.Reason == reason && strings.Contains(w.Message, msg)
	}
}

// probeReport is what testdata/imageprobe prints.
type probeReport struct {
	UID, GID int
	Groups   []int
	Cwd      string
	Hostname string
	Status   map[string]string
	Files    map[string]string
	Writes   map[string]string
	Env      []string
	Dev      []string
	HostPID1 bool
}

// report reads the first report a pod's probe logged.
func (l *imageLab) report(name string, node int) probeReport {
	l.t.Helper()
	p := l.get(name)
	log := filepath.Join(l.nodes[node].StateDir, "pods", fmt.Sprintf("%s_%s_%s", l.ns, name, p.UID), "logs", "main", "0.log")
	var r probeReport
	waitFor(l.t, name+" report", 30*time.Second, func() (bool, error) {
		f, err := os.Open(log)
		if err != nil {
			return false, err
		}
		defer f.Close()
		line, err := bufio.NewReader(f).ReadBytes('\n')
		if err != nil {
			return false, err
		}
		return true, json.Unmarshal(line, &r)
	})
	return r
}

// exec runs cmd in a pod's container through node i's kubelet API, as the
// apiserver does for kubectl exec.
func (l *imageLab) exec(node int, pod string, cmd ...string) (string, error) {
	kubeletURL := fmt.Sprintf("https://127.0.0.1:%d", l.nodes[node].KubeletPort)
	q := url.Values{"command": cmd, "output": {"1"}, "error": {"1"}}
	u, _ := url.Parse(kubeletURL + "/exec/" + l.ns + "/" + pod + "/main?" + q.Encode())
	rc := &rest.Config{Host: kubeletURL, TLSClientConfig: rest.TLSClientConfig{CAData: l.pki.CAPEM, CertData: l.pki.ClientCert, KeyData: l.pki.ClientKey}}
	ex, err := remotecommand.NewSPDYExecutor(rc, "POST", u)
	if err != nil {
		return "", err
	}
	var out, errOut bytes.Buffer
	err = ex.StreamWithContext(l.t.Context(), remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	return out.String() + errOut.String(), err
}
