package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"

	"github.com/weft-mesh/weft/test/kubetest"
)

const helperEnv = "WEFT_LAB_NODE_TEST_HELPER"

// TestHelperPodServer is not a test: it is the program of the "server"
// image in the lifecycle test (the test binary re-executed in a pod). It
// answers every HTTP request on :8080 with what the pod sees.
func TestHelperPodServer(t *testing.T) {
	if os.Getenv(helperEnv) != "serve" {
		t.Skip("helper process for TestPrivilegedPodLifecycle")
	}
	fmt.Println("helper server started")
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		sa := "/var/run/secrets/kubernetes.io/serviceaccount/"
		hostname, _ := os.Hostname()
		_ = json.NewEncoder(w).Encode(map[string]string{
			"hostname":  hostname,
			"remote":    r.RemoteAddr,
			"podName":   os.Getenv("POD_NAME"),
			"podIP":     os.Getenv("POD_IP"),
			"nodeName":  os.Getenv("NODE_NAME"),
			"k8sHost":   os.Getenv("KUBERNETES_SERVICE_HOST"),
			"resolv":    read("/etc/resolv.conf"),
			"token":     read(sa + "token"),
			"namespace": read(sa + "namespace"),
			"ca":        read(sa + "ca.crt"),
		})
	})
	_ = http.ListenAndServe(":8080", nil)
	os.Exit(0)
}

// writeKubeconfig turns a rest.Config into a kubeconfig file.
func writeKubeconfig(t *testing.T, rc *rest.Config) string {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{ClientCertificateData: rc.CertData, ClientKeyData: rc.KeyData, Token: rc.BearerToken}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFor(t *testing.T, what string, timeout time.Duration, f func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := f()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last error: %v)", what, lastErr)
}

func TestPrivilegedPodLifecycle(t *testing.T) {
	privileged(t)
	kc := kubetest.Start(t)
	cs := kc.Client
	ctx := t.Context()
	pki := newTestPKI(t)
	kubeconfig := writeKubeconfig(t, kc.Config)
	host, err := url.Parse(kc.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	root, nodes := testNodes(t, 2)
	for i := range nodes {
		n := &nodes[i]
		n.Kubeconfig = kubeconfig
		n.APIServerHost = host.Host
		n.KubeletPort = 20250 + os.Getpid()%1000*2 + i
		n.KubeletServingCert, n.KubeletServingKey, n.ClientCA = pki.ServingCert, pki.ServingKey, pki.CA
		n.Images = map[string]Image{
			"lab.test/server:dev": {Entrypoint: []string{os.Args[0], "-test.run=^TestHelperPodServer$"}},
			"lab.test/sh:dev":     {Entrypoint: []string{"/bin/sh", "-c"}, Cmd: []string{"echo hello from main; exec sleep 3600"}},
		}
	}
	binDir, err := kubetest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	kubeProxy := filepath.Join(binDir, "kube-proxy")
	if _, err := os.Stat(kubeProxy); err != nil {
		t.Fatalf("kube-proxy not built beside kube-apiserver: %v", err)
	}
	for i := range nodes {
		nodes[i].KubeProxyBin = kubeProxy
	}
	if err := SetupFabric(nodes, HostLink{}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := Run(runCtx, n); err != nil {
				t.Errorf("run %s: %v", n.Name, err)
			}
		}()
	}
	stopped := false
	stopNodes := func() {
		if !stopped {
			stopped = true
			stop()
			wg.Wait()
		}
	}
	t.Cleanup(stopNodes)

	// Nodes register Ready with their addresses, podCIDR and a Lease.
	for _, n := range nodes {
		waitFor(t, "node "+n.Name+" Ready", 20*time.Second, func() (bool, error) {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
					return node.Spec.PodCIDR == n.PodCIDR.String() &&
						node.Status.DaemonEndpoints.KubeletEndpoint.Port == int32(n.KubeletPort), nil
				}
			}
			return false, nil
		})
		// the Lease follows the Ready status (as a kubelet's does): a
		// check right after Ready can come between the two
		waitFor(t, "node "+n.Name+" Lease", 20*time.Second, func() (bool, error) {
			_, err := cs.CoordinationV1().Leases("kube-node-lease").Get(ctx, n.Name, metav1.GetOptions{})
			return err == nil, err
		})
	}

	// What the controllers would have created.
	ns := fmt.Sprintf("lt%d", os.Getpid())
	mustCreate(t, func() error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": string(kc.Config.CAData)}}, metav1.CreateOptions{})
		return err
	})

	fieldEnv := func(name, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
	}
	grace := int64(2)
	// envtest runs without the ServiceAccount admission plugin: add the
	// volume it injects on a real cluster.
	expiry := int64(3607)
	apiAccess := corev1.Volume{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
		{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: &expiry}},
		{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
		{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}}},
	}}}}
	server := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "server", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:                      nodes[1].Name,
			ServiceAccountName:            "default",
			TerminationGracePeriodSeconds: &grace,
			Volumes:                       []corev1.Volume{apiAccess},
			Containers: []corev1.Container{{
				Name:         "main",
				Image:        "lab.test/server:dev",
				VolumeMounts: []corev1.VolumeMount{{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
				Env:          []corev1.EnvVar{{Name: helperEnv, Value: "serve"}, fieldEnv("POD_NAME", "metadata.name"), fieldEnv("POD_IP", "status.podIP"), fieldEnv("NODE_NAME", "spec.nodeName")},
				Ports:        []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
					PeriodSeconds: 1,
				},
				LivenessProbe: &corev1.Probe{
					ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(8080)}},
					PeriodSeconds:    1,
					FailureThreshold: 1,
				},
			}},
		},
	}
	client := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "client", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:                      nodes[0].Name,
			TerminationGracePeriodSeconds: &grace,
			Volumes:                       []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers: []corev1.Container{{
				Name: "init", Image: "lab.test/sh:dev", Args: []string{"echo from-init > /mnt/flag"},
				VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/mnt"}},
			}},
			Containers: []corev1.Container{{
				Name: "main", Image: "lab.test/sh:dev",
				VolumeMounts: []corev1.VolumeMount{{Name: "shared", MountPath: "/mnt"}},
			}},
		},
	}
	stubborn := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "stubborn", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:                      nodes[1].Name,
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []corev1.Container{{Name: "main", Image: "lab.test/sh:dev", Args: []string{"trap '' TERM; while true; do sleep 1; done"}}},
		},
	}
	unhealthy := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unhealthy", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName: nodes[1].Name,
			Containers: []corev1.Container{{Name: "main", Image: "lab.test/sh:dev", LivenessProbe: &corev1.Probe{
				ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9)}},
				PeriodSeconds:    1,
				FailureThreshold: 1,
			}}},
		},
	}
	crash := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "crash", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:   nodes[0].Name,
			Containers: []corev1.Container{{Name: "main", Image: "lab.test/sh:dev", Args: []string{"exit 3"}}},
		},
	}
	unmapped := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "unmapped", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:   nodes[0].Name,
			Containers: []corev1.Container{{Name: "main", Image: "nginx:1.27"}},
		},
	}
	hostnet := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "hostnet", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeName:                      nodes[0].Name,
			HostNetwork:                   true,
			TerminationGracePeriodSeconds: &grace,
			Containers:                    []corev1.Container{{Name: "main", Image: "lab.test/sh:dev"}},
		},
	}
	for _, p := range []*corev1.Pod{server, client, crash, unmapped, hostnet, stubborn, unhealthy} {
		mustCreate(t, func() error {
			_, err := cs.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			return err
		})
	}
	getPod := func(name string) *corev1.Pod {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	isReady := func(name string) (bool, error) {
		p := getPod(name)
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("status %+v", p.Status)
	}
	waitFor(t, "server Ready (readiness probe)", 30*time.Second, func() (bool, error) { return isReady("server") })
	waitFor(t, "client Ready", 30*time.Second, func() (bool, error) { return isReady("client") })
	srv, cli := getPod("server"), getPod("client")
	if srv.Status.Phase != corev1.PodRunning || srv.Status.HostIP != nodes[1].NodeIP.String() {
		t.Errorf("server status: phase %s hostIP %s", srv.Status.Phase, srv.Status.HostIP)
	}
	srvIP, err := netip.ParseAddr(srv.Status.PodIP)
	if err != nil || !nodes[1].PodCIDR.Contains(srvIP) {
		t.Fatalf("server podIP %q not in %v", srv.Status.PodIP, nodes[1].PodCIDR)
	}
	cliIP, _ := netip.ParseAddr(cli.Status.PodIP)

	// The server process runs in its pod's cgroup and netns.
	cg := podCgroup(nodes[1].CgroupRoot, nodes[1].Name, string(srv.UID))
	pids := cgroupPids(cg)
	if len(pids) == 0 {
		t.Fatalf("no process in %s", cg)
	}
	var nsSt, procSt syscall.Stat_t
	if err := syscall.Stat(netnsPath(podNetns(nodes[1].Name, string(srv.UID))), &nsSt); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pids[0]), &procSt); err != nil {
		t.Fatal(err)
	}
	if nsSt.Ino != procSt.Ino {
		t.Errorf("server process is not in the pod netns")
	}

	// From the client pod's netns (node 1) to the server pod (node 2).
	httpc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialInNetns(ctx, netnsPath(podNetns(nodes[0].Name, string(cli.UID))), network, addr)
	}}}
	resp, err := httpc.Get("http://" + netip.AddrPortFrom(srvIP, 8080).String() + "/")
	if err != nil {
		t.Fatalf("client pod -> server pod: %v", err)
	}
	var seen map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	apiSvc, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"podName": "server", "hostname": "server", "podIP": srvIP.String(), "nodeName": nodes[1].Name, "k8sHost": apiSvc.Spec.ClusterIP,
		"namespace": ns, "ca": string(kc.Config.CAData),
		"resolv": "nameserver 10.96.0.10\nsearch " + ns + ".svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
	} {
		if seen[k] != want {
			t.Errorf("server pod sees %s = %q, want %q", k, seen[k], want)
		}
	}
	if !strings.HasPrefix(seen["remote"], cliIP.String()+":") {
		t.Errorf("server saw remote %q, want the client pod IP %s", seen["remote"], cliIP)
	}
	// kube-proxy in the node netns serves a ClusterIP (the EndpointSlice is
	// written here: envtest runs no controllers).
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	portName, port, ready := "", int32(8080), true
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "server-1", Labels: map[string]string{discoveryv1.LabelServiceName: "server"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{srvIP.String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}, NodeName: &nodes[1].Name}},
		Ports:       []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ClusterIP "+svc.Spec.ClusterIP+" through kube-proxy", 30*time.Second, func() (bool, error) {
		resp, err := httpc.Get("http://" + svc.Spec.ClusterIP + ":80/")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var got map[string]string
		err = json.NewDecoder(resp.Body).Decode(&got)
		return got["podName"] == "server", err
	})

	// The token is a real one bound to the pod.
	tr, err := cs.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: seen["token"]}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Status.Authenticated || tr.Status.User.Username != "system:serviceaccount:"+ns+":default" ||
		len(tr.Status.User.Extra["authentication.kubernetes.io/pod-name"]) != 1 || tr.Status.User.Extra["authentication.kubernetes.io/pod-name"][0] != "server" {
		t.Errorf("token review: %+v", tr.Status)
	}

	// A hostNetwork pod runs in the node netns, in its own cgroup.
	waitFor(t, "hostnet Ready", 30*time.Second, func() (bool, error) { return isReady("hostnet") })
	hn := getPod("hostnet")
	if hn.Status.PodIP != nodes[0].NodeIP.String() {
		t.Errorf("hostNetwork pod IP %s, want the node IP %s", hn.Status.PodIP, nodes[0].NodeIP)
	}
	hnPids := cgroupPids(podCgroup(nodes[0].CgroupRoot, nodes[0].Name, string(hn.UID)))
	if len(hnPids) == 0 {
		t.Fatal("no process in the hostNetwork pod's cgroup")
	}
	if err := syscall.Stat(netnsPath(nodeNetns(nodes[0].Name)), &nsSt); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", hnPids[0]), &procSt); err != nil {
		t.Fatal(err)
	}
	if nsSt.Ino != procSt.Ino {
		t.Error("hostNetwork pod process is not in the node netns")
	}

	// Kubelet API: logs and exec.
	kubeletURL := fmt.Sprintf("https://127.0.0.1:%d", nodes[0].KubeletPort)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.clientTLS(t)}}
	waitFor(t, "client log line", 10*time.Second, func() (bool, error) {
		resp, err := hc.Get(kubeletURL + "/containerLogs/" + ns + "/client/main?tailLines=5")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && string(b) == "hello from main\n", fmt.Errorf("%d %q", resp.StatusCode, b)
	})
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := noCert.Get(kubeletURL + "/containerLogs/" + ns + "/client/main"); err == nil {
		resp.Body.Close()
		t.Error("kubelet API answered a client without certificate")
	}
	execStdin := func(stdin io.Reader, cmd ...string) (string, error) {
		q := url.Values{"command": cmd, "output": {"1"}, "error": {"1"}}
		if stdin != nil {
			q.Set("input", "1")
		}
		u, _ := url.Parse(kubeletURL + "/exec/" + ns + "/client/main?" + q.Encode())
		rc := &rest.Config{Host: kubeletURL, TLSClientConfig: rest.TLSClientConfig{CAData: pki.CAPEM, CertData: pki.ClientCert, KeyData: pki.ClientKey}}
		ex, err := remotecommand.NewSPDYExecutor(rc, "POST", u)
		if err != nil {
			return "", err
		}
		var out, errOut bytes.Buffer
		err = ex.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Stderr: &errOut})
		return out.String() + errOut.String(), err
	}
	execIn := func(cmd ...string) (string, error) { return execStdin(nil, cmd...) }
	// The init container ran first, into the shared emptyDir.
	if out, err := execIn("cat", "/mnt/flag"); err != nil || out != "from-init\n" {
		t.Errorf("init container output: %q, %v", out, err)
	}
	if st := cli.Status.InitContainerStatuses; len(st) != 1 || st[0].State.Terminated == nil || st[0].State.Terminated.Reason != "Completed" {
		t.Errorf("init container status %+v", st)
	}
	if out, err := execStdin(strings.NewReader("piped\n"), "cat"); err != nil || out != "piped\n" {
		t.Errorf("exec with stdin: %q, %v", out, err)
	}
	// follow streams what the container writes later.
	fctx, fcancel := context.WithTimeout(ctx, 15*time.Second)
	defer fcancel()
	freq, _ := http.NewRequestWithContext(fctx, http.MethodGet, kubeletURL+"/containerLogs/"+ns+"/client/main?follow=true", nil)
	fresp, err := hc.Do(freq)
	if err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewReader(fresp.Body)
	if l, err := lines.ReadString('\n'); l != "hello from main\n" {
		t.Errorf("follow: first line %q, %v", l, err)
	}
	cliPids := cgroupPids(podCgroup(nodes[0].CgroupRoot, nodes[0].Name, string(cli.UID)))
	if len(cliPids) == 0 {
		t.Fatal("no client process")
	}
	if _, err := execIn("sh", "-c", fmt.Sprintf("echo later >> /proc/%d/fd/1", cliPids[0])); err != nil {
		t.Fatal(err)
	}
	if l, err := lines.ReadString('\n'); l != "later\n" {
		t.Errorf("follow: next line %q, %v", l, err)
	}
	fresp.Body.Close()
	out, err := execIn("cat", "/etc/resolv.conf")
	if err != nil || !strings.Contains(out, "nameserver 10.96.0.10") {
		t.Errorf("exec cat /etc/resolv.conf: %q, %v", out, err)
	}
	out, err = execIn("sh", "-c", "hostname; cat /proc/self/cgroup")
	if err != nil || !strings.HasPrefix(out, "client\n") || !strings.Contains(out, "/kubepods/pod"+string(cli.UID)) {
		t.Errorf("exec is not in the pod cgroup: %q, %v", out, err)
	}
	if _, err := execIn("sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "7") {
		t.Errorf("exec exit 7: %v", err)
	}

	// Port-forward to the server pod (node 2's kubelet API).
	rc := &rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: pki.CAPEM, CertData: pki.ClientCert, KeyData: pki.ClientKey}}
	rt, upgrader, err := spdy.RoundTripperFor(rc)
	if err != nil {
		t.Fatal(err)
	}
	pfURL, _ := url.Parse(fmt.Sprintf("https://127.0.0.1:%d/portForward/%s/server", nodes[1].KubeletPort, ns))
	stopPF, readyPF := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(spdy.NewDialer(upgrader, &http.Client{Transport: rt}, http.MethodPost, pfURL),
		[]string{"127.0.0.1"}, []string{"0:8080"}, stopPF, readyPF, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	pfErr := make(chan error, 1)
	go func() { pfErr <- pf.ForwardPorts() }()
	select {
	case <-readyPF:
	case err := <-pfErr:
		t.Fatalf("port-forward: %v", err)
	}
	fwdPorts, err := pf.GetPorts()
	if err != nil || len(fwdPorts) != 1 {
		t.Fatalf("port-forward ports: %v, %v", fwdPorts, err)
	}
	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", fwdPorts[0].Local)); err != nil {
		t.Errorf("GET through port-forward: %v", err)
	} else {
		var got map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if got["podName"] != "server" {
			t.Errorf("port-forward reached %q, want the server pod", got["podName"])
		}
	}
	close(stopPF)

	// Crashing container restarts with back-off; unmapped image waits.
	waitFor(t, "crash restartCount >= 1", 20*time.Second, func() (bool, error) {
		p := getPod("crash")
		if len(p.Status.ContainerStatuses) != 1 {
			return false, nil
		}
		s := p.Status.ContainerStatuses[0]
		return s.RestartCount >= 1 && s.LastTerminationState.Terminated != nil && s.LastTerminationState.Terminated.ExitCode == 3, fmt.Errorf("%+v", s)
	})
	waitFor(t, "unhealthy restarted by its liveness probe", 20*time.Second, func() (bool, error) {
		p := getPod("unhealthy")
		if len(p.Status.ContainerStatuses) != 1 {
			return false, nil
		}
		s := p.Status.ContainerStatuses[0]
		return s.RestartCount >= 1 && s.LastTerminationState.Terminated != nil && strings.Contains(s.LastTerminationState.Terminated.Message, "liveness"), fmt.Errorf("%+v", s)
	})
	if s := getPod("server").Status.ContainerStatuses; len(s) != 1 || s[0].RestartCount != 0 {
		t.Errorf("server restarted although its liveness probe passes: %+v", s)
	}
	waitFor(t, "unmapped ErrImagePull", 10*time.Second, func() (bool, error) {
		p := getPod("unmapped")
		if len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].State.Waiting == nil {
			return false, nil
		}
		w := p.Status.ContainerStatuses[0].State.Waiting
		return w.Reason == "ErrImagePull" && strings.Contains(w.Message, "nginx:1.27") && p.Status.Phase == corev1.PodPending, fmt.Errorf("%+v", w)
	})

	// Deleting the server: SIGTERM, then the netns, cgroup and object go.
	srvPid := pids[0]
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "server", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "server pod object deleted", 20*time.Second, func() (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, "server", metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	if _, err := os.Stat(netnsPath(podNetns(nodes[1].Name, string(srv.UID)))); err == nil {
		t.Error("server netns left after deletion")
	}
	if _, err := os.Stat(cg); err == nil {
		t.Error("server cgroup left after deletion")
	}
	if err := syscall.Kill(srvPid, 0); err == nil {
		t.Errorf("server process %d still alive after deletion", srvPid)
	}

	// A container ignoring SIGTERM is killed after the grace period.
	waitFor(t, "stubborn Ready", 30*time.Second, func() (bool, error) { return isReady("stubborn") })
	start := time.Now()
	if err := cs.CoreV1().Pods(ns).Delete(ctx, "stubborn", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "stubborn pod object deleted", 20*time.Second, func() (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx, "stubborn", metav1.GetOptions{})
		return apierrors.IsNotFound(err), err
	})
	if took := time.Since(start); took < time.Duration(grace)*time.Second {
		t.Errorf("stubborn pod gone after %v, before its %ds grace period", took, grace)
	}

	// Stopping the nodes and Cleanup leave nothing behind.
	stopNodes()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, nodes, pids)
}

func mustCreate(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}
