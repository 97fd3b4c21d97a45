package node

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/weft-mesh/weft/test/kubetest"
	"github.com/weft-mesh/weft/test/lab/cluster"
)

// TestPrivilegedLoadBalancerThroughKubeProxy is the whole path a client
// outside the cluster takes, with the lab's own pieces and a real
// kube-apiserver: the allocator gives two LoadBalancer Services addresses
// of the pool, the real kube-proxy on each node programs them, and the host
// connects through the host link to a pod on node 2. externalTrafficPolicy
// Cluster enters at node 1 (the pool route) and is masqueraded there;
// Local is routed by RouteLoadBalancers straight to node 2, which keeps the
// host's address, until its endpoint is no longer ready.
func TestPrivilegedLoadBalancerThroughKubeProxy(t *testing.T) {
	privileged(t)
	kc := kubetest.Start(t)
	cs := kc.Client
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	pki := newTestPKI(t)
	kubeconfig := writeKubeconfig(t, kc.Config)
	apiHost, err := url.Parse(kc.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	binDir, err := kubetest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	kubeProxy := filepath.Join(binDir, "kube-proxy")
	if _, err := os.Stat(kubeProxy); err != nil {
		t.Fatalf("kube-proxy not built beside kube-apiserver: %v", err)
	}
	root, nodes := testNodes(t, 2)
	host := testHostLink(t, nodes)
	for i := range nodes {
		n := &nodes[i]
		n.Kubeconfig = kubeconfig
		n.APIServerHost = apiHost.Host
		n.KubeletPort = 20250 + os.Getpid()%1000*2 + i
		n.KubeletServingCert, n.KubeletServingKey, n.ClientCA = pki.ServingCert, pki.ServingKey, pki.CA
		n.KubeProxyBin = kubeProxy
		n.Images = map[string]Image{"lab.test/server:dev": {Entrypoint: []string{os.Args[0], "-test.run=^TestHelperPodServer$"}}}
	}
	if err := SetupFabric(nodes, host); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if err := Run(runCtx, n); err != nil {
				t.Errorf("run %s: %v", n.Name, err)
			}
		})
	}
	wg.Go(func() {
		if err := cluster.RunLoadBalancers(runCtx, cs, host.LoadBalancerPool, nil); err != nil {
			t.Errorf("RunLoadBalancers: %v", err)
		}
	})
	wg.Go(func() {
		if err := RouteLoadBalancers(runCtx, cs, host, nodes); err != nil {
			t.Errorf("RouteLoadBalancers: %v", err)
		}
	})
	t.Cleanup(func() { stop(); wg.Wait() })

	ns := fmt.Sprintf("lb%d", os.Getpid())
	mustCreate(t, func() error {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		return err
	})
	grace := int64(1)
	mustCreate(t, func() error {
		_, err := cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "server"},
			Spec: corev1.PodSpec{
				NodeName:                      nodes[1].Name,
				TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{
					Name: "main", Image: "lab.test/server:dev",
					Env:   []corev1.EnvVar{{Name: helperEnv, Value: "serve"}},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					ReadinessProbe: &corev1.Probe{
						ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromString("http")}},
						PeriodSeconds: 1,
					},
				}},
			},
		}, metav1.CreateOptions{})
		return err
	})
	var podIP string
	waitFor(t, "server pod Ready", 60*time.Second, func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "server", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		podIP = p.Status.PodIP
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, fmt.Errorf("status %+v", p.Status)
	})

	// Two Services of the pod, and their EndpointSlices (envtest runs no
	// controllers): externalTrafficPolicy Cluster and Local.
	ready := true
	for _, policy := range []corev1.ServiceExternalTrafficPolicy{corev1.ServiceExternalTrafficPolicyCluster, corev1.ServiceExternalTrafficPolicyLocal} {
		name := strings.ToLower(string(policy))
		mustCreate(t, func() error {
			_, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: corev1.ServiceSpec{
					Type:                  corev1.ServiceTypeLoadBalancer,
					ExternalTrafficPolicy: policy,
					Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
				},
			}, metav1.CreateOptions{})
			return err
		})
		mustCreate(t, func() error {
			_, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, lbTestSlice(name, podIP, nodes[1].Name, ready), metav1.CreateOptions{})
			return err
		})
	}
	lbIP := func(name string) (netip.Addr, error) {
		svc, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return netip.Addr{}, err
		}
		if len(svc.Status.LoadBalancer.Ingress) != 1 {
			return netip.Addr{}, fmt.Errorf("ingress %+v", svc.Status.LoadBalancer.Ingress)
		}
		return netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
	}
	addrs := map[string]netip.Addr{}
	for _, name := range []string{"cluster", "local"} {
		waitFor(t, name+" LoadBalancer address", 30*time.Second, func() (bool, error) {
			ip, err := lbIP(name)
			addrs[name] = ip
			return err == nil && host.LoadBalancerPool.Contains(ip), err
		})
	}
	// What the pod saw as the source of a request from the host.
	httpc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	remote := func(to netip.Addr) (string, error) {
		resp, err := httpc.Get("http://" + netip.AddrPortFrom(to, 80).String() + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var seen map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&seen); err != nil {
			return "", err
		}
		h, _, err := net.SplitHostPort(seen["remote"])
		return h, err
	}
	for name, want := range map[string]string{
		"cluster": nodes[0].NodeIP.String(),  // entered at node 1, masqueraded to reach node 2
		"local":   host.Addr.Addr().String(), // routed to node 2, the client's address kept
	} {
		var got string
		waitFor(t, fmt.Sprintf("host -> %s %v through kube-proxy", name, addrs[name]), 60*time.Second, func() (bool, error) {
			var err error
			got, err = remote(addrs[name])
			return err == nil, err
		})
		if got != want {
			t.Errorf("host -> %s: the pod saw %s, want %s", name, got, want)
		}
	}
	hostRoute := func(ip netip.Addr) string {
		out, _ := exec.Command("ip", "-4", "-o", "route", "show", "table", "main", netip.PrefixFrom(ip, 32).String()).Output()
		return strings.TrimSpace(string(out))
	}
	if got, want := hostRoute(addrs["local"]), addrs["local"].String()+" via "+nodes[1].NodeIP.String()+" dev "+host.Name; !strings.HasPrefix(got, want) {
		t.Errorf("route of the Local address: %q, want %q", got, want)
	}
	if got := hostRoute(addrs["cluster"]); got != "" {
		t.Errorf("the Cluster address has a /32 route %q; it belongs on the pool route", got)
	}

	// Its endpoint no longer ready, the Local address goes back to the pool
	// route (to node 1, which has no endpoint: dropped, as behind a cloud
	// load balancer whose health checks fail).
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, lbTestSlice("local", podIP, nodes[1].Name, false), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the Local address's /32 removed", 30*time.Second, func() (bool, error) {
		r := hostRoute(addrs["local"])
		return r == "", fmt.Errorf("route %q", r)
	})

	// Cleanup after a crash: the nodes stop, then only the state is left.
	stop()
	wg.Wait()
	if err := Cleanup(root); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(host.Name); err == nil {
		t.Errorf("host link %s left behind", host.Name)
	}
	for _, p := range []string{"172.30.100.", "172.30.201."} {
		if got := routeLines(t, p); len(got) > 0 {
			t.Errorf("host routes left behind: %q", got)
		}
	}
	assertNothingLeft(t, nodes, nil)
}

// lbTestSlice is the EndpointSlice of Service name: the pod on node.
func lbTestSlice(name, podIP, node string, ready bool) *discoveryv1.EndpointSlice {
	portName, port := "http", int32(8080)
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{podIP},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName:   &node,
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Port: &port}},
	}
}
