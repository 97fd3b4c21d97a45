package agentauth

import (
	"context"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// boundPod is the pod a token says it is bound to.
type boundPod struct {
	namespace, serviceAccount, name, uid string
}

// AuthenticatePod checks a projected ServiceAccount token of any
// ServiceAccount (issued for the Authenticator's audience) and returns the
// running pod it is bound to, which runs as that ServiceAccount. What the
// pod may do is the caller's decision (a Gateway's data plane:
// provision.CheckPod). The controller needs get on pods in every namespace.
// Errors are gRPC status errors, as Authenticate's.
func (a *Authenticator) AuthenticatePod(ctx context.Context, token string) (*corev1.Pod, error) {
	if token == "" {
		return nil, status.Error(codes.Unauthenticated, "no bearer token: send the pod's projected ServiceAccount token as \"authorization: Bearer <token>\"")
	}
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "token review: %v", err)
	}
	b, err := a.decidePod(tr.Status)
	if err != nil {
		return nil, err
	}
	pod, err := a.client.CoreV1().Pods(b.namespace).Get(ctx, b.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.PermissionDenied, "token is bound to pod %s/%s, which no longer exists", b.namespace, b.name)
	}
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "get pod %s/%s: %v", b.namespace, b.name, err)
	}
	if err := checkBoundPod(pod, b); err != nil {
		return nil, err
	}
	return pod, nil
}

// decidePod checks the TokenReview result (pure): a ServiceAccount's token
// for the audience, bound to a pod.
func (a *Authenticator) decidePod(st authnv1.TokenReviewStatus) (boundPod, error) {
	if !st.Authenticated {
		return boundPod{}, status.Errorf(codes.Unauthenticated, "token not valid for audience %q: %s", a.audience, cmpOr(st.Error, "token rejected"))
	}
	if !slices.Contains(st.Audiences, a.audience) {
		return boundPod{}, status.Errorf(codes.Unauthenticated, "token not issued for audience %q (audiences %v)", a.audience, st.Audiences)
	}
	rest, ok := strings.CutPrefix(st.User.Username, "system:serviceaccount:")
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || ns == "" || sa == "" {
		return boundPod{}, status.Errorf(codes.PermissionDenied, "token of %q is not a ServiceAccount's", st.User.Username)
	}
	b := boundPod{namespace: ns, serviceAccount: sa, name: single(st.User.Extra[extraPodName]), uid: single(st.User.Extra[extraPodUID])}
	if b.name == "" || b.uid == "" {
		return boundPod{}, status.Errorf(codes.PermissionDenied, "token of %s/%s is not bound to a pod: use a projected ServiceAccount token", ns, sa)
	}
	return b, nil
}

// checkBoundPod verifies the pod is the token's (same uid, same
// ServiceAccount) and running (pure).
func checkBoundPod(pod *corev1.Pod, b boundPod) error {
	ref := pod.Namespace + "/" + pod.Name
	switch {
	case string(pod.UID) != b.uid:
		return status.Errorf(codes.PermissionDenied, "token is bound to pod %s uid %s, but that pod now has uid %s", ref, b.uid, pod.UID)
	case pod.Spec.ServiceAccountName != b.serviceAccount:
		return status.Errorf(codes.PermissionDenied, "pod %s runs as ServiceAccount %q, not the token's %q", ref, pod.Spec.ServiceAccountName, b.serviceAccount)
	case pod.Status.Phase != corev1.PodRunning:
		return status.Errorf(codes.PermissionDenied, "pod %s is %s, not Running", ref, phaseOr(pod.Status.Phase))
	}
	return nil
}
