package agentauth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/weft-mesh/weft/test/kubetest"
)

// apiserver starts etcd + kube-apiserver (the lab's binaries) without CRDs.
// It is not kubetest.Start because the expired-token case needs the
// service-account signing key, which only the envtest handle exposes.
func apiserver(t *testing.T) (kubernetes.Interface, string) {
	t.Helper()
	bin, err := kubetest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(bin, "kube-apiserver")); err != nil {
		msg := fmt.Sprintf("kube-apiserver not built in %s: run `make lab-binaries`", bin)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	env := &envtest.Environment{BinaryAssetsDirectory: bin}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start test apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stop test apiserver: %v", err)
		}
	})
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs, env.ControlPlane.GetAPIServer().CertDir
}

type cluster struct {
	t  *testing.T
	cs kubernetes.Interface
}

func (c cluster) create(obj any) {
	c.t.Helper()
	ctx := context.Background()
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = c.cs.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
	case *corev1.ServiceAccount:
		_, err = c.cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *corev1.Node:
		_, err = c.cs.CoreV1().Nodes().Create(ctx, o, metav1.CreateOptions{})
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// pod creates a pod of sa bound to node in the given phase.
func (c cluster) pod(ns, name, sa, node string, phase corev1.PodPhase) *corev1.Pod {
	c.t.Helper()
	ctx := context.Background()
	p, err := c.cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node,
			Containers: []corev1.Container{{Name: "c", Image: "ghcr.io/weft-mesh/weft-agent:dev"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	p.Status.Phase = phase
	p, err = c.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

// token requests a token of sa for audience, bound to pod when not nil.
func (c cluster) token(ns, sa, audience string, pod *corev1.Pod) string {
	c.t.Helper()
	req := &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr(int64(600))}}
	if pod != nil {
		req.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := c.cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, req, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("token request for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

func ptr[T any](v T) *T { return &v }

func TestAuthenticateAgainstAPIServer(t *testing.T) {
	cs, certDir := apiserver(t)
	c := cluster{t: t, cs: cs}
	for _, ns := range []string{"weft-system", "evil"} {
		c.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	for _, sa := range []struct{ ns, name string }{{"weft-system", "weft-agent"}, {"weft-system", "intruder"}, {"evil", "weft-agent"}} {
		c.create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sa.ns, Name: sa.name}})
	}
	for _, n := range []string{"lab-node-1", "lab-node-2"} {
		c.create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	agent1 := c.pod("weft-system", "weft-agent-1", "weft-agent", "lab-node-1", corev1.PodRunning)
	agent2 := c.pod("weft-system", "weft-agent-2", "weft-agent", "lab-node-2", corev1.PodRunning)
	pending := c.pod("weft-system", "weft-agent-3", "weft-agent", "lab-node-2", corev1.PodPending)
	intruder := c.pod("weft-system", "intruder", "intruder", "lab-node-1", corev1.PodRunning)
	evil := c.pod("evil", "weft-agent", "weft-agent", "lab-node-1", corev1.PodRunning)
	doomed := c.pod("weft-system", "weft-agent-doomed", "weft-agent", "lab-node-1", corev1.PodRunning)

	deletedTok := c.token("weft-system", "weft-agent", "weft", doomed)
	if err := cs.CoreV1().Pods("weft-system").Delete(context.Background(), doomed.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	issuer := issuerOf(t, cs)
	saUID := saUID(t, cs, "weft-system", "weft-agent")
	now := time.Now()

	// The apiserver puts the node of a pod-bound token in the user's extra
	// info (ServiceAccountTokenPodNodeInfo); Authenticate cross-checks it.
	tr, err := cs.AuthenticationV1().TokenReviews().Create(context.Background(), &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{
		Token: c.token("weft-system", "weft-agent", "weft", agent1), Audiences: []string{"weft"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := tr.Status.User.Extra[extraNodeName]; len(got) != 1 || got[0] != "lab-node-1" {
		t.Fatalf("token review extra %s = %v, want [lab-node-1]", extraNodeName, got)
	}

	a, err := New(Config{Client: cs})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		code  codes.Code
		node  string
	}{
		{"agent on node 1", c.token("weft-system", "weft-agent", "weft", agent1), codes.OK, "lab-node-1"},
		{"agent on node 2", c.token("weft-system", "weft-agent", "weft", agent2), codes.OK, "lab-node-2"},
		{"other audience", c.token("weft-system", "weft-agent", "kubernetes", agent1), codes.Unauthenticated, ""},
		{"non-agent service account", c.token("weft-system", "intruder", "weft", intruder), codes.PermissionDenied, ""},
		{"agent service account name in another namespace", c.token("evil", "weft-agent", "weft", evil), codes.PermissionDenied, ""},
		{"not bound to a pod", c.token("weft-system", "weft-agent", "weft", nil), codes.PermissionDenied, ""},
		{"bound to a pod that is not running", c.token("weft-system", "weft-agent", "weft", pending), codes.PermissionDenied, ""},
		{"bound to a deleted pod", deletedTok, codes.Unauthenticated, ""},
		{"garbage", "not-a-jwt", codes.Unauthenticated, ""},
		{"empty", "", codes.Unauthenticated, ""},
		// Tokens minted with the apiserver's own signing key: the valid one
		// proves the minting is right, so the expired one fails only for
		// its expiry.
		{"minted, valid", mint(t, certDir, issuer, saUID, agent1, now.Add(-time.Minute), now.Add(10*time.Minute)), codes.OK, "lab-node-1"},
		{"minted, expired", mint(t, certDir, issuer, saUID, agent1, now.Add(-2*time.Hour), now.Add(-time.Hour)), codes.Unauthenticated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			node, err := a.Authenticate(context.Background(), tt.token)
			if status.Code(err) != tt.code || node != tt.node {
				t.Fatalf("Authenticate = %q, %v; want %q, %v", node, err, tt.node, tt.code)
			}
			if err != nil {
				t.Logf("refused: %v", err)
			}
		})
	}
}

func issuerOf(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/.well-known/openid-configuration").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("openid configuration: %v", err)
	}
	var doc struct {
		Issuer string `json:"issuer"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Issuer == "" {
		t.Fatalf("openid configuration %s: %v", raw, err)
	}
	return doc.Issuer
}

func saUID(t *testing.T, cs kubernetes.Interface, ns, name string) string {
	t.Helper()
	sa, err := cs.CoreV1().ServiceAccounts(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(sa.UID)
}

// mint signs a pod-bound service account token (ES256) with the
// apiserver's service-account signing key.
func mint(t *testing.T, certDir, issuer, saUID string, pod *corev1.Pod, iat, exp time.Time) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(certDir, "sa-signer.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("sa-signer.key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		t.Fatalf("signing key is %T, want ECDSA", k)
	}
	header := map[string]string{"alg": "ES256", "typ": "JWT"}
	claims := map[string]any{
		"iss": issuer, "aud": []string{"weft"}, "sub": "system:serviceaccount:" + pod.Namespace + ":" + pod.Spec.ServiceAccountName,
		"iat": iat.Unix(), "nbf": iat.Unix(), "exp": exp.Unix(), "jti": fmt.Sprintf("minted-%d", iat.UnixNano()),
		"kubernetes.io": map[string]any{
			"namespace":      pod.Namespace,
			"serviceaccount": map[string]string{"name": pod.Spec.ServiceAccountName, "uid": saUID},
			"pod":            map[string]string{"name": pod.Name, "uid": string(pod.UID)},
		},
	}
	enc := func(v any) string {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(j)
	}
	signing := enc(header) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, key, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// TestAuthenticatePodAgainstAPIServer: tokens of any ServiceAccount bind to
// their running pod (a Gateway's data plane authenticates this way).
func TestAuthenticatePodAgainstAPIServer(t *testing.T) {
	cs, _ := apiserver(t)
	c := cluster{t: t, cs: cs}
	c.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}})
	for _, sa := range []string{"web-weft-gateway", "cart"} {
		c.create(&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: sa}})
	}
	c.create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "lab-node-1"}})
	gw := c.pod("shop", "web-1", "web-weft-gateway", "lab-node-1", corev1.PodRunning)
	cart := c.pod("shop", "cart-1", "cart", "lab-node-1", corev1.PodRunning)
	pending := c.pod("shop", "web-2", "web-weft-gateway", "lab-node-1", corev1.PodPending)

	a, err := New(Config{Client: cs})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		code  codes.Code
		pod   string
	}{
		{"gateway pod", c.token("shop", "web-weft-gateway", "weft", gw), codes.OK, "web-1"},
		{"workload pod", c.token("shop", "cart", "weft", cart), codes.OK, "cart-1"},
		{"other audience", c.token("shop", "web-weft-gateway", "kubernetes", gw), codes.Unauthenticated, ""},
		{"not bound to a pod", c.token("shop", "web-weft-gateway", "weft", nil), codes.PermissionDenied, ""},
		{"pending pod", c.token("shop", "web-weft-gateway", "weft", pending), codes.PermissionDenied, ""},
		{"garbage", "not-a-jwt", codes.Unauthenticated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod, err := a.AuthenticatePod(context.Background(), tt.token)
			if status.Code(err) != tt.code || err == nil && (pod.Name != tt.pod || pod.Namespace != "shop") {
				t.Fatalf("AuthenticatePod = %v, %v; want %s, %v", pod, err, tt.pod, tt.code)
			}
			if err != nil {
				t.Logf("refused: %v", err)
			}
		})
	}
}
