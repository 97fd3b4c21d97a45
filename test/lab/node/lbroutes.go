package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os/exec"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/weft-mesh/weft/api/logkey"
)

// RouteLoadBalancers keeps, until ctx is done, one host route per
// LoadBalancer address of host.LoadBalancerPool whose Service has
// externalTrafficPolicy Local: a /32 through the host link to a node with a
// ready endpoint of the Service, as MetalLB's layer-2 speaker answers for
// such an address only from such a node. (kube-proxy drops Local traffic on
// a node without one; Cluster traffic any node forwards, so the pool route
// to the first node serves it.) A Service whose endpoints are all unready
// gets no /32, so its traffic goes to the first node and is dropped there,
// as behind a cloud load balancer whose health checks all fail.
//
// It watches Services and EndpointSlices; each change re-plans every route
// from the informers' caches and applies the difference to the routes the
// kernel has. The routes go with the host link (Cleanup).
func RouteLoadBalancers(ctx context.Context, client kubernetes.Interface, host HostLink, nodes []Config) error {
	if !host.enabled() {
		return errors.New("route load balancers: no host link")
	}
	if err := host.Validate(nodes); err != nil {
		return err
	}
	log := slog.Default().With(logkey.Component, "lb-routes")
	factory := informers.NewSharedInformerFactory(client, 0)
	svcs := factory.Core().V1().Services()
	slicesInf := factory.Discovery().V1().EndpointSlices()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer queue.ShutDown()
	const key = "routes"
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { queue.Add(key) },
		UpdateFunc: func(any, any) { queue.Add(key) },
		DeleteFunc: func(any) { queue.Add(key) },
	}
	for _, inf := range []cache.SharedIndexInformer{svcs.Informer(), slicesInf.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return err
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), svcs.Informer().HasSynced, slicesInf.Informer().HasSynced) {
		return nil // ctx done
	}
	queue.Add(key) // a first reconcile, whatever the watch delivers
	var refs []lbNode
	for _, n := range nodes {
		refs = append(refs, lbNode{Name: n.Name, IP: n.NodeIP})
	}
	for {
		k, shutdown := queue.Get()
		if shutdown {
			return nil
		}
		err := func() error {
			svcList, err := svcs.Lister().List(labels.Everything())
			if err != nil {
				return err
			}
			sliceList, err := slicesInf.Lister().List(labels.Everything())
			if err != nil {
				return err
			}
			current, err := hostLBRoutes(host)
			if err != nil {
				return err
			}
			want := chooseLBRoutes(host.LoadBalancerPool, refs, lbRouteServices(svcList, sliceList), current)
			return applyLBRoutes(host, current, want, refs, log)
		}()
		if err != nil && ctx.Err() == nil {
			log.Warn("route load balancers", logkey.Error, err)
			queue.AddRateLimited(k)
		} else {
			queue.Forget(k)
		}
		queue.Done(k)
	}
}

// lbNode is a node a LoadBalancer address can be routed to.
type lbNode struct {
	Name string
	IP   netip.Addr
}

// lbRouteService is what routing needs of a Service: its LoadBalancer
// addresses, whether its externalTrafficPolicy is Local, and the nodes of
// its ready endpoints.
type lbRouteService struct {
	IPs        []netip.Addr
	Local      bool
	ReadyNodes []string
}

// lbRouteServices extracts what chooseLBRoutes needs from the Services of
// type LoadBalancer and the EndpointSlices (ready: nil counts as ready, as
// the API says consumers should take it).
func lbRouteServices(svcs []*corev1.Service, eps []*discoveryv1.EndpointSlice) []lbRouteService {
	ready := map[string][]string{} // namespace/service -> nodes with a ready endpoint
	for _, s := range eps {
		name := s.Labels[discoveryv1.LabelServiceName]
		if name == "" {
			continue
		}
		k := s.Namespace + "/" + name
		for _, e := range s.Endpoints {
			if e.NodeName != nil && (e.Conditions.Ready == nil || *e.Conditions.Ready) && !slices.Contains(ready[k], *e.NodeName) {
				ready[k] = append(ready[k], *e.NodeName)
			}
		}
	}
	var out []lbRouteService
	for _, s := range svcs {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			continue
		}
		r := lbRouteService{Local: s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal, ReadyNodes: ready[s.Namespace+"/"+s.Name]}
		for _, in := range s.Status.LoadBalancer.Ingress {
			if ip, err := netip.ParseAddr(in.IP); err == nil {
				r.IPs = append(r.IPs, ip)
			}
		}
		out = append(out, r)
	}
	return out
}

// chooseLBRoutes decides the /32 host routes: each pool address of a Local
// Service goes to a node with a ready endpoint of it, the node it is routed
// to now if that one still has one (no needless moves), else the first
// such node in node order. Cluster Services and Local ones without a ready
// endpoint get none. An address two Services claim is routed for neither.
func chooseLBRoutes(pool netip.Prefix, nodes []lbNode, svcs []lbRouteService, current map[netip.Addr]netip.Addr) map[netip.Addr]netip.Addr {
	want := map[netip.Addr]netip.Addr{}
	claims := map[netip.Addr]int{}
	for _, s := range svcs {
		for _, ip := range s.IPs {
			if pool.Contains(ip) {
				claims[ip]++
			}
		}
	}
	for _, s := range svcs {
		if !s.Local {
			continue
		}
		var candidates []netip.Addr
		for _, n := range nodes {
			if slices.Contains(s.ReadyNodes, n.Name) {
				candidates = append(candidates, n.IP)
			}
		}
		if len(candidates) == 0 {
			continue
		}
		for _, ip := range s.IPs {
			if !pool.Contains(ip) || claims[ip] != 1 {
				continue
			}
			via := candidates[0]
			if cur, ok := current[ip]; ok && slices.Contains(candidates, cur) {
				via = cur
			}
			want[ip] = via
		}
	}
	return want
}

// hostLBRoutes reads the /32 routes of pool addresses through the host link.
func hostLBRoutes(h HostLink) (map[netip.Addr]netip.Addr, error) {
	out, err := exec.Command("ip", "-4", "-j", "route", "show", "table", "main", "dev", h.Name).Output()
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", h.Name, err)
	}
	var rs []struct{ Dst, Gateway string }
	if err := json.Unmarshal(out, &rs); err != nil {
		return nil, fmt.Errorf("parse routes of %s: %w", h.Name, err)
	}
	m := map[netip.Addr]netip.Addr{}
	for _, r := range rs {
		dst, err1 := netip.ParseAddr(r.Dst) // a /32 prints without its length
		gw, err2 := netip.ParseAddr(r.Gateway)
		if err1 == nil && err2 == nil && h.LoadBalancerPool.Contains(dst) {
			m[dst] = gw
		}
	}
	return m, nil
}

// applyLBRoutes changes the host's /32 routes from current to want.
func applyLBRoutes(h HostLink, current, want map[netip.Addr]netip.Addr, nodes []lbNode, log *slog.Logger) error {
	nodeOf := func(a netip.Addr) string {
		for _, n := range nodes {
			if n.IP == a {
				return n.Name
			}
		}
		return a.String()
	}
	var errs []error
	for addr, via := range want {
		if current[addr] == via {
			continue
		}
		if err := ip("route", "replace", netip.PrefixFrom(addr, 32).String(), "via", via.String(), "dev", h.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("load-balancer address routed to a node with a ready endpoint", logkey.Addr, addr.String(), logkey.Node, nodeOf(via))
	}
	for addr := range current {
		if _, ok := want[addr]; ok {
			continue
		}
		if err := ip("route", "del", netip.PrefixFrom(addr, 32).String(), "dev", h.Name); err != nil && !isGone(err) {
			errs = append(errs, err)
			continue
		}
		log.Info("load-balancer address back on the pool route", logkey.Addr, addr.String())
	}
	return errors.Join(errs...)
}
