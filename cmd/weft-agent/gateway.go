package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/agent/gateway"
	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/memlimit"
)

// gatewayFlags are the flags of `weft-agent gateway`, the data plane the
// controller provisions per Gateway of class weft.
type gatewayFlags struct {
	gateway, controller, controllerCA, tokenFile, healthAddr string
	metricsAddr                                              string
	grace                                                    time.Duration
	logLevel                                                 slog.Level
}

func parseGateway(args []string) (*gatewayFlags, error) {
	f := &gatewayFlags{}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.StringVar(&f.gateway, "gateway", "", "namespace/name of the Gateway this data plane serves")
	fs.StringVar(&f.controller, "controller", "weft-controller.weft-system.svc:15012", "controller gRPC address")
	fs.StringVar(&f.controllerCA, "controller-ca", "/var/run/secrets/weft/ca.crt", "mesh root bundle (PEM) the controller's certificate chains to")
	fs.StringVar(&f.tokenFile, "token-file", "/var/run/secrets/weft/token", "projected ServiceAccount token (audience weft)")
	fs.StringVar(&f.healthAddr, "health-addr", ":15021", "health and readiness endpoint")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "Prometheus metrics endpoint (/metrics); empty: metrics off (the controller provisions :15020)")
	fs.DurationVar(&f.grace, "grace", 20*time.Second, "drain grace period on SIGTERM")
	fs.TextVar(&f.logLevel, "log-level", slog.LevelInfo, "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	ns, name, ok := strings.Cut(f.gateway, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return nil, errors.New("--gateway=<namespace>/<name> is required")
	}
	return f, nil
}

func runGateway(args []string) error {
	f, err := parseGateway(args)
	if err != nil {
		return err
	}
	log := newLogger(os.Stderr, f.logLevel)
	slog.SetDefault(log)
	log.Info("starting gateway data plane", logkey.Build, version, logkey.Gateway, f.gateway)
	memlimit.Apply(log, os.Getenv("GOMEMLIMIT"))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return gateway.Run(ctx, gateway.RunConfig{
		Gateway:          f.gateway,
		ControllerAddr:   f.controller,
		ControllerCAFile: f.controllerCA,
		Token:            func() (string, error) { return readToken(f.tokenFile) },
		HealthAddr:       f.healthAddr,
		MetricsAddr:      f.metricsAddr,
		GracePeriod:      f.grace,
		Logger:           log,
	})
}
