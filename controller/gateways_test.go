package controller

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/provision"
)

type tokenPod map[string]*corev1.Pod

func (t tokenPod) AuthenticatePod(_ context.Context, token string) (*corev1.Pod, error) {
	if p, ok := t[token]; ok {
		return p, nil
	}
	return nil, status.Error(codes.Unauthenticated, "unknown token")
}

func TestGatewayAuthorizer(t *testing.T) {
	dataPlane := func(ns, gw string) *corev1.Pod {
		objs := provision.Desired(&gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: gw}}, provision.Params{Image: "weft"})
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: gw + "-1", Labels: objs.Deployment.Spec.Template.Labels}, Spec: objs.Deployment.Spec.Template.Spec}
	}
	workload := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-1"}, Spec: corev1.PodSpec{ServiceAccountName: "cart"}}
	a := gatewayAuthorizer{pods: tokenPod{"web": dataPlane("shop", "web"), "api": dataPlane("shop", "api"), "cart": workload}}
	tests := []struct {
		token string
		code  codes.Code
		msg   string
	}{
		{"web", codes.OK, ""},
		{"api", codes.PermissionDenied, `not "web-weft-gateway"`},
		{"cart", codes.PermissionDenied, "runs as ServiceAccount \"cart\""},
		{"nope", codes.Unauthenticated, "unknown token"},
	}
	for _, tt := range tests {
		err := a.AuthorizeGateway(context.Background(), tt.token, "shop", "web")
		if status.Code(err) != tt.code || err != nil && !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("token %s: got %v, want %v containing %q", tt.token, err, tt.code, tt.msg)
		}
	}
}
