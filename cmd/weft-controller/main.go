// Command weft-controller resolves Gateway API mesh routes into per-node
// policy, streams it to weft-agents, writes route status (leader only) and
// signs workload certificates.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/controller"
	"github.com/weft-mesh/weft/controller/agentauth"
	"github.com/weft-mesh/weft/controller/ca"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "weft-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	hostname, _ := os.Hostname()
	var (
		kubeconfig  = flag.String("kubeconfig", "", "kubeconfig file; in-cluster config when empty (then $KUBECONFIG)")
		namespace   = flag.String("namespace", envOr("POD_NAMESPACE", controller.DefaultNamespace), "namespace the controller runs in (Lease, CA Secret)")
		grpcAddr    = flag.String("grpc-addr", controller.DefaultGRPCAddr, "address of the Policy and Identity gRPC server")
		healthAddr  = flag.String("health-addr", controller.DefaultHealthAddr, "address of /healthz, /readyz and /debug/nodes (\"-\": none)")
		debounce    = flag.Duration("debounce", controller.DefaultDebounce, "how long a change waits for more before one resolution")
		trustDomain = flag.String("trust-domain", ca.DefaultTrustDomain, "SPIFFE trust domain")
		leaderElect = flag.Bool("leader-elect", true, "write statuses only while holding the Lease")
		id          = flag.String("id", envOr("POD_NAME", hostname), "identity of this replica in the Lease")
		agentNS     = flag.String("agent-namespace", "", "namespace of the weft-agent ServiceAccount (default: --namespace)")
		agentSA     = flag.String("agent-service-account", agentauth.DefaultServiceAccount, "ServiceAccount of weft-agent pods")
		logLevel    = flag.String("log-level", "info", "debug, info, warn or error")
		serveTLS    = flag.Bool("tls", true, "serve gRPC over TLS 1.3 with a certificate from the mesh CA (agents send tokens: never disable outside tests)")
		dnsNames    = flag.String("dns-names", "", "comma-separated DNS names of the gRPC serving certificate (default weft-controller.<namespace>.svc)")
	)
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	rc, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if *agentNS == "" {
		*agentNS = *namespace
	}
	auth, err := agentauth.New(agentauth.Config{Client: kube, Namespace: *agentNS, ServiceAccount: *agentSA})
	if err != nil {
		return err
	}
	var ctl atomic.Pointer[controller.Controller]
	bundleChanged := make(chan struct{}, 1)
	authority, err := ca.New(ca.Config{
		Client:        kube,
		Namespace:     *namespace,
		TrustDomain:   *trustDomain,
		Authenticator: auth,
		Pods:          ca.NewAPIPods(kube),
		OnBundleChange: func() {
			if c := ctl.Load(); c != nil {
				c.Kick()
			}
			select {
			case bundleChanged <- struct{}{}:
			default: // one pending publish covers this change too
			}
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	var serverOpts []grpc.ServerOption
	if *serveTLS {
		names := *dnsNames
		if names == "" {
			names = "weft-controller." + *namespace + ".svc"
		}
		getCert, err := authority.ServingCertificate(ca.ServingConfig{DNSNames: strings.Split(names, ",")})
		if err != nil {
			return err
		}
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(&tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: getCert,
		})))
	}
	c, err := controller.New(controller.Config{
		Kube:          rc,
		Namespace:     *namespace,
		GRPCAddr:      *grpcAddr,
		HealthAddr:    *healthAddr,
		Debounce:      *debounce,
		TrustDomain:   *trustDomain,
		LeaderElect:   *leaderElect,
		ID:            *id,
		Authenticator: auth,
		Register:      authority.Register,
		ServerOptions: serverOpts,
		TrustAnchors:  authority.Bundle,
		OnLeader: func(ctx context.Context) error {
			if err := authority.EnsureRoot(ctx); err != nil {
				return err
			}
			// Agents mount the bundle to verify this server before
			// their first policy arrives.
			return authority.PublishBundle(ctx, ca.DefaultBundleConfigMap)
		},
		Logger: log,
	})
	if err != nil {
		return err
	}
	ctl.Store(c)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Every replica follows the root Secret; the leader creates it.
	if err := authority.Load(ctx); err != nil && !errors.Is(err, ca.ErrNoRoot) {
		log.Warn("load ca root", logkey.Error, err)
	}
	go func() { _ = authority.Watch(ctx) }()
	go func() {
		// Keep the published bundle current through root rotations.
		for {
			select {
			case <-ctx.Done():
				return
			case <-bundleChanged:
			}
			if c := ctl.Load(); c != nil && c.IsLeader() {
				if err := authority.PublishBundle(ctx, ca.DefaultBundleConfigMap); err != nil {
					log.Warn("publish ca bundle", logkey.Error, err)
				}
			}
		}
	}()
	return c.Run(ctx)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return rc, nil
	}
	rc, err := rest.InClusterConfig()
	if err == nil {
		return rc, nil
	}
	if env := os.Getenv("KUBECONFIG"); env != "" {
		rc, kerr := clientcmd.BuildConfigFromFlags("", env)
		if kerr != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", env, kerr)
		}
		return rc, nil
	}
	return nil, fmt.Errorf("not in a cluster (%v) and no --kubeconfig given", err)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
