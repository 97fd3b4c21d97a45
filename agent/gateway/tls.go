package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// serverTLS is a terminating listener's server configuration: TLS 1.2 or
// later, the certificate chosen by SNI (Listener.PickCert), ALPN h2 and
// http/1.1 on HTTPS listeners, and frontend client validation:
//   - AllowValidOnly: a client certificate is required and must chain to
//     the CA bundle (the handshake fails otherwise);
//   - AllowInsecureFallback: a certificate is asked for (the CA bundle is
//     named in the request) but a connection without one, or with one
//     that does not verify, is accepted, as the spec allows.
func serverTLS(l *Listener, cv *weftv1.ClientValidation) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			return l.PickCert(hello.ServerName).Cert, nil
		},
	}
	if l.Protocol == weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTPS {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if cv == nil {
		return cfg, nil
	}
	pool := x509.NewCertPool()
	for _, ca := range cv.GetCaCertificates() {
		certs, err := weftv1.ParsePEMCertificates(ca.GetPem())
		if err != nil {
			return nil, fmt.Errorf("client validation CA %s: %w", ca.GetRef(), err)
		}
		for _, c := range certs {
			pool.AddCert(c)
		}
	}
	cfg.ClientCAs = pool
	switch cv.GetMode() {
	case weftv1.FrontendValidationMode_FRONTEND_VALIDATION_MODE_ALLOW_VALID_ONLY:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	case weftv1.FrontendValidationMode_FRONTEND_VALIDATION_MODE_ALLOW_INSECURE_FALLBACK:
		// VerifyClientCertIfGiven would refuse an invalid certificate
		cfg.ClientAuth = tls.RequestClientCert
	default:
		return nil, errors.New("client validation mode unspecified")
	}
	return cfg, nil
}
