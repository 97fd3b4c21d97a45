package ca

import (
	"context"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/provision"
)

// A Gateway's data plane asks for an SVID itself, with its own pod's token
// and no node: it runs as its own ServiceAccount, not as an agent. It may
// hold exactly that ServiceAccount's identity, and only when the pod is the
// data plane of an accepted Gateway (provision.CheckPod: the
// ServiceAccount is the one derived from that Gateway's name).

// PodAuthenticator binds a token of any ServiceAccount to the running pod
// it was issued for; *agentauth.Authenticator implements it. Errors are
// gRPC status errors.
type PodAuthenticator interface {
	AuthenticatePod(ctx context.Context, token string) (*corev1.Pod, error)
}

func (c *CA) signsGateways() bool {
	return c.cfg.PodAuthenticator != nil && c.cfg.GatewayOf != nil
}

// signGateway is Sign for a Gateway's data plane pod.
func (c *CA) signGateway(ctx context.Context, token string, req *weftv1.SignRequest) (*weftv1.SignResponse, error) {
	pod, err := c.cfg.PodAuthenticator.AuthenticatePod(ctx, token)
	if err != nil {
		c.log.Warn("svid refused", logkey.Reason, status.Convert(err).Message())
		return nil, err
	}
	ref := pod.Namespace + "/" + pod.Name
	csr, id, err := ValidateCSR(req.GetCsr(), c.td)
	if err != nil {
		c.log.Warn("svid refused", logkey.Pod, ref, logkey.Reason, err.Error())
		return nil, status.Errorf(codes.InvalidArgument, "refused csr: %v", err)
	}
	if err := authorizeGateway(c.td, id, pod, c.cfg.GatewayOf); err != nil {
		c.log.Warn("svid refused", logkey.Pod, ref, logkey.ID, id.String(), logkey.Reason, err.Error())
		return nil, status.Errorf(codes.PermissionDenied, "pod %s may not hold %s: %v", ref, id, err)
	}
	return c.issue(id, csr, logkey.Pod, ref)
}

// authorizeGateway decides whether pod may hold id (pure): its own
// ServiceAccount's identity, and it is the data plane of the Gateway that
// gatewayOf names for that ServiceAccount.
func authorizeGateway(td spiffeid.TrustDomain, id spiffeid.ID, pod *corev1.Pod, gatewayOf func(namespace, serviceAccount string) (string, bool)) error {
	ns, sa, err := mesh.ParseWorkloadID(td, id)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotAuthorized, err)
	}
	if own := mesh.PodServiceAccount(pod); ns != pod.Namespace || sa != own {
		return fmt.Errorf("%w: a gateway pod may hold only its own identity (ServiceAccount %s/%s)", ErrNotAuthorized, pod.Namespace, own)
	}
	gw, ok := gatewayOf(ns, sa)
	if !ok {
		return fmt.Errorf("%w: ServiceAccount %s/%s is not the data plane of an accepted Gateway, and only agents may ask on behalf of a node", ErrNotAuthorized, ns, sa)
	}
	if err := provision.CheckPod(pod, ns, gw); err != nil {
		return fmt.Errorf("%w: %w", ErrNotAuthorized, err)
	}
	return nil
}
