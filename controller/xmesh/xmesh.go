// Package xmesh reconciles XMesh objects (GEP-3949, gateway.networking.x-k8s.io
// v1alpha1) whose controllerName is Weft's: it sets Accepted and publishes
// status.supportedFeatures, the features the upstream mesh conformance run proves
// (test/conformance; report under test/conformance/reports/).
//
// Status is the pure part; Reconciler is the thin I/O loop around it.
package xmesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	xv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	"sigs.k8s.io/gateway-api/pkg/features"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/controller/owner"
	"github.com/weft-mesh/weft/controller/resolve"
)

// SupportedFeatures are the features Weft claims on its XMesh: the core of the
// MESH-HTTP and MESH-GRPC profiles, every extended mesh feature, and the HTTPRoute
// features the mesh tests outside the profiles exercise. Each one is proved by a test
// of the upstream mesh suite (sigs.k8s.io/gateway-api/conformance v1.7.0 tests/mesh)
// that `make conformance` runs; a feature goes here only with a passing test.
var SupportedFeatures = []features.FeatureName{
	features.SupportMesh,
	features.SupportHTTPRoute,
	features.SupportGRPCRoute,
	features.SupportMeshClusterIPMatching,
	features.SupportMeshConsumerRoute,
	features.SupportMeshHTTPRouteRewritePath,
	features.SupportMeshHTTPRouteSchemeRedirect,
	features.SupportMeshHTTPRouteRedirectPort,
	features.SupportMeshHTTPRouteRedirectPath,
	features.SupportMeshHTTPRouteBackendRequestHeaderModification,
	features.SupportMeshHTTPRouteQueryParamMatching,
	features.SupportMeshHTTPRouteNamedRouteRule,
	features.SupportHTTPRouteResponseHeaderModification,
	features.SupportHTTPRouteParentRefPort,
	features.SupportHTTPRoute303RedirectStatusCode,
	features.SupportHTTPRoute307RedirectStatusCode,
	features.SupportHTTPRoute308RedirectStatusCode,
}

// Status returns the status Weft wants on m: Accepted=True at m's generation and the
// supported features, sorted by name. Conditions of other types are kept; the
// Accepted transition time is kept when its status does not change.
func Status(m *xv1a1.XMesh, supported []features.FeatureName, now metav1.Time) xv1a1.MeshStatus {
	st := *m.Status.DeepCopy()
	meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type:               string(xv1a1.MeshConditionAccepted),
		Status:             metav1.ConditionTrue,
		Reason:             string(xv1a1.MeshReasonAccepted),
		Message:            "Accepted by " + string(resolve.ControllerName),
		ObservedGeneration: m.Generation,
		LastTransitionTime: now,
	})
	names := make([]string, 0, len(supported))
	for _, f := range supported {
		names = append(names, string(f))
	}
	slices.Sort(names)
	names = slices.Compact(names)
	st.SupportedFeatures = make([]gwv1.SupportedFeature, 0, len(names))
	for _, n := range names {
		st.SupportedFeatures = append(st.SupportedFeatures, gwv1.SupportedFeature{Name: gwv1.FeatureName(n)})
	}
	return st
}

// Ours reports whether m names Weft's controller.
func Ours(m *xv1a1.XMesh) bool { return m.Spec.ControllerName == resolve.ControllerName }

// Config configures a Reconciler.
type Config struct {
	Client gwclient.Interface
	// IsLeader gates the writes (only the leader writes status); always when nil.
	IsLeader func() bool
	// Interval between two reconciliations (level-based: every XMesh is read each
	// time); 5s when zero.
	Interval time.Duration
	// Owner, when set, names the object the default XMesh is owned by, so that the
	// garbage collector removes it when Weft is uninstalled (the controller's
	// ClusterRole: cluster-scoped like the XMesh, and deleted by both `helm
	// uninstall` and `kubectl delete -k`, which leave the CRDs or take them along).
	Owner  owner.Func
	Logger *slog.Logger
}

// Reconciler keeps the status of Weft's XMeshes.
type Reconciler struct {
	cfg Config
	log *slog.Logger
}

// New returns a Reconciler.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Client == nil {
		return nil, errors.New("xmesh: no gateway api client")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.IsLeader == nil {
		cfg.IsLeader = func() bool { return true }
	}
	return &Reconciler{cfg: cfg, log: cfg.Logger}, nil
}

// Run reconciles every Interval until ctx ends. A missing XMesh CRD is not an error:
// it is looked for again each round.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	missing := false
	for {
		if r.cfg.IsLeader() {
			n, err := r.Reconcile(ctx)
			switch {
			case apierrors.IsNotFound(err):
				if !missing {
					r.log.Info("no XMesh resource in the cluster; not publishing mesh features")
				}
				missing = true
			case err != nil && ctx.Err() == nil:
				r.log.Warn("reconcile XMesh", logkey.Error, err)
			case n > 0:
				missing = false
				r.log.Info("wrote XMesh status", logkey.Objects, n)
			default:
				missing = false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// DefaultName is the XMesh the controller creates when the cluster has none of
// Weft's, as Istio's controller creates its default GatewayClasses: the XMesh CRD and
// an object of it cannot be applied in one `kubectl apply` (the kind is unknown until
// the CRD is established), so the install manifests carry only the CRD.
const DefaultName = "weft"

// Default is the XMesh the controller creates when it finds none of its own.
func Default() *xv1a1.XMesh {
	return &xv1a1.XMesh{
		ObjectMeta: metav1.ObjectMeta{Name: DefaultName},
		Spec: xv1a1.MeshSpec{
			ControllerName: gwv1.GatewayController(resolve.ControllerName),
			Description:    ptr("Weft, a sidecar-free service mesh"),
		},
	}
}

func ptr[T any](v T) *T { return &v }

// defaultMesh is Default owned by Config.Owner; without an owner it is created anyway
// (a mesh without its XMesh has no status to show).
func (r *Reconciler) defaultMesh(ctx context.Context) *xv1a1.XMesh {
	m := Default()
	m.OwnerReferences = r.cfg.Owner.Refs(ctx, r.log, "the default XMesh "+m.Name)
	return m
}

// Reconcile creates the default XMesh when there is none of Weft's, writes the
// wanted status on every XMesh of Weft's whose status differs, and returns how many
// objects it wrote.
func (r *Reconciler) Reconcile(ctx context.Context) (int, error) {
	api := r.cfg.Client.ExperimentalV1alpha1().XMeshes()
	list, err := api.List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	var errs []error
	n := 0
	if !slices.ContainsFunc(list.Items, func(m xv1a1.XMesh) bool { return Ours(&m) }) {
		created, err := api.Create(ctx, r.defaultMesh(ctx), metav1.CreateOptions{})
		switch {
		case apierrors.IsAlreadyExists(err):
			// another controller's XMesh has the name; Weft claims no other one
			return 0, fmt.Errorf("create XMesh %s: the name is taken by another controller's mesh", DefaultName)
		case err != nil:
			return 0, fmt.Errorf("create XMesh %s: %w", DefaultName, err)
		}
		r.log.Info("created the default XMesh", logkey.Name, created.Name)
		list.Items = append(list.Items, *created)
		n++
	}
	for i := range list.Items {
		m := &list.Items[i]
		if !Ours(m) {
			continue
		}
		want := Status(m, SupportedFeatures, metav1.Now())
		if statusEqual(m.Status, want) {
			continue
		}
		m.Status = want
		if _, err := api.UpdateStatus(ctx, m, metav1.UpdateOptions{}); err != nil {
			errs = append(errs, fmt.Errorf("update status of XMesh %s: %w", m.Name, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// statusEqual compares two statuses ignoring condition transition times.
func statusEqual(a, b xv1a1.MeshStatus) bool {
	strip := func(s xv1a1.MeshStatus) xv1a1.MeshStatus {
		s = *s.DeepCopy()
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		return s
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}
