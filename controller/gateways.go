package controller

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/provision"
)

// dataPlane is the namespace and ServiceAccount of a Gateway's data plane.
type dataPlane struct{ namespace, serviceAccount string }

// pushGateways translates the IR of every accepted Gateway and hands the
// policies to push, which validates them; it records which Gateways are
// accepted for GatewayOf.
func (c *Controller) pushGateways(ir []*gateway.Gateway, anchors [][]byte, nodes map[string]*weftv1.NodePolicy) {
	td, err := mesh.ParseTrustDomain(c.cfg.TrustDomain)
	if err != nil {
		c.log.Error("gateway policies not pushed", logkey.Error, err)
		return
	}
	var tunnels map[string]string
	for _, p := range nodes {
		if p != nil {
			tunnels = p.GetNodeTunnels() // every node's policy has them all
			break
		}
	}
	policies := make(map[string]*weftv1.GatewayPolicy, len(ir))
	planes := make(map[dataPlane]string, len(ir))
	for _, g := range ir {
		key := g.Namespace + "/" + g.Name
		id, err := mesh.WorkloadID(td, g.Namespace, provision.Identity(g.Name))
		if err != nil {
			c.log.Error("gateway policy not pushed", logkey.Gateway, key, logkey.Error, err)
			continue
		}
		planes[dataPlane{g.Namespace, provision.Identity(g.Name)}] = g.Name
		policies[key] = g.Policy(gateway.PolicyParams{TrustDomain: td.Name(), TrustAnchors: anchors, NodeTunnels: tunnels, Identity: id.String()})
	}
	c.dataPlanes.Store(&planes)
	changed := c.push.UpdateGateways(policies)
	c.log.Debug("gateway policies", logkey.Objects, len(policies), logkey.Changed, changed)
}

// GatewayOf returns the name of the accepted Gateway of namespace whose data
// plane runs as serviceAccount, as of the last resolution (the CA's
// Config.GatewayOf).
func (c *Controller) GatewayOf(namespace, serviceAccount string) (string, bool) {
	m := c.dataPlanes.Load()
	if m == nil {
		return "", false
	}
	gw, ok := (*m)[dataPlane{namespace, serviceAccount}]
	return gw, ok
}

// podAuthenticator binds a token to its pod (*agentauth.Authenticator).
type podAuthenticator interface {
	AuthenticatePod(ctx context.Context, token string) (*corev1.Pod, error)
}

// gatewayAuthorizer is push.GatewayAuthorizer: the token must be bound to a
// running data plane pod of the Gateway (provision.CheckPod).
type gatewayAuthorizer struct{ pods podAuthenticator }

func (a gatewayAuthorizer) AuthorizeGateway(ctx context.Context, token, namespace, name string) error {
	pod, err := a.pods.AuthenticatePod(ctx, token)
	if err != nil {
		return err
	}
	if err := provision.CheckPod(pod, namespace, name); err != nil {
		return status.Error(codes.PermissionDenied, fmt.Sprintf("gateway %s/%s: %v", namespace, name, err))
	}
	return nil
}
