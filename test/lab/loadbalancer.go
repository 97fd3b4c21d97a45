package lab

import (
	"context"
	"log/slog"
	"sync"

	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/test/lab/cluster"
	"github.com/weft-mesh/weft/test/lab/node"
)

// startLoadBalancers plays the cloud's part for Services of type LoadBalancer until
// ctx is done or stop is called: the allocator gives them addresses of
// cluster.LoadBalancerPool, and the host routes each address of an
// externalTrafficPolicy Local Service to a node with a ready endpoint (the pool route
// of HostLink takes the others to the first node). stop waits for both to end, so
// nothing writes a route after the lab removed the host link.
func startLoadBalancers(ctx context.Context, cs kubernetes.Interface, nodes []node.Config, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := cluster.RunLoadBalancers(ctx, cs, cluster.LoadBalancerPool, log); err != nil {
			log.Error("load-balancer allocator stopped", logkey.Error, err)
		}
	})
	wg.Go(func() {
		if err := node.RouteLoadBalancers(ctx, cs, HostLink(), nodes); err != nil {
			log.Error("load-balancer routes stopped", logkey.Error, err)
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}
