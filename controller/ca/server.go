package ca

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/agentauth"
)

// Register adds the Identity service to s. The CA must have a root (Load or
// EnsureRoot) before Sign succeeds; until then Sign answers Unavailable.
func (c *CA) Register(s *grpc.Server) {
	weftv1.RegisterIdentityServer(s, identityServer{ca: c})
}

type identityServer struct {
	weftv1.UnimplementedIdentityServer
	ca *CA
}

func (s identityServer) Sign(ctx context.Context, req *weftv1.SignRequest) (*weftv1.SignResponse, error) {
	resp, err := s.ca.Sign(ctx, req)
	if s.ca.cfg.OnSign != nil {
		s.ca.cfg.OnSign(err)
	}
	return resp, err
}

// Sign implements weft.v1.Identity/Sign: authenticate the agent, validate
// its CSR, check that its node runs an enrolled pod of the requested
// identity, and sign. Every refusal is a gRPC status with an explanation and
// is logged with the requesting node.
func (c *CA) Sign(ctx context.Context, req *weftv1.SignRequest) (*weftv1.SignResponse, error) {
	if c.cfg.Authenticator == nil || c.cfg.Pods == nil {
		return nil, status.Error(codes.Unimplemented, "ca is not configured to sign (no authenticator or pod source)")
	}
	token, err := agentauth.TokenFromContext(ctx)
	if err != nil {
		c.log.Warn("svid refused", "node", req.GetNode(), "reason", err.Error())
		return nil, err
	}
	node, err := c.cfg.Authenticator.Authenticate(ctx, token)
	if err != nil && req.GetNode() == "" && c.signsGateways() && status.Code(err) == codes.PermissionDenied {
		// A valid token, but not an agent's: maybe a Gateway's data plane.
		return c.signGateway(ctx, token, req)
	}
	if err != nil {
		c.log.Warn("svid refused", "node", req.GetNode(), "reason", err.Error())
		return nil, err
	}
	resp, id, err := c.sign(ctx, node, req)
	if err != nil {
		c.log.Warn("svid refused", "node", node, "id", id, "reason", status.Convert(err).Message())
		return nil, err
	}
	return resp, nil
}

func (c *CA) sign(ctx context.Context, node string, req *weftv1.SignRequest) (*weftv1.SignResponse, string, error) {
	if req.GetNode() != "" && req.GetNode() != node {
		return nil, "", status.Errorf(codes.PermissionDenied, "request names node %q but the caller's token is bound to node %q", req.GetNode(), node)
	}
	csr, id, err := ValidateCSR(req.GetCsr(), c.td)
	if err != nil {
		return nil, "", status.Errorf(codes.InvalidArgument, "refused csr: %v", err)
	}
	ns, sa, err := mesh.ParseWorkloadID(c.td, id)
	if err != nil { // ValidateCSR already checked it
		return nil, id.String(), status.Errorf(codes.InvalidArgument, "refused csr: %v", err)
	}
	if err := lookupAndAuthorize(ctx, c.cfg.Pods, node, ns, sa); err != nil {
		if errors.Is(err, ErrNotAuthorized) {
			return nil, id.String(), status.Errorf(codes.PermissionDenied, "node %s may not hold %s: %v", node, id, err)
		}
		return nil, id.String(), status.Errorf(codes.Unavailable, "authorize %s for node %s: %v", id, node, err)
	}
	resp, err := c.issue(id, csr, "node", node)
	return resp, id.String(), err
}

// issue signs id for csr's key; who and whom say for whom, for the log.
func (c *CA) issue(id spiffeid.ID, csr *x509.CertificateRequest, who, whom string) (*weftv1.SignResponse, error) {
	l := c.state.Load()
	if l == nil {
		return nil, status.Error(codes.Unavailable, "ca root not loaded yet")
	}
	chain, leaf, err := l.st.auth.SignSVID(id, csr.PublicKey, c.cfg.Now(), c.cfg.SVIDTTL)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "sign: %v", err)
	}
	c.log.Info("svid issued", who, whom, "id", id.String(), "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
	return &weftv1.SignResponse{CertChain: chain, TrustAnchors: l.st.auth.AnchorsDER()}, nil
}
