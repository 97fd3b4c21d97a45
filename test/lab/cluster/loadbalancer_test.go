package cluster_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/weft-mesh/weft/test/kubetest"
	"github.com/weft-mesh/weft/test/lab/cluster"
	"github.com/weft-mesh/weft/test/lab/labtest"
	"github.com/weft-mesh/weft/test/syncbuf"
)

// TestIntegrationLoadBalancerAllocator runs the allocator against a real
// kube-apiserver: allocation, spec.loadBalancerIP, loadBalancerClass,
// release on type change and deletion, exhaustion, and a restart that keeps
// every address where it was, each with the statuses and Events a cloud
// controller leaves. (It needs no root: not a TestPrivileged test.)
func TestIntegrationLoadBalancerAllocator(t *testing.T) {
	kc := kubetest.Start(t)
	cs := kc.Client
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	pool := netip.MustParsePrefix("172.30.200.0/29") // .1 to .6
	var logs syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	start := func() (stop func()) {
		actx, acancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- cluster.RunLoadBalancers(actx, cs, pool, log) }()
		return func() {
			acancel()
			if err := <-done; err != nil {
				t.Errorf("RunLoadBalancers: %v", err)
			}
		}
	}
	const ns = "lb"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svcs := cs.CoreV1().Services(ns)
	create := func(name string, f func(*corev1.Service)) {
		t.Helper()
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeLoadBalancer,
				Selector: map[string]string{"app": name},
				Ports:    []corev1.ServicePort{{Port: 80}},
			},
		}
		if f != nil {
			f(svc)
		}
		if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create service %s: %v", name, err)
		}
	}
	// ingress is a Service's status as "ip/ipMode" ("" for none).
	ingress := func(name string) string {
		svc, err := svcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "get: " + err.Error()
		}
		var parts []string
		for _, in := range svc.Status.LoadBalancer.Ingress {
			mode := ""
			if in.IPMode != nil {
				mode = string(*in.IPMode)
			}
			parts = append(parts, in.IP+"/"+mode)
		}
		return strings.Join(parts, ",")
	}
	waitStatuses := func(want map[string]string) {
		t.Helper()
		if err := labtest.Poll(ctx, 30*time.Second, func(ctx context.Context) (bool, string, error) {
			var wrong []string
			for name, w := range want {
				if got := ingress(name); got != w {
					wrong = append(wrong, fmt.Sprintf("%s=%q (want %q)", name, got, w))
				}
			}
			return len(wrong) == 0, strings.Join(wrong, ", "), nil
		}); err != nil {
			t.Fatalf("statuses: %v\nallocator log:\n%s", err, logs.String())
		}
	}
	waitEvent := func(name, typ, reason, msg string) {
		t.Helper()
		if err := labtest.Poll(ctx, 30*time.Second, func(ctx context.Context) (bool, string, error) {
			evs, err := events(ctx, cs, ns, name)
			for _, e := range evs {
				if e.Type == typ && e.Reason == reason && strings.Contains(e.Message, msg) && e.Source.Component == cluster.LoadBalancerComponent {
					return true, "", nil
				}
			}
			return false, fmt.Sprintf("events of %s: %v %v", name, summarize(evs), err), nil
		}); err != nil {
			t.Fatalf("no %s %s event %q on %s: %v", typ, reason, msg, name, err)
		}
	}
	vip := func(ip string) string { return ip + "/VIP" }

	// Services that exist before the allocator starts get addresses too.
	create("a", nil)
	stop := start()
	create("b", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "172.30.200.5" })
	create("classy", func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To("example.com/other-lb") })
	create("clusterip", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeClusterIP })
	waitStatuses(map[string]string{"a": vip("172.30.200.1"), "b": vip("172.30.200.5")})
	create("c", nil)
	create("wants-b", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "172.30.200.5" })
	create("outside", func(s *corev1.Service) { s.Spec.LoadBalancerIP = "10.9.9.9" })
	waitStatuses(map[string]string{"c": vip("172.30.200.2")})
	waitEvent("a", corev1.EventTypeNormal, cluster.ReasonIPAllocated, `Assigned IP ["172.30.200.1"]`)
	waitEvent("b", corev1.EventTypeNormal, cluster.ReasonIPAllocated, `Assigned IP ["172.30.200.5"]`)
	waitEvent("wants-b", corev1.EventTypeWarning, cluster.ReasonAllocationFailed, `spec.loadBalancerIP 172.30.200.5 is already in use by Service "lb/b"`)
	waitEvent("outside", corev1.EventTypeWarning, cluster.ReasonAllocationFailed, "not in the lab's load-balancer pool 172.30.200.0/29")

	// A restart, with changes while the allocator is down: a deleted, b no
	// longer a LoadBalancer, a new Service. Nothing moves that need not:
	// c keeps .2; d gets a's .1; wants-b gets .5 once b has given it back.
	stop()
	if err := svcs.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	b, err := svcs.Get(ctx, "b", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Spec.Type, b.Spec.LoadBalancerIP = corev1.ServiceTypeClusterIP, ""
	if _, err := svcs.Update(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	create("d", nil)
	stop = start()
	defer func() { stop() }()
	// (The apiserver empties status.loadBalancer when the type changes.)
	waitStatuses(map[string]string{"b": "", "c": vip("172.30.200.2"), "d": vip("172.30.200.1"), "wants-b": vip("172.30.200.5"), "outside": ""})
	waitEvent("wants-b", corev1.EventTypeNormal, cluster.ReasonIPAllocated, `Assigned IP ["172.30.200.5"]`)
	// While the allocator runs, it tells of a type change in an Event.
	d, err := svcs.Get(ctx, "d", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Type = corev1.ServiceTypeNodePort
	if _, err := svcs.Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitEvent("d", corev1.EventTypeNormal, cluster.ReasonIPReleased, "Released IP 172.30.200.1: the Service is no longer of type LoadBalancer")
	waitStatuses(map[string]string{"d": ""})

	// Exhaustion: .1, .3, .4 and .6 are left for five Services; the
	// youngest waits until one of the others is deleted.
	for _, n := range []string{"e", "f", "g", "h"} {
		create(n, nil)
	}
	waitStatuses(map[string]string{"e": vip("172.30.200.1"), "f": vip("172.30.200.3"), "g": vip("172.30.200.4"), "h": vip("172.30.200.6")})
	create("i", nil)
	waitEvent("i", corev1.EventTypeWarning, cluster.ReasonAllocationFailed, "no available IPs in the lab's load-balancer pool 172.30.200.0/29")
	if err := svcs.Delete(ctx, "f", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStatuses(map[string]string{"i": vip("172.30.200.3")})

	// Another implementation's and non-LoadBalancer Services were never
	// touched, and no address is held twice. (Only the allocator's Events
	// count: kube-apiserver's ClusterIP repair loop may warn about a
	// Service it raced with at creation, which is not ours to judge.)
	for _, name := range []string{"classy", "clusterip"} {
		if got := ingress(name); got != "" {
			t.Errorf("%s: status %q, want none", name, got)
		}
		evs, err := events(ctx, cs, ns, name)
		var ours []corev1.Event
		for _, e := range evs {
			if e.Source.Component == cluster.LoadBalancerComponent {
				ours = append(ours, e)
			}
		}
		if err != nil || len(ours) > 0 {
			t.Errorf("%s: allocator events %v %v, want none", name, summarize(ours), err)
		}
	}
	list, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, s := range list.Items {
		for _, in := range s.Status.LoadBalancer.Ingress {
			if other, ok := seen[in.IP]; ok {
				t.Errorf("%s held by %s and %s", in.IP, other, s.Name)
			}
			seen[in.IP] = s.Name
		}
	}
	if got := cluster.LoadBalancersInUse(list.Items, pool); got != 6 {
		t.Errorf("LoadBalancersInUse = %d, want 6 (c, e, g, h, i, wants-b)", got)
	}
}

func events(ctx context.Context, cs kubernetes.Interface, ns, name string) ([]corev1.Event, error) {
	l, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String()})
	if err != nil {
		return nil, err
	}
	return l.Items, nil
}

func summarize(evs []corev1.Event) []string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprintf("%s %s %q (%s)", e.Type, e.Reason, e.Message, e.Source.Component))
	}
	return s
}
