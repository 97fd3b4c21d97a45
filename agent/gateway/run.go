package gateway

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weft-mesh/weft/agent/metrics"
	policyclient "github.com/weft-mesh/weft/agent/policy"
	"github.com/weft-mesh/weft/agent/proxy/identity"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/api/promserve"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// RunConfig configures Run: one Gateway's data plane process.
type RunConfig struct {
	// Gateway is "namespace/name".
	Gateway string
	// ControllerAddr is the controller's gRPC address (host:port); its
	// certificate must be valid for the host and chain to ControllerCAFile
	// (or to the trust anchors of the policy in force).
	ControllerAddr   string
	ControllerCAFile string
	// Token returns the pod's projected ServiceAccount token (sent with
	// the policy stream and with Identity.Sign).
	Token func() (string, error)
	// HealthAddr serves /healthz and /readyz.
	HealthAddr string
	// MetricsAddr serves the Prometheus metrics (/metrics); empty: none.
	MetricsAddr string
	// GracePeriod bounds the drain on shutdown (default 20s).
	GracePeriod time.Duration
	// Gateway is the data plane's own configuration (Tunnel is set by Run).
	Data   Config
	Logger *slog.Logger
}

// Run serves the Gateway until ctx ends, then drains: readiness turns false
// at once, listeners close, requests and connections get GracePeriod.
//
// The gateway's SVID (GatewayPolicy.identity) is asked of the controller's
// Identity.Sign with the pod's token and a CSR for that ID, and no node:
// until the controller signs for gateway identities, enrolled backends are
// unreachable (502, and the identity manager logs each refused Sign) while
// plaintext backends are served.
func Run(ctx context.Context, cfg RunConfig) error {
	base := cmp.Or(cfg.Logger, slog.Default())
	log := base.With(logkey.Gateway, cfg.Gateway)
	cfg.GracePeriod = cmp.Or(cfg.GracePeriod, 20*time.Second)
	var ids *identity.Manager
	conn, err := dialController(cfg.ControllerAddr, cfg.ControllerCAFile, func() *identity.Manager { return ids })
	if err != nil {
		return err
	}
	defer conn.Close()
	ids, err = identity.New(identity.Config{Client: weftv1.NewIdentityClient(conn), Token: cfg.Token, Logger: log})
	if err != nil {
		return fmt.Errorf("gateway identity: %w", err)
	}
	dialer := tunnel.NewDialer(tunnel.DialerConfig{Identities: ids})
	defer dialer.Close()
	data := cfg.Data
	data.Tunnel, data.Logger = dialer, cmp.Or(data.Logger, log)
	var polMetrics *metrics.Agent
	if cfg.MetricsAddr != "" {
		reg := promserve.Registry()
		data.Metrics, polMetrics = metrics.NewProxy(reg, nil), metrics.NewAgent(reg)
		srv, err := serveMetrics(cfg.MetricsAddr, reg)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	g, err := New(data)
	if err != nil {
		return err
	}
	client, err := policyclient.New(policyclient.Config{
		Gateway: cfg.Gateway, Conn: conn, Token: cfg.Token, Log: base, Metrics: polMetrics, // it names the Gateway itself
		ApplyGateway: func(p *weftv1.GatewayPolicy) error { return applyWithIdentity(g, ids, p) },
	})
	if err != nil {
		return err
	}
	var draining atomic.Bool
	health, err := serveHealth(cfg.HealthAddr, func() bool { return g.Ready() && !draining.Load() })
	if err != nil {
		return err
	}
	defer health.Close()
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	eg, egCtx := errgroup.WithContext(runCtx)
	eg.Go(func() error { return ids.Run(egCtx) })
	eg.Go(func() error { return client.Run(egCtx) })
	<-ctx.Done()
	draining.Store(true)
	log.Info("draining", logkey.Grace, cfg.GracePeriod)
	dctx, cancel := context.WithTimeout(context.Background(), cfg.GracePeriod)
	defer cancel()
	err = g.Shutdown(dctx)
	stop()
	if werr := eg.Wait(); werr != nil && !errors.Is(werr, context.Canceled) {
		return werr
	}
	return err
}

// applyWithIdentity puts a policy in force, then points the identity
// manager at the gateway's identity and trust anchors.
func applyWithIdentity(g *Gateway, ids *identity.Manager, p *weftv1.GatewayPolicy) error {
	if err := g.Apply(p); err != nil {
		return err
	}
	s := g.Snapshot()
	if len(p.GetTrustAnchors()) > 0 && !s.Identity.IsZero() {
		if err := ids.SetTrustAnchors(s.Identity.TrustDomain(), p.GetTrustAnchors()); err != nil {
			return fmt.Errorf("trust anchors: %w", err)
		}
	}
	ids.SetWanted([]spiffeid.ID{s.Identity})
	return nil
}

// dialController opens the (lazy) controller connection, verifying the
// controller against the CA file or the policy's trust anchors.
func dialController(addr, caFile string, ids func() *identity.Manager) (*grpc.ClientConn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("controller address %q: %w", addr, err)
	}
	creds := credentials.NewTLS(&tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection, with roots that follow rotation
		VerifyConnection: func(cs tls.ConnectionState) error {
			return ids().ControllerTLSConfig(host, caFile).VerifyConnection(cs)
		},
	})
	conn, err := grpc.NewClient(addr, append(weftv1.DialOptions(), grpc.WithTransportCredentials(creds))...)
	if err != nil {
		return nil, fmt.Errorf("controller %s: %w", addr, err)
	}
	return conn, nil
}

// serveMetrics serves reg on /metrics.
func serveMetrics(addr string, reg *prometheus.Registry) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(mesh.MetricsPath, promserve.Handler(reg))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// serveHealth serves /healthz (the process runs) and /readyz (a policy is
// applied, every listener of it is open, and no drain began).
func serveHealth(addr string, ready func() bool) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health endpoint %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready: no gateway policy applied yet, or draining", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}
