package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Defaults for Config.
const (
	DefaultSVIDTTL = 24 * time.Hour
	DefaultRootTTL = 365 * 24 * time.Hour
	// backdate is subtracted from NotBefore to absorb clock skew between
	// nodes.
	backdate = time.Minute
)

// ErrNoSigner: the authority has no usable signing certificate.
var ErrNoSigner = errors.New("ca has no valid signing certificate")

// Authority is a set of signing material: the certificate that signs SVIDs
// (followed by its intermediates, if any), its key, and the trust anchors
// peers verify SVIDs against. A value is immutable once built.
type Authority struct {
	// Chain[0] signs SVIDs; Chain[1:] are intermediates up to an anchor.
	Chain   []*x509.Certificate
	Key     crypto.Signer
	Anchors []*x509.Certificate
}

// GenerateRoot creates a self-signed ECDSA P-256 root for td, valid from
// now-backdate for ttl. It signs SVIDs directly (path length 0).
func GenerateRoot(td spiffeid.TrustDomain, now time.Time, ttl time.Duration) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{"weft"},
			CommonName:   "weft root CA " + now.UTC().Format(time.RFC3339),
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse generated root: %w", err)
	}
	return cert, key, nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

// SignSVID issues an X.509-SVID for id with pub (from a validated CSR): URI
// SAN id only, not a CA, keyUsage digitalSignature (plus keyEncipherment for
// RSA keys), extKeyUsage serverAuth and clientAuth, valid from now-backdate
// until now+ttl or the expiry of the signer's chain, whichever is first. It
// returns the DER chain: the SVID, then every certificate of the signer's chain that is
// not a trust anchor (the signer itself when it is an intermediate).
func (a *Authority) SignSVID(id spiffeid.ID, pub crypto.PublicKey, now time.Time, ttl time.Duration) ([][]byte, *x509.Certificate, error) {
	return a.sign(id, nil, pub, now, ttl)
}

// sign is SignSVID with optional DNS SANs (the X509-SVID spec allows them
// besides the one URI SAN; only the controller's serving certificate has
// them).
func (a *Authority) sign(id spiffeid.ID, dnsNames []string, pub crypto.PublicKey, now time.Time, ttl time.Duration) ([][]byte, *x509.Certificate, error) {
	if a == nil || len(a.Chain) == 0 || a.Key == nil {
		return nil, nil, ErrNoSigner
	}
	signer := a.Chain[0]
	if !now.Before(signer.NotAfter) || now.Before(signer.NotBefore) {
		return nil, nil, fmt.Errorf("%w: signing certificate valid %s to %s", ErrNoSigner, signer.NotBefore.UTC(), signer.NotAfter.UTC())
	}
	notAfter := now.Add(ttl)
	for _, c := range a.Chain { // never outlive any certificate above it
		if notAfter.After(c.NotAfter) {
			notAfter = c.NotAfter
		}
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	usage := x509.KeyUsageDigitalSignature
	if _, ok := pub.(*rsa.PublicKey); ok {
		// TLS 1.2 RSA key exchange needs keyEncipherment.
		usage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"weft"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              usage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		URIs:                  []*url.URL{id.URL()},
		DNSNames:              dnsNames,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, pub, a.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign svid for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse issued svid: %w", err)
	}
	chain := [][]byte{der}
	for _, c := range a.Chain {
		if !containsCert(a.Anchors, c) {
			chain = append(chain, c.Raw)
		}
	}
	return chain, leaf, nil
}

// AnchorsDER returns the trust anchors as DER.
func (a *Authority) AnchorsDER() [][]byte {
	if a == nil {
		return nil
	}
	out := make([][]byte, len(a.Anchors))
	for i, c := range a.Anchors {
		out[i] = c.Raw
	}
	return out
}

// Check verifies the material is consistent at time now: the signing
// certificate is a CA allowed to sign certificates, the key matches it, and
// it chains to one of the anchors.
func (a *Authority) Check(now time.Time) error {
	if len(a.Chain) == 0 {
		return fmt.Errorf("%w: no certificate", ErrNoSigner)
	}
	if a.Key == nil {
		return fmt.Errorf("%w: no private key", ErrNoSigner)
	}
	if len(a.Anchors) == 0 {
		return errors.New("no trust anchors")
	}
	signer := a.Chain[0]
	if !signer.IsCA || !signer.BasicConstraintsValid || signer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%w: %q is not a CA certificate with keyUsage certSign", ErrNoSigner, signer.Subject)
	}
	if !publicKeyEqual(a.Key.Public(), signer.PublicKey) {
		return fmt.Errorf("%w: private key does not match certificate %q", ErrNoSigner, signer.Subject)
	}
	for _, c := range a.Anchors {
		if !c.IsCA {
			return fmt.Errorf("trust anchor %q is not a CA certificate", c.Subject)
		}
	}
	roots := x509.NewCertPool()
	for _, c := range a.Anchors {
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, c := range a.Chain[1:] {
		inter.AddCert(c)
	}
	if _, err := signer.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("%w: %q does not chain to a trust anchor: %v", ErrNoSigner, signer.Subject, err)
	}
	return nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}
