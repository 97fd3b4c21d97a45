// Package scale is the control plane's scale benchmark (issue #17): a real
// weft controller (informers, resolve, push server) against a real
// kube-apiserver holding a generated cluster (Services, EndpointSlices,
// pods, HTTPRoutes, Nodes), with one simulated agent per node (a gRPC
// stream that ACKs like an agent and records when it received each version
// and how many bytes it was). Run it with `make bench-scale`; see
// scale_test.go for the phases and figures.
//
// The generator (this file) writes the cluster and makes the changes; the
// controller and the agents run as child processes of the benchmark (the
// test binary re-executed with WEFT_SCALE_ROLE), so the controller's CPU
// and RSS are its own.
package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/mesh"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
)

// SeqAnnotation carries the sequence number of the benchmark's change on
// the object it changed; the controller side reports the numbers each
// resolution saw.
const SeqAnnotation = "bench.weft.dev/seq"

// Scale is the size of the generated cluster.
type Scale struct {
	Nodes      int
	Namespaces int
	Services   int
	// Endpoints and Routes per Service.
	Endpoints int
	Routes    int
	// Policies: an AuthorizationPolicy per Service, selecting its pods
	// (WEFT_SCALE_AUTHZ=1).
	Policies bool
}

// Target is the size: 10,000 Services, 100,000 endpoints, 20,000
// routes, 1,000 nodes.
var Target = Scale{Nodes: 1000, Namespaces: 100, Services: 10000, Endpoints: 10, Routes: 2}

func (s Scale) String() string {
	str := fmt.Sprintf("services=%d endpoints=%d routes=%d nodes=%d", s.Services, s.Services*s.Endpoints, s.Services*s.Routes, s.Nodes)
	if s.Policies {
		str += fmt.Sprintf(" policies=%d", s.Services)
	}
	return str
}

func nodeName(n int) string { return "node-" + strconv.Itoa(n) }

func (s Scale) namespace(svc int) string { return "ns-" + strconv.Itoa(svc%s.Namespaces) }

func svcName(svc int) string { return "svc-" + strconv.Itoa(svc) }

// pod returns the name, node and IP of endpoint e of Service svc: pods are
// spread round-robin over the nodes.
func (s Scale) pod(svc, e int) (name, node, ip string) {
	n := svc*s.Endpoints + e
	return svcName(svc) + "-" + strconv.Itoa(e), nodeName(n % s.Nodes), fmt.Sprintf("10.%d.%d.%d", 100+n/65536, n/256%256, n%256)
}

// Slice is the EndpointSlice of Service svc; ready[e] false marks endpoint
// e not ready (churn flips them).
func (s Scale) Slice(svc int, notReady int) *discoveryv1.EndpointSlice {
	ns, name := s.namespace(svc), svcName(svc)
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr[int32](8080), Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for e := 0; e < s.Endpoints; e++ {
		pod, node, ip := s.pod(svc, e)
		ready := e != notReady
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: ptr(node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(ready), Serving: ptr(ready), Terminating: ptr(false)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod}})
	}
	return es
}

// Route is route r of Service svc: a path prefix, split by weight between
// the Service and another one of its namespace.
func (s Scale) Route(svc, r int, weight int32) *gwv1.HTTPRoute {
	other := (svc + s.Namespaces) % s.Services
	ref := func(n int, w int32) gwv1.HTTPBackendRef {
		return gwv1.HTTPBackendRef{BackendRef: gwv1.BackendRef{BackendObjectReference: gwv1.BackendObjectReference{
			Name: gwv1.ObjectName(svcName(n)), Port: ptr(gwv1.PortNumber(80))}, Weight: ptr(w)}}
	}
	return &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.namespace(svc), Name: fmt.Sprintf("route-%d-%d", svc, r)},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{
				Group: ptr(gwv1.Group("")), Kind: ptr(gwv1.Kind("Service")), Name: gwv1.ObjectName(svcName(svc))}}},
			Rules: []gwv1.HTTPRouteRule{{
				Matches:     []gwv1.HTTPRouteMatch{{Path: &gwv1.HTTPPathMatch{Type: ptr(gwv1.PathMatchPathPrefix), Value: ptr("/r" + strconv.Itoa(r))}}},
				BackendRefs: []gwv1.HTTPBackendRef{ref(svc, weight), ref(other, 20)},
			}},
		},
	}
}

// Load writes the cluster: namespaces (enrolled), nodes, then per Service
// its pods (with a Running, Ready status), Service, EndpointSlice and
// routes, with workers concurrent requests. progress, when set, is called
// with the number of Services written so far.
func Load(ctx context.Context, kube kubernetes.Interface, gw gwclient.Interface, dyn dynamic.Interface, s Scale, workers int, progress func(int)) error {
	for i := 0; i < s.Namespaces; i++ {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns-" + strconv.Itoa(i), Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}}
		if err := retry(ctx, func() error { _, err := kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); return err }); err != nil {
			return fmt.Errorf("create namespace %s: %w", ns.Name, err)
		}
		// the callers the policies allow (a source naming a service
		// account that does not exist is not accepted)
		for c := 0; s.Policies && c < maxCallers; c++ {
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "caller-" + strconv.Itoa(c)}}
			if err := retry(ctx, func() error {
				_, err := kube.CoreV1().ServiceAccounts(ns.Name).Create(ctx, sa, metav1.CreateOptions{})
				return err
			}); err != nil {
				return fmt.Errorf("create service account %s/%s: %w", ns.Name, sa.Name, err)
			}
		}
	}
	jobs := make(chan func() error)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
		done  atomic.Int64
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for job := range jobs {
				if err := job(); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
	send := func(job func() error) bool {
		select {
		case jobs <- job:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for n := 0; n < s.Nodes; n++ {
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: nodeName(n)},
			Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.30.%d.%d", n/200, 10+n%200)}}},
		}
		if !send(func() error {
			if err := retry(ctx, func() error { _, err := kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); return err }); err != nil {
				return fmt.Errorf("create node %s: %w", node.Name, err)
			}
			return nil
		}) {
			break
		}
	}
	for svc := 0; svc < s.Services; svc++ {
		if !send(func() error {
			if err := s.loadService(ctx, kube, gw, svc); err != nil {
				return err
			}
			if s.Policies {
				if err := retry(ctx, func() error {
					_, err := dyn.Resource(policyv1a1.GroupVersionResource).Namespace(s.namespace(svc)).Create(ctx, s.Policy(svc, 1, 0), metav1.CreateOptions{})
					return err
				}); err != nil {
					return fmt.Errorf("create authorization policy of %s/%s: %w", s.namespace(svc), svcName(svc), err)
				}
			}
			if d := done.Add(1); progress != nil && d%1000 == 0 {
				progress(int(d))
			}
			return nil
		}) {
			break
		}
	}
	close(jobs)
	wg.Wait()
	return first
}

// retry runs f until it succeeds, up to 8 times on errors an overloaded
// apiserver gives (timeouts, 429, 5xx, conflicts); AlreadyExists is success
// (a load resumed after a failure).
func retry(ctx context.Context, f func() error) error {
	var err error
	for i := 0; i < 8; i++ {
		err = f()
		if err == nil || apierrors.IsAlreadyExists(err) {
			return nil
		}
		if !apierrors.IsTimeout(err) && !apierrors.IsServerTimeout(err) && !apierrors.IsTooManyRequests(err) &&
			!apierrors.IsInternalError(err) && !apierrors.IsServiceUnavailable(err) && !apierrors.IsConflict(err) && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(i+1) * 500 * time.Millisecond):
		}
	}
	return err
}

// podObject is the pod of endpoint e of Service svc, as created.
func (s Scale) podObject(svc, e int) *corev1.Pod {
	pod, node, _ := s.pod(svc, e)
	name := svcName(svc)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{NodeName: node, ServiceAccountName: name, AutomountServiceAccountToken: ptr(false),
			Containers: []corev1.Container{{Name: "app", Image: "ghcr.io/weft-mesh/echo:dev"}}},
	}
}

// runningStatus is the status of a running pod with ip, Ready or not.
func runningStatus(ip string, ready bool) corev1.PodStatus {
	return corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: readyStatus(ready)}}}
}

func readyStatus(ready bool) corev1.ConditionStatus {
	if ready {
		return corev1.ConditionTrue
	}
	return corev1.ConditionFalse
}

func (s Scale) loadService(ctx context.Context, kube kubernetes.Interface, gw gwclient.Interface, svc int) error {
	ns := s.namespace(svc)
	for e := 0; e < s.Endpoints; e++ {
		pod, _, ip := s.pod(svc, e)
		var p *corev1.Pod
		if err := retry(ctx, func() error {
			got, err := kube.CoreV1().Pods(ns).Create(ctx, s.podObject(svc, e), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				got, err = kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
			}
			p = got
			return err
		}); err != nil {
			return fmt.Errorf("create pod %s/%s: %w", ns, pod, err)
		}
		if err := retry(ctx, func() error {
			if p.Status.PodIP == ip {
				return nil
			}
			p.Status = runningStatus(ip, true)
			_, err := kube.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) {
				if got, gerr := kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{}); gerr == nil {
					p = got
				}
			}
			return err
		}); err != nil {
			return fmt.Errorf("pod status %s/%s: %w", ns, pod, err)
		}
	}
	return s.loadRest(ctx, kube, gw, svc)
}

// loadRest writes a Service's Service, EndpointSlice and routes.
func (s Scale) loadRest(ctx context.Context, kube kubernetes.Interface, gw gwclient.Interface, svc int) error {
	ns, name := s.namespace(svc), svcName(svc)
	if err := retry(ctx, func() error {
		_, err := kube.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name},
				Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080), AppProtocol: ptr("http")}}},
		}, metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("create service %s/%s: %w", ns, name, err)
	}
	if err := retry(ctx, func() error {
		_, err := kube.DiscoveryV1().EndpointSlices(ns).Create(ctx, s.Slice(svc, -1), metav1.CreateOptions{})
		return err
	}); err != nil {
		return fmt.Errorf("create endpointslice of %s/%s: %w", ns, name, err)
	}
	for r := 0; r < s.Routes; r++ {
		if err := retry(ctx, func() error {
			_, err := gw.GatewayV1().HTTPRoutes(ns).Create(ctx, s.Route(svc, r, 80), metav1.CreateOptions{})
			return err
		}); err != nil {
			return fmt.Errorf("create route %d of %s/%s: %w", r, ns, name, err)
		}
	}
	return nil
}

// RouteWeight is a new weight for route r of Service svc, other than the
// one it has (the cluster may come from an earlier run).
func (s Scale) RouteWeight(ctx context.Context, gw gwclient.Interface, svc, r int) (int32, error) {
	rt := s.Route(svc, r, 0)
	cur, err := gw.GatewayV1().HTTPRoutes(rt.Namespace).Get(ctx, rt.Name, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("get route %s/%s: %w", rt.Namespace, rt.Name, err)
	}
	var w int32
	if rules := cur.Spec.Rules; len(rules) > 0 && len(rules[0].BackendRefs) > 0 && rules[0].BackendRefs[0].Weight != nil {
		w = *rules[0].BackendRefs[0].Weight
	}
	return w%900 + 101, nil
}

// ChangeRoute sets the weight of route r of Service svc (a spec change:
// the Service port's route table changes) and marks it with seq.
func (s Scale) ChangeRoute(ctx context.Context, gw gwclient.Interface, svc, r int, weight int32, seq int) error {
	rt := s.Route(svc, r, weight)
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{SeqAnnotation: strconv.Itoa(seq)}},
		"spec":     map[string]any{"rules": rt.Spec.Rules},
	})
	if err != nil {
		return err
	}
	if _, err := gw.GatewayV1().HTTPRoutes(rt.Namespace).Patch(ctx, rt.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("change route %s/%s: %w", rt.Namespace, rt.Name, err)
	}
	return nil
}

// maxCallers is how many service accounts a policy may allow: Load creates
// caller-0 ... caller-<maxCallers-1> in each namespace.
const maxCallers = 2

// Policy is the AuthorizationPolicy of Service svc: it selects the
// Service's pods and allows the service accounts caller-0 ...
// caller-<callers-1> (at most maxCallers) of its namespace; seq, when not
// 0, is its SeqAnnotation.
func (s Scale) Policy(svc, callers, seq int) *unstructured.Unstructured {
	var sources []policyv1a1.AuthorizationSource
	for c := range callers {
		sources = append(sources, policyv1a1.AuthorizationSource{Type: policyv1a1.SourceServiceAccount,
			ServiceAccount: &policyv1a1.AuthorizationSourceServiceAccount{Name: "caller-" + strconv.Itoa(c)}})
	}
	p := &policyv1a1.AuthorizationPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.namespace(svc), Name: svcName(svc)},
		Spec: policyv1a1.AuthorizationPolicySpec{
			TargetRefs: []policyv1a1.PolicyTargetReferenceWithLabelSelectors{{Kind: "Pod",
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": svcName(svc)}}}},
			Action: policyv1a1.ActionAllow, EnforcementLevel: policyv1a1.LevelNetwork,
			Rules: []policyv1a1.AuthorizationRule{{Sources: sources}},
		},
	}
	if seq != 0 {
		p.Annotations = map[string]string{SeqAnnotation: strconv.Itoa(seq)}
	}
	u, err := policyv1a1.ToUnstructured(p)
	if err != nil {
		panic(err) // a fixed, valid object
	}
	return u
}

// ChangePolicy sets the callers of Service svc's AuthorizationPolicy, with
// seq.
func (s Scale) ChangePolicy(ctx context.Context, dyn dynamic.Interface, svc, callers, seq int) error {
	p := s.Policy(svc, callers, seq)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": p.GetAnnotations()}, "spec": p.Object["spec"]})
	if err != nil {
		return err
	}
	if _, err := dyn.Resource(policyv1a1.GroupVersionResource).Namespace(p.GetNamespace()).Patch(ctx, p.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("change authorization policy %s/%s: %w", p.GetNamespace(), p.GetName(), err)
	}
	return nil
}

// PolicyCallers is how many callers Service svc's AuthorizationPolicy
// allows now.
func (s Scale) PolicyCallers(ctx context.Context, dyn dynamic.Interface, svc int) (int, error) {
	u, err := dyn.Resource(policyv1a1.GroupVersionResource).Namespace(s.namespace(svc)).Get(ctx, svcName(svc), metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("get authorization policy of %s/%s: %w", s.namespace(svc), svcName(svc), err)
	}
	p, err := policyv1a1.FromUnstructured(u)
	if err != nil || len(p.Spec.Rules) == 0 {
		return 0, fmt.Errorf("authorization policy of %s/%s: %v", s.namespace(svc), svcName(svc), err)
	}
	return len(p.Spec.Rules[0].Sources), nil
}

// PolicyNodes are the nodes of Service svc's pods (those its
// AuthorizationPolicy reaches).
func (s Scale) PolicyNodes(svc int) []string {
	var nodes []string
	for e := 0; e < s.Endpoints; e++ {
		_, node, _ := s.pod(svc, e)
		if !slices.Contains(nodes, node) {
			nodes = append(nodes, node)
		}
	}
	return nodes
}

// ChangeEndpoint marks endpoint notReady of Service svc not ready (-1:
// all ready) in its EndpointSlice, with seq.
func (s Scale) ChangeEndpoint(ctx context.Context, kube kubernetes.Interface, svc, notReady, seq int) error {
	es := s.Slice(svc, notReady)
	patch, err := json.Marshal(map[string]any{
		"metadata":  map[string]any{"annotations": map[string]string{SeqAnnotation: strconv.Itoa(seq)}},
		"endpoints": es.Endpoints,
	})
	if err != nil {
		return err
	}
	if _, err := kube.DiscoveryV1().EndpointSlices(es.Namespace).Patch(ctx, es.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("change endpointslice %s/%s: %w", es.Namespace, es.Name, err)
	}
	return nil
}

// SetPodReady writes the Ready condition of the pod of endpoint e of
// Service svc, as its kubelet would when its readiness probe flips.
func (s Scale) SetPodReady(ctx context.Context, kube kubernetes.Interface, svc, e int, ready bool) error {
	pod, _, _ := s.pod(svc, e)
	patch, err := json.Marshal(map[string]any{
		"status": map[string]any{"conditions": []corev1.PodCondition{{Type: corev1.PodReady, Status: readyStatus(ready)}}},
	})
	if err != nil {
		return err
	}
	ns := s.namespace(svc)
	if _, err := kube.CoreV1().Pods(ns).Patch(ctx, pod, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return fmt.Errorf("pod readiness %s/%s: %w", ns, pod, err)
	}
	return nil
}

// ReplacePod deletes the pod of endpoint e of Service svc and creates it
// again, running with the same IP and not Ready yet: a pod restarted by its
// controller, as a rolling update or a node drain does one pod at a time.
func (s Scale) ReplacePod(ctx context.Context, kube kubernetes.Interface, svc, e int) error {
	ns := s.namespace(svc)
	pod, _, ip := s.pod(svc, e)
	pods := kube.CoreV1().Pods(ns)
	if err := pods.Delete(ctx, pod, metav1.DeleteOptions{GracePeriodSeconds: ptr[int64](0)}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", ns, pod, err)
	}
	p, err := pods.Create(ctx, s.podObject(svc, e), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", ns, pod, err)
	}
	p.Status = runningStatus(ip, false)
	if _, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pod status %s/%s: %w", ns, pod, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
