package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ControllerTLSConfig returns the TLS client configuration for the agent's
// gRPC connection to the controller (which carries the agent's token, so it
// must not be plaintext). The controller's certificate must be valid for
// serverName and chain to a trust anchor read from bootstrapFile (the CA
// bundle ConfigMap mounted into the agent, PEM; re-read on every handshake,
// so it follows root rotation) or to the manager's current bundle (from
// policy). bootstrapFile may be empty once policy is known.
func (m *Manager) ControllerTLSConfig(serverName, bootstrapFile string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// Verification happens in VerifyConnection with roots that change
		// at run time; crypto/tls's own check needs a fixed pool.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			return m.verifyController(cs, serverName, bootstrapFile)
		},
	}
}

func (m *Manager) verifyController(cs tls.ConnectionState, serverName, bootstrapFile string) error {
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
	for _, b := range m.Bundle().Bundles() {
		for _, c := range b.X509Authorities() {
			roots.AddCert(c)
			n++
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
		CurrentTime: m.cfg.Clock.Now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify controller certificate: %w", err)
	}
	return nil
}
