package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

type rpConfig struct {
	role, listen, upstream, pki string
	handoff                     bool // floor only: see floorRelay
}

// runRP runs one httputil.ReverseProxy hop: role a takes plaintext and sends
// over TLS 1.3 with a client certificate; role b requires a client
// certificate and sends plaintext (the same shape as the nginx peer).
func runRP(ctx context.Context, c rpConfig) error {
	cert, pool, err := peerPKI(c.pki)
	if err != nil {
		return err
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second, DisableCompression: true}
	scheme := "http"
	if c.role == "a" {
		scheme = "https"
		tr.TLSClientConfig = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "mesh", MinVersion: tls.VersionTLS13}
		// HTTP/1.1 between the hops, like nginx's proxy_pass
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	target, err := url.Parse(scheme + "://" + c.upstream)
	if err != nil {
		return err
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = r.In.Host },
		Transport: tr,
	}
	srv := &http.Server{Handler: rp}
	l, err := net.Listen("tcp", c.listen)
	if err != nil {
		return err
	}
	switch c.role {
	case "a":
	case "b":
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
		l = tls.NewListener(l, srv.TLSConfig)
	default:
		return fmt.Errorf("rp role %q", c.role)
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// peerPKI loads the peers' certificate (pki/cert.pem and key.pem under
// dir, as nginx's configs use them), also their only trusted root.
func peerPKI(dir string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "pki", "cert.pem"), filepath.Join(dir, "pki", "key.pem"))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "pki", "cert.pem"))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return cert, pool, nil
}
