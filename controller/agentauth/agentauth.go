// Package agentauth authenticates weft-agent calls to the controller's gRPC
// server. An agent sends its projected ServiceAccount token (audience "weft")
// as "authorization: Bearer <token>" metadata; the controller checks it with a
// TokenReview and binds it to the node the agent pod runs on.
//
// A token is accepted only when the apiserver says it is valid for the
// audience (not expired, its bound pod not deleted), it belongs to the agent's
// ServiceAccount, and it is bound to a running pod of that ServiceAccount on
// a node. The node is what the caller may speak for.
package agentauth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Defaults for Config.
const (
	DefaultNamespace      = "weft-system"
	DefaultServiceAccount = "weft-agent"
	DefaultAudience       = "weft"
)

// Keys of the user extra info the apiserver sets for pod-bound tokens.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// MetadataKey is the gRPC metadata key carrying "Bearer <token>".
const MetadataKey = "authorization"

// Config configures an Authenticator.
type Config struct {
	// Client talks to the apiserver: it needs create on tokenreviews and get
	// on pods in Namespace.
	Client kubernetes.Interface
	// Namespace and ServiceAccount of the agent DaemonSet
	// (default weft-system/weft-agent).
	Namespace      string
	ServiceAccount string
	// Audience the token must be issued for (default "weft").
	Audience string
}

// Authenticator checks agent tokens. Safe for concurrent use.
type Authenticator struct {
	client   kubernetes.Interface
	ns, sa   string
	audience string
	username string
}

// New returns an Authenticator for cfg, filling in defaults.
func New(cfg Config) (*Authenticator, error) {
	if cfg.Client == nil {
		return nil, errors.New("agentauth: config has no kubernetes client")
	}
	a := &Authenticator{
		client:   cfg.Client,
		ns:       cmpOr(cfg.Namespace, DefaultNamespace),
		sa:       cmpOr(cfg.ServiceAccount, DefaultServiceAccount),
		audience: cmpOr(cfg.Audience, DefaultAudience),
	}
	a.username = "system:serviceaccount:" + a.ns + ":" + a.sa
	return a, nil
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Authenticate checks token and returns the node the calling agent runs on.
// Errors are gRPC status errors: Unauthenticated when the token is missing or
// not valid for the audience, PermissionDenied when it is valid but not the
// token of a running agent pod, Unavailable when the apiserver cannot answer.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", status.Error(codes.Unauthenticated, "no bearer token: send the agent's projected ServiceAccount token as \"authorization: Bearer <token>\"")
	}
	tr, err := a.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{a.audience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", status.Errorf(codes.Unavailable, "token review: %v", err)
	}
	tokenNode, err := a.decide(tr.Status)
	if err != nil {
		return "", err
	}
	return a.checkPod(ctx, tr.Status.User.Extra, tokenNode)
}

// decide checks the TokenReview result (pure) and returns the node name the
// token claims, or "" when the token carries none (checked against the pod).
func (a *Authenticator) decide(st authnv1.TokenReviewStatus) (string, error) {
	if !st.Authenticated {
		msg := st.Error
		if msg == "" {
			msg = "token rejected"
		}
		return "", status.Errorf(codes.Unauthenticated, "token not valid for audience %q: %s", a.audience, msg)
	}
	if !slices.Contains(st.Audiences, a.audience) {
		return "", status.Errorf(codes.Unauthenticated, "token not issued for audience %q (audiences %v)", a.audience, st.Audiences)
	}
	if st.User.Username != a.username {
		return "", status.Errorf(codes.PermissionDenied, "token of %q is not the agent ServiceAccount %s/%s", st.User.Username, a.ns, a.sa)
	}
	podName := single(st.User.Extra[extraPodName])
	podUID := single(st.User.Extra[extraPodUID])
	if podName == "" || podUID == "" {
		return "", status.Errorf(codes.PermissionDenied, "token of %s/%s is not bound to a pod: use a projected ServiceAccount token", a.ns, a.sa)
	}
	return single(st.User.Extra[extraNodeName]), nil
}

// checkPod verifies the bound pod is a running agent pod on a node and
// returns that node.
func (a *Authenticator) checkPod(ctx context.Context, extra map[string]authnv1.ExtraValue, tokenNode string) (string, error) {
	name, uid := single(extra[extraPodName]), single(extra[extraPodUID])
	pod, err := a.client.CoreV1().Pods(a.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", status.Errorf(codes.PermissionDenied, "token is bound to pod %s/%s, which no longer exists", a.ns, name)
	}
	if err != nil {
		return "", status.Errorf(codes.Unavailable, "get agent pod %s/%s: %v", a.ns, name, err)
	}
	if err := checkAgentPod(pod, a.sa, uid, tokenNode); err != nil {
		return "", err
	}
	return pod.Spec.NodeName, nil
}

// checkAgentPod is the pure part of checkPod.
func checkAgentPod(pod *corev1.Pod, sa, uid, tokenNode string) error {
	ref := pod.Namespace + "/" + pod.Name
	switch {
	case string(pod.UID) != uid:
		return status.Errorf(codes.PermissionDenied, "token is bound to pod %s uid %s, but that pod now has uid %s", ref, uid, pod.UID)
	case pod.Spec.ServiceAccountName != sa:
		return status.Errorf(codes.PermissionDenied, "pod %s runs as ServiceAccount %q, not %q", ref, pod.Spec.ServiceAccountName, sa)
	case pod.Spec.NodeName == "":
		return status.Errorf(codes.PermissionDenied, "agent pod %s is not bound to a node", ref)
	case tokenNode != "" && tokenNode != pod.Spec.NodeName:
		return status.Errorf(codes.PermissionDenied, "token names node %q but pod %s is on node %q", tokenNode, ref, pod.Spec.NodeName)
	case pod.Status.Phase != corev1.PodRunning:
		return status.Errorf(codes.PermissionDenied, "agent pod %s is %s, not Running", ref, phaseOr(pod.Status.Phase))
	}
	return nil
}

func phaseOr(p corev1.PodPhase) string {
	if p == "" {
		return "Pending"
	}
	return string(p)
}

func single(v authnv1.ExtraValue) string {
	if len(v) != 1 {
		return ""
	}
	return v[0]
}

// TokenFromContext returns the bearer token of an incoming gRPC call's
// "authorization" metadata. The error is a gRPC Unauthenticated status.
func TokenFromContext(ctx context.Context) (string, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no metadata: send \"authorization: Bearer <token>\"")
	}
	vals := md.Get(MetadataKey)
	if len(vals) != 1 {
		return "", status.Errorf(codes.Unauthenticated, "want exactly one %q metadata value, got %d", MetadataKey, len(vals))
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
		return "", status.Errorf(codes.Unauthenticated, "%q metadata is not \"Bearer <token>\"", MetadataKey)
	}
	return strings.TrimSpace(tok), nil
}

// AuthenticateContext pulls the bearer token from ctx and authenticates it.
func (a *Authenticator) AuthenticateContext(ctx context.Context) (string, error) {
	tok, err := TokenFromContext(ctx)
	if err != nil {
		return "", err
	}
	return a.Authenticate(ctx, tok)
}

// String describes the accepted identity, for logs.
func (a *Authenticator) String() string {
	return fmt.Sprintf("agent ServiceAccount %s/%s, audience %q", a.ns, a.sa, a.audience)
}
