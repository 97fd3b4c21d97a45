package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/weft-mesh/weft/api/logkey"
)

// LoadBalancerComponent is the source of the Events the allocator records.
const LoadBalancerComponent = "weft-lab-loadbalancer"

// RunLoadBalancers plays the cloud's part for Services of type LoadBalancer
// until ctx is done: each one without a spec.loadBalancerClass gets an
// address of pool in status.loadBalancer.ingress (ipMode VIP, which
// kube-proxy programs on every node), honouring spec.loadBalancerIP, and
// gives it back when it is deleted or changes type (see PlanLoadBalancers).
// Allocations and failures are recorded as Events on the Service.
//
// Any change to a Service triggers a reconcile of all of them, from a fresh
// LIST rather than the watch cache, so the statuses it just wrote are never
// read stale and an address is never handed out twice; a restarted
// allocator rebuilds its table from the statuses the same way. Failed writes
// are retried with back-off.
func RunLoadBalancers(ctx context.Context, client kubernetes.Interface, pool netip.Prefix, log *slog.Logger) error {
	if !pool.IsValid() || !pool.Addr().Is4() {
		return fmt.Errorf("load-balancer pool %v is not an IPv4 prefix", pool)
	}
	if log == nil {
		log = slog.Default()
	}
	log = log.With(logkey.Component, LoadBalancerComponent)
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	lb := &lbController{
		client:   client,
		pool:     pool.Masked(),
		log:      log,
		recorder: broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: LoadBalancerComponent}),
	}

	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	const key = "services" // one key: the pool is shared, so every reconcile looks at all Services
	factory := informers.NewSharedInformerFactory(client, 0)
	enqueue := func(any) { queue.Add(key) }
	if _, err := factory.Core().V1().Services().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	log.Info("load-balancer allocator running", logkey.Addr, lb.pool.String())
	queue.Add(key) // a first reconcile, whatever the watch delivers
	for {
		k, shutdown := queue.Get()
		if shutdown {
			return nil
		}
		if err := lb.reconcile(ctx); err != nil && ctx.Err() == nil {
			log.Warn("reconcile load balancers", logkey.Error, err)
			queue.AddRateLimited(k)
		} else {
			queue.Forget(k)
		}
		queue.Done(k)
	}
}

type lbController struct {
	client   kubernetes.Interface
	pool     netip.Prefix
	log      *slog.Logger
	recorder record.EventRecorder
	// had is the pool address each Service held after the last reconcile
	// (LBService.Had): Events only, never allocation.
	had map[string]netip.Addr
}

// reconcile lists every Service, plans and writes the statuses, and records
// the Events. A failed write is retried by the next reconcile.
func (lb *lbController) reconcile(ctx context.Context) error {
	list, err := lb.client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	svcs := make([]LBService, len(list.Items))
	byKey := make(map[string]*corev1.Service, len(list.Items))
	had := map[string]netip.Addr{}
	for i := range list.Items {
		svcs[i] = LBServiceOf(&list.Items[i])
		svcs[i].Had = lb.had[svcs[i].Key]
		byKey[svcs[i].Key] = &list.Items[i]
		if ips := svcs[i].poolIPs(lb.pool); len(ips) > 0 {
			had[svcs[i].Key] = ips[0]
		}
	}
	defer func() { lb.had = had }()
	var errs []error
	for _, d := range PlanLoadBalancers(lb.pool, svcs) {
		svc := byKey[d.Key]
		if d.Write {
			if err := lb.writeStatus(ctx, svc, d.IP); err != nil {
				errs = append(errs, err)
				continue // no Event for what was not written
			}
			had[d.Key] = d.IP
			addr := "none"
			if d.IP.IsValid() {
				addr = d.IP.String()
			}
			lb.log.Info("load-balancer status written", logkey.Namespace, svc.Namespace, logkey.Name, svc.Name, logkey.Addr, addr)
		}
		if e := d.Event; e != nil {
			typ := corev1.EventTypeNormal
			if e.Warning {
				typ = corev1.EventTypeWarning
			}
			lb.recorder.Event(svc, typ, e.Reason, e.Message)
		}
	}
	return errors.Join(errs...)
}

// writeStatus sets status.loadBalancer to ip (ipMode VIP), or empties it.
// The update carries the listed resourceVersion: a Service changed since
// the list conflicts, and the retry plans from fresh state.
func (lb *lbController) writeStatus(ctx context.Context, svc *corev1.Service, ip netip.Addr) error {
	svc = svc.DeepCopy()
	svc.Status.LoadBalancer = corev1.LoadBalancerStatus{}
	if ip.IsValid() {
		vip := corev1.LoadBalancerIPModeVIP
		svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String(), IPMode: &vip}}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := lb.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, svc, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile: its address is free
	}
	if err != nil {
		return fmt.Errorf("update status of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}

// LBServiceOf is what PlanLoadBalancers needs of a Service.
func LBServiceOf(svc *corev1.Service) LBService {
	s := LBService{
		Key:          svc.Namespace + "/" + svc.Name,
		Created:      svc.CreationTimestamp.Time,
		LoadBalancer: svc.Spec.Type == corev1.ServiceTypeLoadBalancer,
		Requested:    svc.Spec.LoadBalancerIP,
	}
	if svc.Spec.LoadBalancerClass != nil {
		s.Class = *svc.Spec.LoadBalancerClass
	}
	for _, f := range svc.Spec.IPFamilies {
		s.Families = append(s.Families, string(f))
	}
	for _, in := range svc.Status.LoadBalancer.Ingress {
		e := LBIngress{IP: in.IP, Hostname: in.Hostname}
		if in.IPMode != nil {
			e.IPMode = string(*in.IPMode)
		}
		s.Ingress = append(s.Ingress, e)
	}
	return s
}

// LoadBalancersInUse counts the Services whose status holds an address of
// pool (for `weft-lab status`).
func LoadBalancersInUse(svcs []corev1.Service, pool netip.Prefix) int {
	n := 0
	for i := range svcs {
		if len(LBServiceOf(&svcs[i]).poolIPs(pool.Masked())) > 0 {
			n++
		}
	}
	return n
}
