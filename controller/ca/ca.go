// Package ca is Weft's workload certificate authority. It runs in the
// controller, keeps its root in a Secret of the controller's namespace, and
// signs X.509-SVIDs (spiffe://<trust-domain>/ns/<ns>/sa/<sa>) for agents,
// which may only obtain identities of enrolled pods bound to their own node.
package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/owner"
)

// DefaultSecretName is the root Secret's name when Config sets none.
const DefaultSecretName = "weft-ca"

// ErrNoRoot: the root Secret does not exist (yet).
var ErrNoRoot = errors.New("ca root secret not found")

// Authenticator turns an agent's bearer token into the node it runs on;
// *agentauth.Authenticator implements it. Errors are gRPC status errors.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (node string, err error)
}

// Config configures a CA.
type Config struct {
	// Client reads and writes the root Secret (get, create, update, watch
	// on secrets in Namespace).
	Client kubernetes.Interface
	// Namespace of the controller, where the root Secret lives (required).
	Namespace string
	// SecretName of the root (default weft-ca). A Secret the user creates
	// with tls.crt, tls.key and ca.crt (cert-manager layout) is used as is.
	SecretName string
	// TrustDomain of issued IDs (default mesh.DefaultTrustDomain).
	TrustDomain string
	// SVIDTTL is the lifetime of issued SVIDs (default 24h).
	SVIDTTL time.Duration
	// RootTTL is the lifetime of generated roots (default 365 days).
	RootTTL time.Duration
	// Authenticator checks agent tokens (required to serve Sign).
	Authenticator Authenticator
	// Pods answers authorization lookups (required to serve Sign); see
	// NewAPIPods.
	Pods Pods
	// PodAuthenticator and GatewayOf, when both set, let the data plane
	// pods of Gateways get their own identity (gateway.go).
	PodAuthenticator PodAuthenticator
	// GatewayOf returns the name of the accepted Gateway of namespace whose
	// data plane runs as serviceAccount (provision.Identity); false: none.
	GatewayOf func(namespace, serviceAccount string) (string, bool)
	// OnSign, when set, is told the outcome of every Identity/Sign call
	// (nil: an SVID was issued; else the gRPC status of the refusal), for
	// the metrics.
	OnSign func(error)
	// OnBundleChange, when set, is called (without locks held) after the
	// trust bundle changed, so the caller can push it with policy.
	OnBundleChange func()
	// Owner, when set, names the object the Secret and ConfigMap the CA creates are
	// owned by, so that the garbage collector removes them when Weft is uninstalled.
	// A root Secret the user created is never given an owner.
	Owner  owner.Func
	Logger *slog.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// CA signs SVIDs. Create it with New, then EnsureRoot (leader) or Load, and
// keep it in sync with Watch.
type CA struct {
	cfg   Config
	td    spiffeid.TrustDomain
	log   *slog.Logger
	state atomic.Pointer[loaded]
	mu    sync.Mutex // serializes install so OnBundleChange fires in order
}

type loaded struct {
	st              *rootState
	resourceVersion string
}

// New checks cfg and fills in defaults. It does no I/O.
func New(cfg Config) (*CA, error) {
	if cfg.Client == nil {
		return nil, errors.New("ca: config has no kubernetes client")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("ca: config has no namespace")
	}
	if cfg.SecretName == "" {
		cfg.SecretName = DefaultSecretName
	}
	if cfg.TrustDomain == "" {
		cfg.TrustDomain = mesh.DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("ca: trust domain %q: %w", cfg.TrustDomain, err)
	}
	if cfg.SVIDTTL <= 0 {
		cfg.SVIDTTL = DefaultSVIDTTL
	}
	if cfg.RootTTL <= 0 {
		cfg.RootTTL = DefaultRootTTL
	}
	if cfg.RootTTL < 4*cfg.SVIDTTL {
		return nil, fmt.Errorf("ca: root lifetime %s must be at least 4x the SVID lifetime %s", cfg.RootTTL, cfg.SVIDTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &CA{cfg: cfg, td: td, log: cfg.Logger.With("component", "ca")}, nil
}

// TrustDomain is the trust domain of issued IDs.
func (c *CA) TrustDomain() spiffeid.TrustDomain { return c.td }

// Ready reports whether a root is loaded.
func (c *CA) Ready() bool { return c.state.Load() != nil }

// Bundle returns the trust anchors (DER) for NodePolicy.trust_anchors; nil
// before a root is loaded.
func (c *CA) Bundle() [][]byte {
	l := c.state.Load()
	if l == nil {
		return nil
	}
	return l.st.auth.AnchorsDER()
}

// Anchors returns the trust anchors as certificates.
func (c *CA) Anchors() []*x509.Certificate {
	l := c.state.Load()
	if l == nil {
		return nil
	}
	return append([]*x509.Certificate(nil), l.st.auth.Anchors...)
}

func (c *CA) secrets() corev1client.SecretInterface {
	return c.cfg.Client.CoreV1().Secrets(c.cfg.Namespace)
}

// Load reads the root Secret and installs it. ErrNoRoot when it is absent.
func (c *CA) Load(ctx context.Context) error {
	s, err := c.secrets().Get(ctx, c.cfg.SecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %s/%s", ErrNoRoot, c.cfg.Namespace, c.cfg.SecretName)
	}
	if err != nil {
		return fmt.Errorf("get ca secret %s/%s: %w", c.cfg.Namespace, c.cfg.SecretName, err)
	}
	return c.install(s)
}

// EnsureRoot loads the root Secret, creating it with a new self-signed root
// when absent. Only the leader should call it. Concurrent callers agree on
// one root: the losing Create reads the winner's Secret.
func (c *CA) EnsureRoot(ctx context.Context) error {
	err := c.Load(ctx)
	if !errors.Is(err, ErrNoRoot) {
		return err
	}
	now := c.cfg.Now()
	cert, key, err := GenerateRoot(c.td, now, c.cfg.RootTTL)
	if err != nil {
		return err
	}
	st := &rootState{
		auth:        &Authority{Chain: []*x509.Certificate{cert}, Key: key, Anchors: []*x509.Certificate{cert}},
		managed:     true,
		activatedAt: now,
	}
	data, ann, err := secretData(st)
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: c.cfg.SecretName, Namespace: c.cfg.Namespace, Annotations: ann,
			Labels:          map[string]string{"app.kubernetes.io/managed-by": "weft-controller"},
			OwnerReferences: c.cfg.Owner.Refs(ctx, c.log, "the CA Secret")},
		Type: corev1.SecretTypeTLS,
		Data: data,
	}
	created, err := c.secrets().Create(ctx, secret, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		c.log.Info("ca root secret created concurrently, using it", "secret", c.cfg.SecretName)
		return c.Load(ctx)
	}
	if err != nil {
		return fmt.Errorf("create ca secret %s/%s: %w", c.cfg.Namespace, c.cfg.SecretName, err)
	}
	c.log.Info("created ca root", "secret", c.cfg.SecretName, "trust_domain", c.td.Name(), "not_after", cert.NotAfter)
	return c.install(created)
}

// install parses s and makes it current. Calls OnBundleChange when the
// anchors changed.
func (c *CA) install(s *corev1.Secret) error {
	st, err := parseSecret(s, c.cfg.Now())
	if err != nil {
		return err
	}
	c.mu.Lock()
	prev := c.state.Load()
	c.state.Store(&loaded{st: st, resourceVersion: s.ResourceVersion})
	changed := prev == nil || !sameCerts(prev.st.auth.Anchors, st.auth.Anchors)
	signerChanged := prev == nil || !prev.st.auth.Chain[0].Equal(st.auth.Chain[0])
	c.mu.Unlock()
	if signerChanged {
		c.log.Info("ca signer loaded", "subject", st.auth.Chain[0].Subject.String(), "anchors", len(st.auth.Anchors), "not_after", st.auth.Chain[0].NotAfter)
	}
	if changed && c.cfg.OnBundleChange != nil {
		c.cfg.OnBundleChange()
	}
	return nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// Watch keeps the CA in sync with the root Secret until ctx ends: every
// replica runs it, so a rotation step the leader writes reaches all of them.
// It returns ctx's error.
func (c *CA) Watch(ctx context.Context) error {
	backoff := time.Second
	for ctx.Err() == nil {
		err := c.watchOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		if err == nil { // the watch ended normally: resync soon
			backoff = time.Second
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		c.log.Warn("ca secret watch failed, retrying", logkey.Error, err, "backoff", backoff)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	return ctx.Err()
}

func (c *CA) watchOnce(ctx context.Context) error {
	list, err := c.secrets().List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + c.cfg.SecretName})
	if err != nil {
		return fmt.Errorf("list ca secret: %w", err)
	}
	for i := range list.Items {
		if err := c.install(&list.Items[i]); err != nil {
			c.log.Error("ca secret unusable, keeping the previous root", logkey.Error, err)
		}
	}
	w, err := c.secrets().Watch(ctx, metav1.ListOptions{
		FieldSelector:   "metadata.name=" + c.cfg.SecretName,
		ResourceVersion: list.ResourceVersion,
	})
	if err != nil {
		return fmt.Errorf("watch ca secret: %w", err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		s, ok := ev.Object.(*corev1.Secret)
		if !ok {
			return fmt.Errorf("watch ca secret: unexpected %s event %T", ev.Type, ev.Object)
		}
		switch ev.Type {
		case "ADDED", "MODIFIED":
			if err := c.install(s); err != nil {
				c.log.Error("ca secret unusable, keeping the previous root", logkey.Error, err)
			}
		case "DELETED":
			c.log.Error("ca secret deleted, keeping the loaded root in memory", "secret", c.cfg.SecretName)
		}
	}
	return nil
}
