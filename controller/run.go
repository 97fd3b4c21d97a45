package controller

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/controller/agentauth"
	"github.com/weft-mesh/weft/controller/ca"
	"github.com/weft-mesh/weft/controller/owner"
)

// ReplicaConfig configures Run.
type ReplicaConfig struct {
	// Controller configures the replica's Controller. Run fills in its
	// Authenticator, Register, TrustAnchors and OnLeader, and adds the TLS
	// credentials to its ServerOptions.
	Controller Config
	// AgentNamespace is the namespace of the weft-agent ServiceAccount;
	// the controller's namespace when empty.
	AgentNamespace string
	// AgentServiceAccount is the ServiceAccount of weft-agent pods;
	// agentauth.DefaultServiceAccount when empty.
	AgentServiceAccount string
	// TLS serves gRPC over TLS 1.3 with a certificate from the mesh CA.
	// Agents send their tokens on it: never disable outside tests.
	TLS bool
	// DNSNames of the gRPC serving certificate;
	// weft-controller.<namespace>.svc when empty.
	DNSNames []string
}

// Run runs one replica until ctx ends: the Controller, the agent
// authenticator and the mesh CA, with the CA's watch of its root Secret and
// the publisher of its bundle. When any of them fails, the others stop and
// Run returns the first error.
func Run(ctx context.Context, cfg ReplicaConfig) error {
	r, err := newReplica(cfg)
	if err != nil {
		return err
	}
	return r.run(ctx)
}

// replica is a Controller with its CA.
type replica struct {
	log    *slog.Logger
	ca     *ca.CA
	ctl    *Controller // set before the CA is loaded, so before it calls back
	bundle *bundlePublisher
}

func newReplica(cfg ReplicaConfig) (*replica, error) {
	c := cfg.Controller
	if c.Kube == nil {
		return nil, errors.New("controller: no apiserver config")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Namespace = cmp.Or(c.Namespace, DefaultNamespace)
	kube, err := kubernetes.NewForConfig(c.Kube)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	auth, err := agentauth.New(agentauth.Config{
		Client:         kube,
		Namespace:      cmp.Or(cfg.AgentNamespace, c.Namespace),
		ServiceAccount: cfg.AgentServiceAccount,
	})
	if err != nil {
		return nil, fmt.Errorf("agent authenticator: %w", err)
	}
	r := &replica{log: c.Logger}
	r.ca, err = ca.New(ca.Config{
		Client:           kube,
		Namespace:        c.Namespace,
		TrustDomain:      c.TrustDomain,
		Authenticator:    auth,
		Pods:             ca.NewAPIPods(kube),
		PodAuthenticator: auth,
		GatewayOf:        r.gatewayOf,
		OnBundleChange:   r.bundleChanged,
		OnSign:           r.signed,
		Owner:            owner.ClusterRole(kube, c.OwnerClusterRole),
		Logger:           c.Logger,
	})
	if err != nil {
		return nil, err
	}
	r.bundle = newBundlePublisher(func(ctx context.Context) error {
		return r.ca.PublishBundle(ctx, ca.DefaultBundleConfigMap)
	}, func() bool { return r.ctl.IsLeader() }, c.Logger)
	if cfg.TLS {
		names := cfg.DNSNames
		if len(names) == 0 {
			names = []string{"weft-controller." + c.Namespace + ".svc"}
		}
		getCert, err := r.ca.ServingCertificate(ca.ServingConfig{DNSNames: names})
		if err != nil {
			return nil, fmt.Errorf("serving certificate: %w", err)
		}
		c.ServerOptions = append(c.ServerOptions, grpc.Creds(credentials.NewTLS(&tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: getCert,
		})))
	}
	c.Authenticator = auth
	c.Gateways = gatewayAuthorizer{pods: auth}
	c.Register = r.ca.Register
	c.TrustAnchors = r.ca.Bundle
	c.OnLeader = r.onLeader
	if r.ctl, err = New(c); err != nil {
		return nil, err
	}
	return r, nil
}

// gatewayOf is the CA's GatewayOf (none before the Controller exists).
func (r *replica) gatewayOf(namespace, serviceAccount string) (string, bool) {
	if r.ctl == nil {
		return "", false
	}
	return r.ctl.GatewayOf(namespace, serviceAccount)
}

// signed is the CA's OnSign: count the SVID issued or refused.
func (r *replica) signed(err error) {
	if r.ctl != nil {
		r.ctl.Signed(err)
	}
}

// bundleChanged is the CA's OnBundleChange: push the new anchors with
// policy and publish them.
func (r *replica) bundleChanged() {
	r.ctl.Kick()
	r.bundle.request()
}

// onLeader makes sure the root exists and has its bundle published: agents
// mount it to verify this server before their first policy arrives.
func (r *replica) onLeader(ctx context.Context) error {
	if err := r.ca.EnsureRoot(ctx); err != nil {
		return fmt.Errorf("ensure ca root: %w", err)
	}
	r.bundle.request()
	return nil
}

func (r *replica) run(ctx context.Context) error {
	// Every replica follows the root Secret; the leader creates it.
	if err := r.ca.Load(ctx); err != nil && !errors.Is(err, ca.ErrNoRoot) {
		r.log.Warn("load ca root", logkey.Error, err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := r.ca.Watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("watch ca root: %w", cmp.Or(err, errors.New("stopped")))
	})
	g.Go(func() error { return r.bundle.run(ctx) })
	g.Go(func() error { return r.ctl.Run(ctx) })
	err := g.Wait()
	if err != nil {
		r.log.Error("weft-controller stopped", logkey.Error, err)
	}
	return err
}

// bundlePublisher is the only writer of the CA bundle ConfigMap. Requests
// (leadership gained, bundle changed) coalesce into one pending publish
// and publishes run one at a time: two writers that both find the
// ConfigMap missing would both create it, and one would fail with
// AlreadyExists.
type bundlePublisher struct {
	publish func(context.Context) error
	leader  func() bool
	log     *slog.Logger
	retry   time.Duration // after a failed publish
	pending chan struct{}
}

func newBundlePublisher(publish func(context.Context) error, leader func() bool, log *slog.Logger) *bundlePublisher {
	return &bundlePublisher{publish: publish, leader: leader, log: log, retry: 5 * time.Second, pending: make(chan struct{}, 1)}
}

// request asks for a publish; it never blocks.
func (p *bundlePublisher) request() {
	select {
	case p.pending <- struct{}{}:
	default: // the pending publish covers this request too
	}
}

// run publishes on request while this replica leads, retrying failures,
// until ctx ends.
func (p *bundlePublisher) run(ctx context.Context) error {
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.pending:
		case <-retry:
		}
		retry = nil
		if !p.leader() {
			continue
		}
		if err := p.publish(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			p.log.Warn("publish ca bundle", logkey.Error, err, logkey.RetryIn, p.retry.String())
			retry = time.After(p.retry)
		}
	}
}
