package agentauth

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// reviewing answers every TokenReview with st.
func reviewing(objs []runtime.Object, st authnv1.TokenReviewStatus) *fake.Clientset {
	c := fake.NewClientset(objs...)
	c.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, &authnv1.TokenReview{Status: st}, nil
	})
	return c
}

func TestAuthenticatePod(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", UID: "u1"},
		Spec:       corev1.PodSpec{ServiceAccountName: "web-weft-gateway"},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	user := func(name string, extra map[string]authnv1.ExtraValue) authnv1.TokenReviewStatus {
		return authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"weft"}, User: authnv1.UserInfo{Username: name, Extra: extra}}
	}
	bound := func(name, uid string) map[string]authnv1.ExtraValue {
		return map[string]authnv1.ExtraValue{extraPodName: {name}, extraPodUID: {uid}}
	}
	const sa = "system:serviceaccount:shop:web-weft-gateway"
	pending := pod.DeepCopy()
	pending.Status.Phase = ""
	tests := []struct {
		name string
		pod  *corev1.Pod
		st   authnv1.TokenReviewStatus
		code codes.Code
	}{
		{"ok", pod, user(sa, bound("web-1", "u1")), codes.OK},
		{"rejected", pod, authnv1.TokenReviewStatus{Error: "expired"}, codes.Unauthenticated},
		{"other audience", pod, authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"api"}, User: authnv1.UserInfo{Username: sa, Extra: bound("web-1", "u1")}}, codes.Unauthenticated},
		{"a user, not a ServiceAccount", pod, user("alice", bound("web-1", "u1")), codes.PermissionDenied},
		{"not bound", pod, user(sa, nil), codes.PermissionDenied},
		{"pod gone", pod, user(sa, bound("web-2", "u2")), codes.PermissionDenied},
		{"pod replaced", pod, user(sa, bound("web-1", "u0")), codes.PermissionDenied},
		{"another SA's token", pod, user("system:serviceaccount:shop:default", bound("web-1", "u1")), codes.PermissionDenied},
		{"pending", pending, user(sa, bound("web-1", "u1")), codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := New(Config{Client: reviewing([]runtime.Object{tt.pod}, tt.st)})
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.AuthenticatePod(context.Background(), "tok")
			if status.Code(err) != tt.code {
				t.Fatalf("AuthenticatePod: %v, want %v", err, tt.code)
			}
			if err == nil && got.Name != "web-1" {
				t.Fatalf("pod %s", got.Name)
			}
		})
	}
}
