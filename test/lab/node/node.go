package node

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	heartbeatEvery = 10 * time.Second
	leaseSeconds   = 40
	kubeletVersion = "v1.37.0"
)

// nodeObject is the Node the lab node registers.
func nodeObject(cfg Config) *corev1.Node {
	cidr := cfg.PodCIDR.Masked().String()
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: cfg.Name,
			Labels: map[string]string{
				"kubernetes.io/hostname": cfg.Name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     runtime.GOARCH,
				"beta.kubernetes.io/os":  "linux",
			},
		},
		Spec: corev1.NodeSpec{PodCIDR: cidr, PodCIDRs: []string{cidr}},
	}
}

// nodeStatus is the status the node reports on every heartbeat.
func nodeStatus(cfg Config, old corev1.NodeStatus, now metav1.Time) corev1.NodeStatus {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory:           *resource.NewQuantity(memTotal(), resource.BinarySI),
		corev1.ResourcePods:             *resource.NewQuantity(110, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: resource.MustParse("100Gi"),
	}
	conds := []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"},
		{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", Message: "kubelet has sufficient PID available"},
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "kubelet is posting ready status"},
	}
	for i := range conds {
		conds[i].LastHeartbeatTime = now
		conds[i].LastTransitionTime = now
		for _, o := range old.Conditions {
			if o.Type == conds[i].Type && o.Status == conds[i].Status {
				conds[i].LastTransitionTime = o.LastTransitionTime
			}
		}
	}
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions:  conds,
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: cfg.NodeIP.String()},
			{Type: corev1.NodeInternalDNS, Address: "127.0.0.1"},
			{Type: corev1.NodeHostName, Address: cfg.Name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(cfg.KubeletPort)}},
		NodeInfo: corev1.NodeSystemInfo{
			MachineID:               cfg.Name,
			SystemUUID:              cfg.Name,
			BootID:                  cfg.Name,
			KernelVersion:           unix.ByteSliceToString(uts.Release[:]),
			OSImage:                 "weft lab node",
			ContainerRuntimeVersion: "weft-lab://0.1.0",
			KubeletVersion:          kubeletVersion,
			OperatingSystem:         "linux",
			Architecture:            runtime.GOARCH,
		},
	}
}

func memTotal() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 1 << 30
	}
	return int64(si.Totalram) * int64(si.Unit)
}

// register creates or updates the Node and reports it Ready.
func (k *kubelet) register(ctx context.Context) error {
	want := nodeObject(k.cfg)
	nodes := k.client.CoreV1().Nodes()
	return retryUntil(ctx, time.Second, func() error {
		n, err := nodes.Get(ctx, want.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			// Created with its Ready status, as the kubelet does, so the
			// node-lifecycle controller never sees it not ready.
			create := want.DeepCopy()
			create.Status = nodeStatus(k.cfg, corev1.NodeStatus{}, metav1.Now())
			n, err = nodes.Create(ctx, create, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("create node: %w", err)
			}
		case err != nil:
			return fmt.Errorf("get node: %w", err)
		default:
			if n.Spec.PodCIDR != "" && n.Spec.PodCIDR != want.Spec.PodCIDR {
				return fmt.Errorf("node %s exists with podCIDR %s, want %s", n.Name, n.Spec.PodCIDR, want.Spec.PodCIDR)
			}
			for key, v := range want.Labels {
				if n.Labels == nil {
					n.Labels = map[string]string{}
				}
				n.Labels[key] = v
			}
			n.Spec.PodCIDR, n.Spec.PodCIDRs = want.Spec.PodCIDR, want.Spec.PodCIDRs
			if n, err = nodes.Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				return fmt.Errorf("update node: %w", err)
			}
		}
		n.Status = nodeStatus(k.cfg, n.Status, metav1.Now())
		if _, err := nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update node status: %w", err)
		}
		return k.renewLease(ctx)
	})
}

// heartbeat renews the Lease and the Ready condition every 10 s.
func (k *kubelet) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := k.renewLease(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("renew node lease", "err", err)
		}
		if err := k.updateNodeStatus(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("update node status", "err", err)
		}
	}
}

func (k *kubelet) updateNodeStatus(ctx context.Context) error {
	nodes := k.client.CoreV1().Nodes()
	n, err := nodes.Get(ctx, k.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return k.register(ctx) // someone deleted the Node: register again
	}
	if err != nil {
		return err
	}
	n.Status = nodeStatus(k.cfg, n.Status, metav1.Now())
	_, err = nodes.UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

func (k *kubelet) renewLease(ctx context.Context) error {
	leases := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, k.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		holder, secs := k.cfg.Name, int32(leaseSeconds)
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.cfg.Name, Namespace: corev1.NamespaceNodeLease},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs, RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	holder, secs := k.cfg.Name, int32(leaseSeconds)
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &holder, &secs, &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// forward accepts connections on ln (inside the node netns) and pipes each
// to target on the host.
func forward(ctx context.Context, ln net.Listener, target string, log *slog.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				log.Error("apiserver forwarder stopped", "err", err)
			}
			return
		}
		go func() {
			defer c.Close()
			var d net.Dialer
			up, err := d.DialContext(ctx, "tcp", target)
			if err != nil {
				log.Warn("apiserver forwarder dial", "err", err)
				return
			}
			defer up.Close()
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(up, c)
			go pipe(c, up)
			select {
			case <-done:
				<-done
			case <-ctx.Done():
			}
		}()
	}
}

// nodeKubeconfig writes the kubeconfig kube-proxy uses inside the node
// netns: server https://APIServerVIP, TLS server name the original host.
func nodeKubeconfig(cfg Config, out string) error {
	kc, err := clientcmd.LoadFromFile(cfg.Kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig: %w", err)
	}
	for _, c := range kc.Clusters {
		u, err := url.Parse(c.Server)
		if err != nil {
			return fmt.Errorf("kubeconfig server %q: %w", c.Server, err)
		}
		if c.TLSServerName == "" {
			c.TLSServerName = u.Hostname()
		}
		c.Server = "https://" + cfg.APIServerVIP.String()
	}
	return clientcmd.WriteToFile(*kc, out)
}

// runKubeProxy runs kube-proxy in the node netns and the node's system
// cgroup, restarting it when it exits, until ctx ends.
func (k *kubelet) runKubeProxy(ctx context.Context) {
	cfg := k.cfg
	kubeconfig := filepath.Join(cfg.StateDir, "kube-proxy.kubeconfig")
	if err := nodeKubeconfig(cfg, kubeconfig); err != nil {
		k.log.Error("kube-proxy kubeconfig", "err", err)
		return
	}
	mode := "nftables"
	if _, err := lookPath("nft", systemPath); err != nil {
		mode = "iptables"
	}
	// The cluster CIDR is the /16 holding the node PodCIDRs (10.244.0.0/16).
	clusterCIDR := cfg.PodCIDR.Masked().String()
	if p, err := cfg.PodCIDR.Addr().Prefix(16); err == nil && cfg.PodCIDR.Bits() >= 16 {
		clusterCIDR = p.String()
	}
	args := []string{cfg.KubeProxyBin,
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + cfg.Name,
		"--cluster-cidr=" + clusterCIDR,
		"--proxy-mode=" + mode,
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		"--metrics-bind-address=127.0.0.1:10249",
		"--healthz-bind-address=127.0.0.1:10256",
		"--nodeport-addresses=" + cfg.NodeIP.String() + "/32",
	}
	cg := nodeCgroup(cfg.CgroupRoot, cfg.Name) + "/system"
	backoff := time.Second
	for ctx.Err() == nil {
		logf, err := os.OpenFile(filepath.Join(cfg.StateDir, "kube-proxy.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			k.log.Error("kube-proxy log", "err", err)
			return
		}
		cmd, err := startProc(procSpec{
			Argv:   args,
			Env:    []string{"PATH=" + strings.Join(systemPath, ":")},
			Netns:  netnsPath(nodeNetns(cfg.Name)),
			Cgroup: cg,
			Stdout: logf,
			Stderr: logf,
		})
		logf.Close()
		if err != nil {
			k.log.Error("start kube-proxy", "err", err)
		} else {
			started := time.Now()
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case err := <-exited:
				k.log.Warn("kube-proxy exited", "err", err, "log", filepath.Join(cfg.StateDir, "kube-proxy.log"))
				if time.Since(started) > time.Minute {
					backoff = time.Second
				}
			case <-ctx.Done():
				_ = unix.Kill(cmd.Process.Pid, unix.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
					_ = unix.Kill(cmd.Process.Pid, unix.SIGKILL)
					<-exited
				}
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}
