package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// ServingConfig describes the controller's own gRPC serving certificate.
type ServingConfig struct {
	// DNSNames agents dial, e.g. weft-controller.weft-system.svc (required).
	DNSNames []string
	// ServiceAccount of the controller, for its SPIFFE ID
	// spiffe://<td>/ns/<Config.Namespace>/sa/<ServiceAccount>
	// (default weft-controller).
	ServiceAccount string
	// TTL of the certificate (default Config.SVIDTTL).
	TTL time.Duration
}

// ServingCertificate returns a tls.Config.GetCertificate for the
// controller's gRPC listener. The certificate is signed by the CA's current
// signer, so agents verify it with the same trust anchors they get in their
// policy. Its key is generated in memory and never stored. It is reissued at
// half its lifetime and as soon as the signer changes (root rotation).
func (c *CA) ServingCertificate(sc ServingConfig) (func(*tls.ClientHelloInfo) (*tls.Certificate, error), error) {
	if len(sc.DNSNames) == 0 {
		return nil, errors.New("ca: serving certificate needs at least one DNS name")
	}
	if sc.ServiceAccount == "" {
		sc.ServiceAccount = "weft-controller"
	}
	if sc.TTL <= 0 {
		sc.TTL = c.cfg.SVIDTTL
	}
	id, err := mesh.WorkloadID(c.td, c.cfg.Namespace, sc.ServiceAccount)
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate id: %w", err)
	}
	var (
		mu      sync.Mutex
		cur     *tls.Certificate
		signer  *x509.Certificate
		renewAt time.Time
	)
	return func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		l := c.state.Load()
		if l == nil {
			return nil, errors.New("ca root not loaded yet")
		}
		now := c.cfg.Now()
		mu.Lock()
		defer mu.Unlock()
		if cur != nil && now.Before(renewAt) && signer.Equal(l.st.auth.Chain[0]) {
			return cur, nil
		}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("serving key: %w", err)
		}
		chain, leaf, err := l.st.auth.sign(id, sc.DNSNames, key.Public(), now, sc.TTL)
		if err != nil {
			return nil, err
		}
		cur = &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf}
		signer = l.st.auth.Chain[0]
		renewAt = now.Add(leaf.NotAfter.Sub(now) / 2)
		c.log.Info("controller serving certificate issued", "id", id.String(), "dns", sc.DNSNames, "not_after", leaf.NotAfter)
		return cur, nil
	}, nil
}

// DefaultBundleConfigMap is the ConfigMap PublishBundle writes by default.
const DefaultBundleConfigMap = "weft-ca-bundle"

// PublishBundle writes the trust anchors (PEM, key "ca.crt") to a ConfigMap
// in the controller's namespace, for agents to mount and verify the
// controller's serving certificate with before their first policy arrives.
// The leader calls it after EnsureRoot and on every bundle change.
func (c *CA) PublishBundle(ctx context.Context, name string) error {
	if name == "" {
		name = DefaultBundleConfigMap
	}
	l := c.state.Load()
	if l == nil {
		return errors.New("ca root not loaded yet")
	}
	data := map[string]string{keyAnchors: string(certsPEM(l.st.auth.Anchors))}
	cms := c.cfg.Client.CoreV1().ConfigMaps(c.cfg.Namespace)
	cm, err := cms.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: c.cfg.Namespace,
				Labels:          map[string]string{"app.kubernetes.io/managed-by": "weft-controller"},
				OwnerReferences: c.cfg.Owner.Refs(ctx, c.log, "the CA bundle ConfigMap")},
			Data: data,
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create bundle configmap %s/%s: %w", c.cfg.Namespace, name, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get bundle configmap %s/%s: %w", c.cfg.Namespace, name, err)
	}
	if cm.Data[keyAnchors] == data[keyAnchors] {
		return nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[keyAnchors] = data[keyAnchors]
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update bundle configmap %s/%s: %w", c.cfg.Namespace, name, err)
	}
	return nil
}
