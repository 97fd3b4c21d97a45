// Package gatewayclass creates Weft's default GatewayClass (mesh.GatewayClassName,
// controllerName mesh.GatewayControllerName) when the cluster has no class of
// Weft's, as controller/xmesh does for the default XMesh: the GatewayClass CRD and
// an object of it cannot be applied in one `kubectl apply`, so the install
// manifests carry only the CRD. The class's status is the status writer's
// (controller/status, from controller/gateway); this package only creates.
package gatewayclass

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/controller/owner"
)

// DefaultInterval between two checks: the class is created once at install;
// later checks only put it back after someone deleted it.
const DefaultInterval = 30 * time.Second

// Default is the GatewayClass the controller creates when it finds none of its own.
func Default() *gwv1.GatewayClass {
	desc := "Weft north-south Gateways" // the CRD allows 64 bytes
	return &gwv1.GatewayClass{
		ObjectMeta: metav1.ObjectMeta{Name: mesh.GatewayClassName},
		Spec: gwv1.GatewayClassSpec{
			ControllerName: mesh.GatewayControllerName,
			Description:    &desc,
		},
	}
}

// Ours reports whether c names Weft's gateway controller.
func Ours(c *gwv1.GatewayClass) bool { return c.Spec.ControllerName == mesh.GatewayControllerName }

// Config configures an Ensurer.
type Config struct {
	Client gwclient.Interface
	// IsLeader gates the writes; always when nil.
	IsLeader func() bool
	// Interval between two checks; DefaultInterval when zero.
	Interval time.Duration
	// Owner, when set, names the object the default class is owned by (the
	// controller's ClusterRole), so that an uninstall removes it.
	Owner  owner.Func
	Logger *slog.Logger
}

// Ensurer keeps a GatewayClass of Weft's in the cluster.
type Ensurer struct {
	cfg Config
	log *slog.Logger
}

// New returns an Ensurer.
func New(cfg Config) (*Ensurer, error) {
	if cfg.Client == nil {
		return nil, errors.New("gatewayclass: no gateway api client")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IsLeader == nil {
		cfg.IsLeader = func() bool { return true }
	}
	return &Ensurer{cfg: cfg, log: cfg.Logger}, nil
}

// Run ensures every Interval until ctx ends; until it has checked once as the
// leader it looks every second, so the class appears right after an install
// (the replicas start as followers). A missing GatewayClass CRD is not an
// error: it is looked for again each round (logged once).
func (e *Ensurer) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	missing, checked := false, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if e.cfg.IsLeader() {
			checked = true
			created, err := e.Ensure(ctx)
			switch {
			case apierrors.IsNotFound(err):
				if !missing {
					e.log.Info("no GatewayClass resource in the cluster; not creating the default class")
				}
				missing = true
			case err != nil && ctx.Err() == nil:
				e.log.Warn("ensure the default GatewayClass", logkey.Error, err)
			default:
				missing = false
				if created {
					e.log.Info("created the default GatewayClass", logkey.Name, mesh.GatewayClassName)
				}
			}
		}
		if checked {
			t.Reset(e.cfg.Interval)
		} else {
			t.Reset(min(time.Second, e.cfg.Interval))
		}
	}
}

// Ensure creates Default, owned by Config.Owner, when no GatewayClass is Weft's,
// and reports whether it did.
func (e *Ensurer) Ensure(ctx context.Context) (bool, error) {
	api := e.cfg.Client.GatewayV1().GatewayClasses()
	list, err := api.List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, err
	}
	if slices.ContainsFunc(list.Items, func(c gwv1.GatewayClass) bool { return Ours(&c) }) {
		return false, nil
	}
	c := Default() // created without an owner too: Gateways need a class
	c.OwnerReferences = e.cfg.Owner.Refs(ctx, e.log, "the default GatewayClass "+c.Name)
	_, err = api.Create(ctx, c, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		return false, fmt.Errorf("create GatewayClass %s: the name is taken by another controller's class; create a class with controllerName %s under another name",
			mesh.GatewayClassName, mesh.GatewayControllerName)
	case err != nil:
		return false, fmt.Errorf("create GatewayClass %s: %w", mesh.GatewayClassName, err)
	}
	return true, nil
}
