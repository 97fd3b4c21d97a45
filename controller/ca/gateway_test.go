package ca

import (
	"context"
	"crypto/x509"
	"net/url"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/provision"
)

// agentsOnly is the agent Authenticator: "token-1" is the agent on node-1,
// any other token is valid but not an agent's (as agentauth answers).
type agentsOnly struct{}

func (agentsOnly) Authenticate(_ context.Context, token string) (string, error) {
	if token == "token-1" {
		return "node-1", nil
	}
	return "", status.Error(codes.PermissionDenied, "token is not the agent ServiceAccount's")
}

// tokenPods binds a token to its pod.
type tokenPods map[string]*corev1.Pod

func (t tokenPods) AuthenticatePod(_ context.Context, token string) (*corev1.Pod, error) {
	if p, ok := t[token]; ok {
		return p, nil
	}
	return nil, status.Error(codes.Unauthenticated, "unknown token")
}

// gatewayPod is the data plane pod of shop/web as provision makes it.
func gatewayPod() *corev1.Pod {
	objs := provision.Desired(&gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}, provision.Params{Image: "weft"})
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: objs.Deployment.Spec.Template.Labels},
		Spec:       objs.Deployment.Spec.Template.Spec,
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

func newGatewayFixture(t *testing.T) *fixture {
	t.Helper()
	f := newFixture(t)
	forged := pod("shop", "cart-2", "cart", "node-1", corev1.PodRunning, nil)
	forged.Labels = map[string]string{mesh.LabelGateway: provision.Name("web")}
	f.ca.cfg.Authenticator = agentsOnly{}
	f.ca.cfg.PodAuthenticator = tokenPods{
		"gw":     gatewayPod(),
		"cart":   pod("shop", "cart-1", "cart", "node-1", corev1.PodRunning, nil),
		"forged": forged,
	}
	f.ca.cfg.GatewayOf = func(ns, sa string) (string, bool) {
		if ns == "shop" && sa == provision.Identity("web") {
			return "web", true
		}
		return "", false
	}
	return f
}

func TestSignGatewayOwnIdentity(t *testing.T) {
	f := newGatewayFixture(t)
	want := "spiffe://cluster.local/ns/shop/sa/" + provision.Identity("web")
	csr := makeCSR(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, want)}})
	resp, err := f.ca.Sign(agentCtx("gw"), &weftv1.SignRequest{Csr: csr})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	leaf, err := x509.ParseCertificate(resp.CertChain[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Fatalf("leaf URIs %v, want %s", leaf.URIs, want)
	}
	// The node agent's path is unchanged.
	csr = makeCSR(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/shop/sa/cart")}})
	if _, err := f.ca.Sign(agentCtx("token-1"), &weftv1.SignRequest{Csr: csr}); err != nil {
		t.Fatalf("agent without node: %v", err)
	}
}

func TestSignGatewayRefusals(t *testing.T) {
	f := newGatewayFixture(t)
	gwID := "spiffe://cluster.local/ns/shop/sa/" + provision.Identity("web")
	tests := []struct {
		name, token, id, node string
		code                  codes.Code
		msg                   string
	}{
		{"another identity", "gw", "spiffe://cluster.local/ns/shop/sa/cart", "", codes.PermissionDenied, "only its own identity"},
		{"another namespace", "gw", "spiffe://cluster.local/ns/dev/sa/" + provision.Identity("web"), "", codes.PermissionDenied, "only its own identity"},
		{"a workload pod, no node", "cart", "spiffe://cluster.local/ns/shop/sa/cart", "", codes.PermissionDenied, "not the data plane of an accepted Gateway"},
		{"a workload pod with the gateway label", "forged", "spiffe://cluster.local/ns/shop/sa/cart", "", codes.PermissionDenied, "not the data plane"},
		{"a gateway pod naming a node", "gw", gwID, "node-1", codes.PermissionDenied, "not the agent"},
		{"unknown token", "nope", gwID, "", codes.Unauthenticated, "unknown token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := makeCSR(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, tt.id)}})
			_, err := f.ca.Sign(agentCtx(tt.token), &weftv1.SignRequest{Csr: csr, Node: tt.node})
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("got %v, want %v containing %q", err, tt.code, tt.msg)
			}
		})
	}
}

func TestSignGatewayDisabled(t *testing.T) {
	f := newGatewayFixture(t)
	f.ca.cfg.GatewayOf = nil
	csr := makeCSR(t, p256(t), &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/shop/sa/"+provision.Identity("web"))}})
	if _, err := f.ca.Sign(agentCtx("gw"), &weftv1.SignRequest{Csr: csr}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v, want the agent refusal", err)
	}
}
