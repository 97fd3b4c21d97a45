package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

// ControllerTLSConfig returns the TLS client configuration for the agent's
// gRPC connection to the controller (which carries the agent's token, so it
// must not be plaintext). The controller's certificate must be valid for
// serverName and chain to a trust anchor read from bootstrapFile (the CA
// bundle ConfigMap mounted into the agent, PEM; re-read on every handshake,
// so it follows root rotation) or to one of bundles() (the Manager's Bundle,
// from policy; bundles may be nil or return nil). The same connection then
// serves the Policy stream and Identity.Sign.
func ControllerTLSConfig(serverName, bootstrapFile string, bundles func() *x509bundle.Set) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// Verification happens in VerifyConnection with roots that change
		// at run time; crypto/tls's own check needs a fixed pool.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyController(cs, serverName, bootstrapFile, bundles)
		},
	}
}

func verifyController(cs tls.ConnectionState, serverName, bootstrapFile string, bundles func() *x509bundle.Set) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("controller presented no certificate")
	}
	roots := x509.NewCertPool()
	n := 0
	if bootstrapFile != "" {
		if pem, err := os.ReadFile(bootstrapFile); err == nil && roots.AppendCertsFromPEM(pem) {
			n++
		}
	}
	if bundles != nil {
		if set := bundles(); set != nil {
			for _, b := range set.Bundles() {
				for _, c := range b.X509Authorities() {
					roots.AddCert(c)
					n++
				}
			}
		}
	}
	if n == 0 {
		return fmt.Errorf("no trust anchors to verify the controller with (bootstrap file %q unreadable and no policy yet)", bootstrapFile)
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		DNSName: serverName, Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify controller certificate: %w", err)
	}
	return nil
}

// ControllerTLSConfig is ControllerTLSConfig with the Manager's bundle as
// the policy-side source of trust anchors.
func (m *Manager) ControllerTLSConfig(serverName, bootstrapFile string) *tls.Config {
	return ControllerTLSConfig(serverName, bootstrapFile, m.Bundle)
}
