package echo

// The "basic" surface: what the Gateway API conformance suite expects of its echo-basic
// image (registry.k8s.io/gateway-api/conformance/echo-basic). The image takes no
// arguments; its environment picks one of four servers:
//
//	GRPC_ECHO_SERVER set  the GrpcEcho service (basicpb) on HTTP_PORT (3000), and on
//	                      HTTPS_PORT (8443) over TLS when TLS_SERVER_CERT and
//	                      TLS_SERVER_PRIV_KEY are set;
//	TCP_ECHO_SERVER set   the line-based TCP echo on TCP_PORT (3000), and on TLS_PORT
//	                      (8443) over TLS when TLS_SERVER_CERT and TLS_SERVER_PRIV_KEY
//	                      are set; TCP_MODE=RESET resets every connection instead;
//	UDP_ECHO_SERVER set   the UDP echo on UDP_PORT (8080);
//	otherwise             HTTP/1.1 on HTTP_PORT (3000), HTTP/1.1 and h2c on H2C_PORT
//	                      (3001), and HTTPS (h2, http/1.1) on HTTPS_PORT (8443) when
//	                      TLS_SERVER_CERT and TLS_SERVER_PRIVKEY are set, asking for a
//	                      client certificate signed by TLS_CLIENT_CACERTS when set.
//
// Every answer names the pod: POD_NAME, NAMESPACE, SERVICE_NAME, INGRESS_NAME. The
// private-key variable differs between the HTTP server (PRIVKEY) and the others
// (PRIV_KEY), as in echo-basic and in the suite's manifests.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"
)

// BasicMode is which echo-basic server runs.
type BasicMode string

// The echo-basic servers.
const (
	BasicHTTP BasicMode = "http"
	BasicGRPC BasicMode = "grpc"
	BasicTCP  BasicMode = "tcp"
	BasicUDP  BasicMode = "udp"
)

// BasicConfig configures ServeBasic; ParseBasicEnv fills it from echo-basic's environment.
type BasicConfig struct {
	Mode     BasicMode
	Identity Identity // Pod, Namespace, Service, Ingress
	// Host is the address the servers listen on; empty: every interface.
	Host string
	// HTTPPort is the HTTP port (gRPC mode: the plaintext gRPC port); the HTTP answer
	// reports it as httpPort. H2CPort is the HTTP/1.1 + h2c port. HTTPSPort is the TLS
	// port of the HTTP and gRPC modes.
	HTTPPort, H2CPort, HTTPSPort string
	// TCPPort and TLSPort are the TCP mode's ports; TCPReset resets every connection.
	TCPPort, TLSPort string
	TCPReset         bool
	UDPPort          string
	// CertFile and KeyFile turn on the TLS port; ClientCAFile (HTTP mode) makes it ask
	// for a client certificate and verify one when given.
	CertFile, KeyFile, ClientCAFile string
	// Requests receives one line per echoed HTTP request, "Echoing back request made
	// to <request URI> to client (<remote>)": the suite's mirror tests look for it in
	// the container log, so the command points it at stdout. Nil: discarded.
	Requests io.Writer
	Logger   *slog.Logger
}

// ParseBasicEnv reads echo-basic's environment through getenv (os.Getenv in the command).
func ParseBasicEnv(getenv func(string) string) (BasicConfig, error) {
	or := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	cfg := BasicConfig{
		Mode: BasicHTTP,
		Identity: Identity{
			Pod:       getenv("POD_NAME"),
			Namespace: getenv("NAMESPACE"),
			Service:   getenv("SERVICE_NAME"),
			Ingress:   getenv("INGRESS_NAME"),
		},
		HTTPPort:  or("HTTP_PORT", "3000"),
		H2CPort:   or("H2C_PORT", "3001"),
		HTTPSPort: or("HTTPS_PORT", "8443"),
		TCPPort:   or("TCP_PORT", "3000"),
		TLSPort:   or("TLS_PORT", "8443"),
		TCPReset:  getenv("TCP_MODE") == "RESET",
		UDPPort:   or("UDP_PORT", "8080"),
		CertFile:  getenv("TLS_SERVER_CERT"),
		KeyFile:   getenv("TLS_SERVER_PRIV_KEY"),
	}
	switch {
	case getenv("GRPC_ECHO_SERVER") != "":
		cfg.Mode = BasicGRPC
	case getenv("TCP_ECHO_SERVER") != "":
		cfg.Mode = BasicTCP
	case getenv("UDP_ECHO_SERVER") != "":
		cfg.Mode = BasicUDP
	default:
		cfg.KeyFile = getenv("TLS_SERVER_PRIVKEY")
		cfg.ClientCAFile = getenv("TLS_CLIENT_CACERTS")
	}
	// Only the ports the mode listens on must be numbers, as in echo-basic.
	ports := map[BasicMode]map[string]string{
		BasicHTTP: {"HTTP_PORT": cfg.HTTPPort, "H2C_PORT": cfg.H2CPort, "HTTPS_PORT": cfg.HTTPSPort},
		BasicGRPC: {"HTTP_PORT": cfg.HTTPPort, "HTTPS_PORT": cfg.HTTPSPort},
		BasicTCP:  {"TCP_PORT": cfg.TCPPort, "TLS_PORT": cfg.TLSPort},
		BasicUDP:  {"UDP_PORT": cfg.UDPPort},
	}[cfg.Mode]
	for name, port := range ports {
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return cfg, fmt.Errorf("%w: %s=%q is not a port", ErrBadConfig, name, port)
		}
	}
	return cfg, nil
}

func (c BasicConfig) log() *slog.Logger {
	if c.Logger == nil {
		return slog.Default()
	}
	return c.Logger
}

// TLS reports whether the TLS port is on (both a certificate and a key are given).
func (c BasicConfig) TLS() bool { return c.CertFile != "" && c.KeyFile != "" }

// ServeBasic runs cfg.Mode's servers until ctx is done or one of them fails.
func ServeBasic(ctx context.Context, cfg BasicConfig) error {
	cfg.Logger = cfg.log()
	if cfg.Requests == nil {
		cfg.Requests = io.Discard
	}
	var (
		servers []server
		err     error
	)
	switch cfg.Mode {
	case BasicHTTP, "":
		servers, err = basicHTTPServers(cfg)
	case BasicGRPC:
		servers, err = basicGRPCServers(cfg)
	case BasicTCP:
		servers, err = basicTCPServers(cfg)
	case BasicUDP:
		servers, err = basicUDPServers(cfg)
	default:
		err = fmt.Errorf("%w: unknown mode %q", ErrBadConfig, cfg.Mode)
	}
	if err != nil {
		return err
	}
	for _, s := range servers {
		cfg.Logger.Info("weft-echo basic serving", "server", s.name, "addr", s.addr, "pod", cfg.Identity.Pod)
	}
	return runServers(ctx, servers)
}

// server is one listening server: serve blocks until stop is called or it fails.
type server struct {
	name, addr string
	serve      func() error
	stop       func()
}

// runServers serves every server until ctx is done or the first fails, then stops all.
func runServers(ctx context.Context, servers []server) error {
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			if err := s.serve(); err != nil {
				errc <- fmt.Errorf("%s on %s: %w", s.name, s.addr, err)
				return
			}
			errc <- nil
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if err == nil {
			err = errors.New("a server stopped")
		}
	}
	for _, s := range servers {
		s.stop()
	}
	return err
}

// stopAll stops servers already listening when a later one cannot be set up.
func stopAll(servers []server) {
	for _, s := range servers {
		s.stop()
	}
}

// serverTLS loads the key pair and, when clientCAFile is set, the CAs that verify a
// client certificate if the client sends one (connections without one are accepted).
func serverTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS key pair %s, %s: %w", certFile, keyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCAFile != "" {
		pemCAs, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("read client CAs: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCAs) {
			return nil, fmt.Errorf("client CAs %s: no PEM certificate", clientCAFile)
		}
		cfg.ClientAuth, cfg.ClientCAs = tls.VerifyClientCertIfGiven, pool
	}
	return cfg, nil
}

const shutdownGrace = 5 * time.Second
