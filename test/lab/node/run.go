package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// kubelet is one running node.
type kubelet struct {
	cfg    Config
	client kubernetes.Interface
	log    *slog.Logger

	store *imageStore // nil without Config.ImageStore

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	usedIPs map[netip.Addr]bool
	apiSvc  netip.AddrPort
	wg      sync.WaitGroup
}

// Run runs the node until ctx is done: it registers the Node and keeps it
// Ready, forwards APIServerVIP inside the node netns to APIServerHost, runs
// kube-proxy in the node netns, serves the kubelet API on
// 127.0.0.1:KubeletPort and runs the pods bound to the node. When ctx ends
// it stops its pods and kube-proxy and removes their netns and cgroups (the
// Node and Pod objects stay). SetupFabric must have created the node netns.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if _, err := os.Stat(netnsPath(nodeNetns(cfg.Name))); err != nil {
		return fmt.Errorf("node %s: netns %s missing (SetupFabric first): %w", cfg.Name, nodeNetns(cfg.Name), err)
	}
	rc, err := clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("node %s: load kubeconfig: %w", cfg.Name, err)
	}
	rc.UserAgent = "weft-lab-node/" + cfg.Name
	rc.QPS, rc.Burst = 50, 100
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("node %s: client: %w", cfg.Name, err)
	}
	k := &kubelet{
		cfg:     cfg,
		client:  client,
		log:     slog.Default().With("node", cfg.Name),
		workers: map[types.UID]*podWorker{},
		usedIPs: map[netip.Addr]bool{},
	}
	if cfg.ImageStore != "" {
		if err := os.MkdirAll(cfg.ImageStore, 0o755); err != nil {
			return fmt.Errorf("node %s: image store: %w", cfg.Name, err)
		}
		k.store = &imageStore{dir: cfg.ImageStore}
	}
	return k.run(ctx)
}

func (k *kubelet) run(ctx context.Context) error {
	cfg := k.cfg
	for _, d := range []string{cfg.StateDir, nodeCgroup(cfg.CgroupRoot, cfg.Name) + "/kubepods", nodeCgroup(cfg.CgroupRoot, cfg.Name) + "/system"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("node %s: %w", cfg.Name, err)
		}
	}
	if err := setupCNI(cfg); err != nil {
		return fmt.Errorf("node %s: CNI: %w", cfg.Name, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	fwd, err := listenInNetns(netnsPath(nodeNetns(cfg.Name)), cfg.APIServerVIP.String())
	if err != nil {
		return fmt.Errorf("node %s: apiserver listener in node netns: %w", cfg.Name, err)
	}
	go forward(ctx, fwd, cfg.APIServerHost, k.log)

	srv, err := k.serveAPI()
	if err != nil {
		fwd.Close()
		return fmt.Errorf("node %s: kubelet API: %w", cfg.Name, err)
	}
	defer srv.Close()

	if err := k.register(ctx); err != nil {
		fwd.Close()
		return fmt.Errorf("node %s: register: %w", cfg.Name, err)
	}
	go k.heartbeat(ctx)

	proxyDone := make(chan struct{})
	if cfg.KubeProxyBin != "" {
		go func() {
			defer close(proxyDone)
			k.runKubeProxy(ctx)
		}()
	} else {
		close(proxyDone)
	}

	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", cfg.Name).String()
	}))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.podChanged(ctx, o) },
		UpdateFunc: func(_, o any) { k.podChanged(ctx, o) },
		DeleteFunc: func(o any) { k.podDeleted(o) },
	}); err != nil {
		fwd.Close()
		return err
	}
	factory.Start(ctx.Done())
	k.log.Info("node running", "ip", cfg.NodeIP, "podCIDR", cfg.PodCIDR, "kubeletPort", cfg.KubeletPort)
	<-ctx.Done()
	factory.Shutdown()
	fwd.Close()
	k.wg.Wait() // every pod worker tears its pod down on ctx done
	<-proxyDone
	if err := removeCgroupTree(nodeCgroup(cfg.CgroupRoot, cfg.Name) + "/kubepods"); err != nil {
		k.log.Error("remove pod cgroups", "err", err)
	}
	if err := removeCgroupTree(nodeCgroup(cfg.CgroupRoot, cfg.Name) + "/system"); err != nil {
		k.log.Error("remove system cgroup", "err", err)
	}
	return nil
}

func (k *kubelet) podChanged(ctx context.Context, o any) {
	pod, ok := o.(*corev1.Pod)
	if !ok || pod.Spec.NodeName != k.cfg.Name {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if w, ok := k.workers[pod.UID]; ok {
		w.setPod(pod)
		return
	}
	if ctx.Err() != nil {
		return
	}
	w := newPodWorker(k, pod)
	k.workers[pod.UID] = w
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		w.loop(ctx)
	}()
	w.notify()
}

func (k *kubelet) podDeleted(o any) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	pod, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	k.mu.Lock()
	w := k.workers[pod.UID]
	k.mu.Unlock()
	if w != nil {
		w.setGone()
	}
}

// forget drops a finished worker.
func (k *kubelet) forget(w *podWorker) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.workers[w.uid] == w {
		delete(k.workers, w.uid)
	}
}

// findPod returns the worker of a pod by namespace and name (and uid if set).
func (k *kubelet) findPod(ns, name, uid string) (*podWorker, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, w := range k.workers {
		if w.key == ns+"/"+name && (uid == "" || string(w.uid) == uid) {
			return w, nil
		}
	}
	return nil, fmt.Errorf("%w: %s/%s", errPodGone, ns, name)
}

// allocate picks the pod's IP: the one it had (a restarted node keeps pod
// IPs stable) or the lowest free address of the PodCIDR.
func (k *kubelet) allocate(pod *corev1.Pod) (netip.Addr, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if a, err := netip.ParseAddr(pod.Status.PodIP); err == nil && k.cfg.PodCIDR.Contains(a) && !k.usedIPs[a] && a != k.cfg.PodCIDR.Masked().Addr() {
		k.usedIPs[a] = true
		return a, nil
	}
	a, err := allocateIP(k.cfg.PodCIDR, k.usedIPs)
	if err != nil {
		return a, err
	}
	k.usedIPs[a] = true
	return a, nil
}

func (k *kubelet) release(a netip.Addr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.usedIPs, a)
}

// apiService returns ClusterIP:port of default/kubernetes, falling back to
// the first address of the ServiceCIDR and 443.
func (k *kubelet) apiService(ctx context.Context) netip.AddrPort {
	k.mu.Lock()
	cached := k.apiSvc
	k.mu.Unlock()
	if cached.IsValid() {
		return cached
	}
	svc, err := k.client.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err == nil {
		a, perr := netip.ParseAddr(svc.Spec.ClusterIP)
		if perr == nil && len(svc.Spec.Ports) > 0 {
			ap := netip.AddrPortFrom(a, uint16(svc.Spec.Ports[0].Port))
			k.mu.Lock()
			k.apiSvc = ap
			k.mu.Unlock()
			return ap
		}
	}
	return netip.AddrPortFrom(k.cfg.ServiceCIDR.Masked().Addr().Next(), 443)
}

// objectData reads a ConfigMap or Secret as strings (for env).
func (k *kubelet) objectData(ctx context.Context, ns, kind, name string) (map[string]string, bool, error) {
	data, ok, err := fetchData(ctx, k.client, ns, kind, name)
	if err != nil || !ok {
		return nil, ok, err
	}
	out := make(map[string]string, len(data))
	for k, b := range data {
		out[k] = string(b)
	}
	return out, true, nil
}

// retryUntil calls f until it succeeds or ctx ends.
func retryUntil(ctx context.Context, every time.Duration, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(every):
		}
	}
}
