// Command weft-controller resolves Gateway API mesh routes into per-node
// policy, streams it to weft-agents, writes route status (leader only) and
// signs workload certificates.
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/memlimit"
	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller"
	"github.com/weft-mesh/weft/controller/agentauth"
)

// version is the release this binary was built as; weft-images sets it with
// -ldflags "-X main.version=...".
var version = "dev"

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
		namespace   = flag.String("namespace", cmp.Or(os.Getenv("POD_NAMESPACE"), controller.DefaultNamespace), "namespace the controller runs in (Lease, CA Secret)")
		grpcAddr    = flag.String("grpc-addr", controller.DefaultGRPCAddr, "address of the Policy and Identity gRPC server")
		healthAddr  = flag.String("health-addr", controller.DefaultHealthAddr, "address of /healthz, /readyz and /debug/nodes (\"-\": none)")
		metricsAddr = flag.String("metrics-addr", controller.DefaultMetricsAddr, "address of the Prometheus metrics (/metrics; \"\": none)")
		debounce    = flag.Duration("debounce", controller.DefaultDebounce, "least time between two resolutions: a change after a quiet spell is resolved at once, later ones wait and are resolved together")
		trustDomain = flag.String("trust-domain", mesh.DefaultTrustDomain, "SPIFFE trust domain")
		leaderElect = flag.Bool("leader-elect", true, "write statuses only while holding the Lease")
		id          = flag.String("id", cmp.Or(os.Getenv("POD_NAME"), hostname), "identity of this replica in the Lease")
		agentNS     = flag.String("agent-namespace", "", "namespace of the weft-agent ServiceAccount (default: --namespace)")
		agentSA     = flag.String("agent-service-account", agentauth.DefaultServiceAccount, "ServiceAccount of weft-agent pods")
		logLevel    = flag.String("log-level", "info", "debug, info, warn or error")
		serveTLS    = flag.Bool("tls", true, "serve gRPC over TLS 1.3 with a certificate from the mesh CA (agents send tokens: never disable outside tests)")
		dnsNames    = flag.String("dns-names", "", "comma-separated DNS names of the gRPC serving certificate (default weft-controller.<namespace>.svc)")
		gwImage     = flag.String("gateway-image", "", "weft-agent image the data plane of each Gateway runs (\"\": the image of --agent-daemonset)")
		agentDS     = flag.String("agent-daemonset", "weft-agent", "the weft-agent DaemonSet (in --namespace) whose image Gateways' data planes run when --gateway-image is empty (\"\" and no --gateway-image: Gateways get statuses but no data plane)")
		ownerRole   = flag.String("owner-cluster-role", "weft-controller", "ClusterRole that owns the default XMesh and GatewayClass, so an uninstall removes them (\"\": no owner)")
	)
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	log.Info("starting", logkey.Build, version)
	// the controller's heap is mostly informer caches that live for good:
	// without a limit the collector lets garbage grow to as much again
	// before it runs, which can take it over its container's limit
	memlimit.Apply(log, os.Getenv("GOMEMLIMIT"))
	rc, err := restConfig(*kubeconfig)
	if err != nil {
		return err
	}
	var names []string
	if *dnsNames != "" {
		names = strings.Split(*dnsNames, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return controller.Run(ctx, controller.ReplicaConfig{
		Controller: controller.Config{
			Kube:             rc,
			Namespace:        *namespace,
			GRPCAddr:         *grpcAddr,
			HealthAddr:       *healthAddr,
			MetricsAddr:      *metricsAddr,
			Debounce:         *debounce,
			TrustDomain:      *trustDomain,
			GatewayImage:     *gwImage,
			AgentDaemonSet:   *agentDS,
			LogLevel:         *logLevel,
			LeaderElect:      *leaderElect,
			ID:               *id,
			Logger:           log,
			OwnerClusterRole: *ownerRole,
		},
		AgentNamespace:      *agentNS,
		AgentServiceAccount: *agentSA,
		TLS:                 *serveTLS,
		DNSNames:            names,
	})
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
