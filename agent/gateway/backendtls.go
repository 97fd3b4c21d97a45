package gateway

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// ErrBackendTLSInvalid: the cluster's BackendTLSPolicy is unusable; no
// connection is made.
var ErrBackendTLSInvalid = errors.New("backend TLS policy invalid")

// ErrBackendSAN: the backend's certificate names none of the expected names.
var ErrBackendSAN = errors.New("backend certificate does not match")

// BackendTLS is a compiled weftv1.BackendTLS.
type BackendTLS struct {
	Policy  string
	Invalid string
	// Config verifies the backend (chain and names); nil when Invalid.
	// Certificates and NextProtos are set per dial.
	Config *tls.Config
	// Key names the verification in connection pools: a connection
	// verified for one policy is never reused for another (two Services
	// with different policies may share endpoints). Equal policies share
	// a key, so an unchanged policy keeps its connections across applies.
	Key string
}

func compileBackendTLS(in map[string]*weftv1.BackendTLS) (map[string]*BackendTLS, error) {
	out := make(map[string]*BackendTLS, len(in))
	for cluster, b := range in {
		bt := &BackendTLS{Policy: b.GetPolicy(), Invalid: b.GetInvalid(), Key: backendTLSKey(b)}
		if bt.Invalid == "" {
			cfg, err := backendConfig(b)
			if err != nil {
				return nil, fmt.Errorf("%w: backend TLS of %s: %w", ErrInvalidPolicy, cluster, err)
			}
			bt.Config = cfg
		}
		out[cluster] = bt
	}
	return out, nil
}

// backendTLSKey hashes what verification depends on.
func backendTLSKey(b *weftv1.BackendTLS) string {
	enc, err := proto.MarshalOptions{Deterministic: true}.Marshal(b)
	if err != nil { // cannot happen for a valid message; never share then
		enc = fmt.Appendf(nil, "%p", b)
	}
	sum := sha256.Sum256(enc)
	return hex.EncodeToString(sum[:8])
}

// backendConfig sends Hostname as SNI and verifies the chain against the CA
// bundle (or the system roots) and the names against the SAN rules of
// BackendTLSPolicy: the hostname, or when subject alt names are given, at
// least one of them (and not the hostname).
func backendConfig(b *weftv1.BackendTLS) (*tls.Config, error) {
	var roots *x509.CertPool // nil: system roots
	if !b.GetSystem() {
		roots = x509.NewCertPool()
		for _, ca := range b.GetCaCertificates() {
			certs, err := weftv1.ParsePEMCertificates(ca.GetPem())
			if err != nil {
				return nil, fmt.Errorf("CA %s: %w", ca.GetRef(), err)
			}
			for _, c := range certs {
				roots.AddCert(c)
			}
		}
	}
	host, sans := b.GetHostname(), b.GetSubjectAltNames()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: host,
		// crypto/tls checks the chain against ServerName; the SAN rules
		// differ, so VerifyConnection does both.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyBackend(cs, roots, host, sans)
		},
	}, nil
}

func verifyBackend(cs tls.ConnectionState, roots *x509.CertPool, host string, sans []*weftv1.SubjectAltName) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("backend presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := leaf.Verify(opts); err != nil {
		return fmt.Errorf("verify backend certificate: %w", err)
	}
	if len(sans) == 0 {
		if err := leaf.VerifyHostname(host); err != nil {
			return fmt.Errorf("%w: %w", ErrBackendSAN, err)
		}
		return nil
	}
	for _, s := range sans {
		if sanMatches(leaf, s) {
			return nil
		}
	}
	return fmt.Errorf("%w: none of the %d subject alt names of the policy", ErrBackendSAN, len(sans))
}

// sanMatches reports whether the certificate carries the SAN: a URI
// exactly; a DNS name as a host name it is valid for, or a "*." name as
// the same wildcard or a name one label under it.
func sanMatches(leaf *x509.Certificate, s *weftv1.SubjectAltName) bool {
	v := s.GetValue()
	if s.GetUri() {
		for _, u := range leaf.URIs {
			if u.String() == v {
				return true
			}
		}
		return false
	}
	if !strings.HasPrefix(v, "*.") {
		return leaf.VerifyHostname(v) == nil
	}
	for _, n := range leaf.DNSNames {
		if strings.EqualFold(n, v) {
			return true
		}
		if dot := strings.IndexByte(n, '.'); dot > 0 && n[0] != '*' && strings.EqualFold(n[dot:], v[1:]) {
			return true
		}
	}
	return false
}
