package agentauth

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDecide(t *testing.T) {
	a, err := New(Config{Client: nil})
	if err == nil || a != nil {
		t.Fatal("New without a client succeeded")
	}
	a = &Authenticator{ns: "weft-system", sa: "weft-agent", audience: "weft", username: "system:serviceaccount:weft-system:weft-agent"}
	bound := map[string]authnv1.ExtraValue{extraPodName: {"agent-x"}, extraPodUID: {"u1"}, extraNodeName: {"n1"}}
	tests := []struct {
		name     string
		st       authnv1.TokenReviewStatus
		code     codes.Code
		wantNode string
	}{
		{"ok", authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{Username: a.username, Extra: bound}}, codes.OK, "n1"},
		{"not authenticated", authnv1.TokenReviewStatus{Error: "token expired"}, codes.Unauthenticated, ""},
		{"other audience", authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"api"}, User: authnv1.UserInfo{Username: a.username, Extra: bound}}, codes.Unauthenticated, ""},
		{"other user", authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{Username: "system:serviceaccount:shop:cart", Extra: bound}}, codes.PermissionDenied, ""},
		{"not pod bound", authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{Username: a.username}}, codes.PermissionDenied, ""},
		{"two pod names", authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{Username: a.username,
			Extra: map[string]authnv1.ExtraValue{extraPodName: {"a", "b"}, extraPodUID: {"u1"}}}}, codes.PermissionDenied, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node, err := a.decide(tt.st)
			if status.Code(err) != tt.code || node != tt.wantNode {
				t.Fatalf("decide = %q, %v; want %q, %v", node, err, tt.wantNode, tt.code)
			}
		})
	}
}

func TestCheckAgentPod(t *testing.T) {
	running := func(mut func(p *corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "weft-system", Name: "agent-x", UID: "u1"},
			Spec:       corev1.PodSpec{ServiceAccountName: "weft-agent", NodeName: "n1"},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		}
		if mut != nil {
			mut(p)
		}
		return p
	}
	tests := []struct {
		name      string
		pod       *corev1.Pod
		tokenNode string
		ok        bool
	}{
		{"ok", running(nil), "n1", true},
		{"ok without node claim", running(nil), "", true},
		{"uid differs (pod recreated)", running(func(p *corev1.Pod) { p.UID = "u2" }), "n1", false},
		{"other service account", running(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "default" }), "n1", false},
		{"not scheduled", running(func(p *corev1.Pod) { p.Spec.NodeName = "" }), "", false},
		{"node claim differs", running(nil), "n2", false},
		{"pending", running(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), "n1", false},
		{"failed", running(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), "n1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkAgentPod(tt.pod, "weft-agent", "u1", tt.tokenNode)
			if tt.ok != (err == nil) {
				t.Fatalf("checkAgentPod = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && status.Code(err) != codes.PermissionDenied {
				t.Fatalf("code %v, want PermissionDenied", status.Code(err))
			}
		})
	}
}

func TestTokenFromContext(t *testing.T) {
	tests := []struct {
		name string
		md   metadata.MD
		want string
	}{
		{"bearer", metadata.Pairs("authorization", "Bearer abc.def"), "abc.def"},
		{"case insensitive scheme", metadata.Pairs("authorization", "bearer abc"), "abc"},
		{"none", nil, ""},
		{"basic", metadata.Pairs("authorization", "Basic abc"), ""},
		{"empty token", metadata.Pairs("authorization", "Bearer  "), ""},
		{"two values", metadata.Pairs("authorization", "Bearer a", "authorization", "Bearer b"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.md != nil {
				ctx = metadata.NewIncomingContext(ctx, tt.md)
			}
			tok, err := TokenFromContext(ctx)
			if tok != tt.want {
				t.Fatalf("token %q, want %q", tok, tt.want)
			}
			if tt.want == "" && status.Code(err) != codes.Unauthenticated {
				t.Fatalf("err %v, want Unauthenticated", err)
			}
		})
	}
}
