package ca

import (
	"cmp"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// Keys of the root Secret. tls.crt, tls.key and ca.crt are the layout
// cert-manager writes, so a user-provided CA works unchanged.
const (
	keyCert    = corev1.TLSCertKey       // signing certificate, then intermediates (PEM)
	keyKey     = corev1.TLSPrivateKeyKey // signing key (PEM)
	keyAnchors = "ca.crt"                // trust anchors (PEM, one or more)
	keyNextCrt = "next.crt"              // staged root during a rotation
	keyNextKey = "next.key"
)

// ErrBadSecret: the root Secret's content is unusable.
var ErrBadSecret = errors.New("bad CA secret")

// rootState is what the Secret says, parsed.
type rootState struct {
	auth        *Authority
	managed     bool
	next        *x509.Certificate // staged root, nil when none
	nextKey     crypto.Signer
	activatedAt time.Time
	stagedAt    time.Time
}

// parseSecret reads the Secret layout. Pure.
func parseSecret(s *corev1.Secret, now time.Time) (*rootState, error) {
	chain, err := parseCerts(s.Data[keyCert])
	if err != nil || len(chain) == 0 {
		return nil, fmt.Errorf("%w %s/%s: %s: %v", ErrBadSecret, s.Namespace, s.Name, keyCert, cmp.Or(err, errNoCertificate))
	}
	key, err := parseKey(s.Data[keyKey])
	if err != nil {
		return nil, fmt.Errorf("%w %s/%s: %s: %v", ErrBadSecret, s.Namespace, s.Name, keyKey, err)
	}
	var anchors []*x509.Certificate
	if len(s.Data[keyAnchors]) > 0 {
		if anchors, err = parseCerts(s.Data[keyAnchors]); err != nil {
			return nil, fmt.Errorf("%w %s/%s: %s: %v", ErrBadSecret, s.Namespace, s.Name, keyAnchors, err)
		}
	} else if last := chain[len(chain)-1]; last.CheckSignatureFrom(last) == nil {
		anchors = []*x509.Certificate{last}
	} else {
		return nil, fmt.Errorf("%w %s/%s: no %s and %s does not end in a self-signed root", ErrBadSecret, s.Namespace, s.Name, keyAnchors, keyCert)
	}
	st := &rootState{
		auth:    &Authority{Chain: chain, Key: key, Anchors: anchors},
		managed: s.Annotations[mesh.AnnotationCAManaged] == "true",
	}
	if err := st.auth.Check(now); err != nil {
		return nil, fmt.Errorf("%w %s/%s: %v", ErrBadSecret, s.Namespace, s.Name, err)
	}
	if len(s.Data[keyNextCrt]) > 0 {
		next, err := parseCerts(s.Data[keyNextCrt])
		if err != nil || len(next) != 1 {
			return nil, fmt.Errorf("%w %s/%s: %s: want one certificate: %v", ErrBadSecret, s.Namespace, s.Name, keyNextCrt, cmp.Or(err, errNoCertificate))
		}
		nk, err := parseKey(s.Data[keyNextKey])
		if err != nil {
			return nil, fmt.Errorf("%w %s/%s: %s: %v", ErrBadSecret, s.Namespace, s.Name, keyNextKey, err)
		}
		staged := &Authority{Chain: next, Key: nk, Anchors: next}
		if err := staged.Check(now); err != nil {
			return nil, fmt.Errorf("%w %s/%s: staged root: %v", ErrBadSecret, s.Namespace, s.Name, err)
		}
		if !containsCert(anchors, next[0]) {
			return nil, fmt.Errorf("%w %s/%s: staged root is not in %s", ErrBadSecret, s.Namespace, s.Name, keyAnchors)
		}
		st.next, st.nextKey = next[0], nk
	}
	for ann, dst := range map[string]*time.Time{mesh.AnnotationCAActivatedAt: &st.activatedAt, mesh.AnnotationCAStagedAt: &st.stagedAt} {
		if v := s.Annotations[ann]; v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return nil, fmt.Errorf("%w %s/%s: annotation %s: %v", ErrBadSecret, s.Namespace, s.Name, ann, err)
			}
			*dst = t
		}
	}
	return st, nil
}

// errNoCertificate explains a PEM field that parsed to nothing.
var errNoCertificate = errors.New("no certificate")

// secretData renders a state into Secret data and annotations. Pure.
func secretData(st *rootState) (map[string][]byte, map[string]string, error) {
	keyPEM, err := marshalKey(st.auth.Key)
	if err != nil {
		return nil, nil, err
	}
	data := map[string][]byte{
		keyCert:    certsPEM(st.auth.Chain),
		keyKey:     keyPEM,
		keyAnchors: certsPEM(st.auth.Anchors),
	}
	if st.next != nil {
		nk, err := marshalKey(st.nextKey)
		if err != nil {
			return nil, nil, err
		}
		data[keyNextCrt] = certsPEM([]*x509.Certificate{st.next})
		data[keyNextKey] = nk
	}
	ann := map[string]string{}
	if st.managed {
		ann[mesh.AnnotationCAManaged] = "true"
	}
	if !st.activatedAt.IsZero() {
		ann[mesh.AnnotationCAActivatedAt] = st.activatedAt.UTC().Format(time.RFC3339)
	}
	if st.next != nil && !st.stagedAt.IsZero() {
		ann[mesh.AnnotationCAStagedAt] = st.stagedAt.UTC().Format(time.RFC3339)
	}
	return data, ann, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	return out, nil
}

func parseKey(b []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	var (
		k   any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse private key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key type %T cannot sign", k)
	}
	return signer, nil
}

func marshalKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("marshal private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

func containsCert(set []*x509.Certificate, c *x509.Certificate) bool {
	return slices.ContainsFunc(set, func(x *x509.Certificate) bool { return x.Equal(c) })
}
