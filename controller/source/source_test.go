package source

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes"
	kubefake "k8s.io/client-go/kubernetes/fake"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weft-mesh/weft/controller/resolve"
	"github.com/weft-mesh/weft/test/syncbuf"
)

// These tests use client-go's fake clientsets for the informer plumbing
// (sorting, coalescing, CRD discovery); the integration test in controller/
// runs the same code against a real apiserver.

// kubeWithDiscovery lets the test change the served resources while the
// Source reads them (the fake discovery has no lock of its own).
type kubeWithDiscovery struct {
	kubernetes.Interface
	d *lockedDiscovery
}

func (k kubeWithDiscovery) Discovery() discovery.DiscoveryInterfaces { return k.d }

// IsWatchListSemanticsUnSupported passes on the fake clientset's marker:
// its watches send no initial-events bookmark.
func (k kubeWithDiscovery) IsWatchListSemanticsUnSupported() bool { return true }

type lockedDiscovery struct {
	*fakediscovery.FakeDiscovery
	mu sync.Mutex
}

func (l *lockedDiscovery) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.FakeDiscovery.ServerResourcesForGroupVersion(gv)
}

func (l *lockedDiscovery) serve(resources map[string][]string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Resources = nil
	for gv, rs := range resources {
		list := &metav1.APIResourceList{GroupVersion: gv}
		for _, r := range rs {
			list.APIResources = append(list.APIResources, metav1.APIResource{Name: r})
		}
		l.Resources = append(l.Resources, list)
	}
}

func waitDirty(t *testing.T, s *Source) {
	t.Helper()
	select {
	case <-s.Dirty():
	case <-time.After(5 * time.Second):
		t.Fatal("no dirty signal")
	}
}

func TestSnapshotAndDirty(t *testing.T) {
	kube := kubefake.NewClientset(
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "s"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "z", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "b"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a", Annotations: map[string]string{"weft.dev/mesh": "enabled", "kubectl.kubernetes.io/last-applied-configuration": "{}"}}},
	)
	disc := &lockedDiscovery{FakeDiscovery: kube.Discovery().(*fakediscovery.FakeDiscovery)}
	disc.serve(map[string][]string{"gateway.networking.k8s.io/v1": {"httproutes", "grpcroutes", "tcproutes"}})
	gw := gwfake.NewSimpleClientset(&gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "r"}})
	logs := &syncbuf.Buffer{}
	s, err := New(Config{Kube: kubeWithDiscovery{Interface: kube, d: disc}, Gateway: gw, Logger: slog.New(slog.NewTextHandler(logs, nil)), RecheckInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshot(); err != ErrNotStarted {
		t.Fatalf("Snapshot before Start: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitDirty(t, s)
	in, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, svc := range in.Services {
		names = append(names, svc.Namespace+"/"+svc.Name)
		if svc.ManagedFields != nil {
			t.Errorf("%s kept managedFields", svc.Name)
		}
	}
	if strings.Join(names, ",") != "a/b,a/z,b/s" {
		t.Fatalf("services %v", names)
	}
	if len(in.Namespaces) != 1 || len(in.Namespaces[0].Annotations) != 1 {
		t.Fatalf("namespaces %+v", in.Namespaces)
	}
	if len(in.HTTPRoutes) != 1 || in.HTTPRoutes[0].Name != "r" {
		t.Fatalf("routes %+v", in.HTTPRoutes)
	}
	if got := strings.Join(s.Kinds(), ","); got != "GRPCRoute,HTTPRoute,TCPRoute" {
		t.Fatalf("kinds %s", got)
	}

	// A burst of changes is one signal.
	for i := 0; i < 20; i++ {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "c", Name: "s" + string(rune('a'+i))}}
		if _, err := kube.CoreV1().Services("c").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		in, _ = s.Snapshot()
		if len(in.Services) == 23 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(in.Services) != 23 {
		t.Fatalf("%d services", len(in.Services))
	}
	waitDirty(t, s)
	select {
	case <-s.Dirty():
		t.Fatal("a second signal for one burst that was already seen")
	case <-time.After(100 * time.Millisecond):
	}

	// The x-k8s kinds are missing: logged once each, despite rechecks.
	time.Sleep(100 * time.Millisecond)
	out := logs.String()
	if strings.Count(out, "kind=XBackend ") != 1 || strings.Count(out, "kind=XBackendTrafficPolicy ") != 1 {
		t.Fatalf("missing kinds not logged exactly once:\n%s", out)
	}

	// The CRD appears: the kind is watched from then on.
	disc.serve(map[string][]string{
		"gateway.networking.k8s.io/v1":         {"httproutes", "grpcroutes", "tcproutes"},
		"gateway.networking.x-k8s.io/v1alpha1": {"xbackends", "xbackendtrafficpolicies"},
	})
	deadline = time.Now().Add(5 * time.Second)
	for len(s.Kinds()) != 5 {
		if time.Now().After(deadline) {
			t.Fatalf("kinds %v after the CRDs appeared", s.Kinds())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "custom resource installed") {
		t.Fatal("appearance not logged")
	}
}

// TestQuietUpdates: through real informers, a Node heartbeat and a pod's
// container status cause no Dirty signal, a route status write only a
// StatusDirty one, and a relevant change a Dirty one.
func TestQuietUpdates(t *testing.T) {
	n := node()
	p := pod()
	r := httpRoute()
	kube := kubefake.NewClientset(n, p)
	gw := gwfake.NewSimpleClientset(r)
	s, ctx := startSource(t, kube, gw, map[string][]string{"gateway.networking.k8s.io/v1": {"httproutes"}})
	waitStats := func(what string, ok func(Stats) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok(s.Stats()) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: stats %+v", what, s.Stats())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitStats("initial adds", func(st Stats) bool { return st.Resolve == 3 })
	waitDirty(t, s)
	quiet := func(what string) {
		t.Helper()
		select {
		case <-s.Dirty():
			t.Fatalf("%s signalled Dirty", what)
		case <-time.After(50 * time.Millisecond):
		}
	}

	for i := 1; i <= 3; i++ {
		n.ResourceVersion = fmt.Sprint(10 + i)
		n.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(t0.Add(time.Duration(i) * 10 * time.Second))
		if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p.ResourceVersion = "11"
	p.Status.ContainerStatuses[0].RestartCount = 1
	if _, err := kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitStats("heartbeats seen", func(st Stats) bool { return st.Ignored == 4 })
	quiet("a heartbeat")

	r.ResourceVersion = "11"
	r.Status.Parents = []gwv1.RouteParentStatus{{ParentRef: gwv1.ParentReference{Name: "echo"}, ControllerName: "weft.dev/mesh-controller"}}
	if _, err := gw.GatewayV1().HTTPRoutes(r.Namespace).UpdateStatus(ctx, r, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.StatusDirty():
	case <-time.After(5 * time.Second):
		t.Fatal("no StatusDirty signal for a status write")
	}
	quiet("a status write")
	in, err := s.StatusSnapshot()
	if err != nil || len(in.HTTPRoutes) != 1 || len(in.Pods) != 0 || len(in.Nodes) != 0 || len(in.HTTPRoutes[0].Status.Parents) != 1 {
		t.Fatalf("status snapshot %+v, %v", in, err)
	}

	n.ResourceVersion = "20"
	n.Status.Addresses[0].Address = "172.30.0.99"
	if _, err := kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDirty(t, s)
	if st := s.Stats(); st != (Stats{Resolve: 4, Status: 1, Ignored: 4}) {
		t.Fatalf("stats %+v", st)
	}

	// a readiness probe flips: a round, told it was readiness alone
	if _, _, err := s.SnapshotChanges(); err != nil {
		t.Fatal(err)
	}
	p.ResourceVersion = "21"
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	if _, err := kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDirty(t, s)
	in, changes, err := s.SnapshotChanges()
	if err != nil {
		t.Fatal(err)
	}
	if !changes.Readiness || changes.Pods || changes.Other || changes.Routes || len(changes.Slices) != 0 {
		t.Fatalf("changes after a readiness flip: %+v", changes)
	}
	if len(in.Pods) != 1 || in.Pods[0].Ready() != corev1.ConditionFalse {
		t.Fatalf("the snapshot's pods %+v do not show the flip", in.Pods)
	}
	if st := s.Stats(); st.Resolve != 5 {
		t.Fatalf("stats %+v", st)
	}
}

// TestPodsCachedSlim: through real informers, pods are cached and listed
// as slim *resolve.Pods, and their updates and deletes reach the handlers
// as such (the listed copy follows them).
func TestPodsCachedSlim(t *testing.T) {
	p := pod()
	p.ManagedFields = []metav1.ManagedFieldsEntry{{Manager: "kubelet"}}
	p.Spec.Containers = []corev1.Container{{Name: "c", Image: "echo"}}
	kube := kubefake.NewClientset(p)
	s, ctx := startSource(t, kube, gwfake.NewSimpleClientset(), nil)
	pods := func(want int) []*resolve.Pod {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			in, c, err := s.SnapshotChanges()
			if err != nil {
				t.Fatal(err)
			}
			if len(in.Pods) == want && c.Pods {
				return in.Pods
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d pods listed, want %d (changes %+v)", len(in.Pods), want, c)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	got := pods(1)[0]
	if got.Name != p.Name || got.NodeName != "node-1" || got.PodIP != "10.244.1.10" || got.ManagedFields != nil ||
		len(got.Conditions) != 1 || got.Conditions[0].Status != corev1.ConditionTrue {
		t.Fatalf("cached pod %+v", got)
	}

	p.ResourceVersion = "11"
	p.Status.PodIP, p.Status.PodIPs = "10.244.1.11", []corev1.PodIP{{IP: "10.244.1.11"}}
	if _, err := kube.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got = pods(1)[0]; got.PodIP != "10.244.1.11" || got.PodIPs[0] != "10.244.1.11" {
		t.Fatalf("updated pod listed as %+v", got)
	}

	if err := kube.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pods(0)
}

// startSource starts a Source on fake clients whose discovery serves
// kinds (group version -> resources); it stops when the test ends, and ctx
// is the test's until then.
func startSource(t *testing.T, kube *kubefake.Clientset, gw *gwfake.Clientset, kinds map[string][]string) (*Source, context.Context) {
	t.Helper()
	disc := &lockedDiscovery{FakeDiscovery: kube.Discovery().(*fakediscovery.FakeDiscovery)}
	if kinds != nil {
		disc.serve(kinds)
	}
	s, err := New(Config{Kube: kubeWithDiscovery{Interface: kube, d: disc}, Gateway: gw, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s, ctx
}
