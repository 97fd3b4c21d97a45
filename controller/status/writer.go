// Package status writes what resolution decided into the status of routes
// (status.parents, RouteParentStatus) and XBackendTrafficPolicies
// (status.ancestors, PolicyAncestorStatus). Only entries with Weft's
// controllerName are touched; nothing is written when nothing changed.
package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/controller/resolve"
)

// ErrNoClient: Config.Client is nil.
var ErrNoClient = errors.New("status: no gateway api client configured")

// Config configures a Writer.
type Config struct {
	// Client writes the status subresources. Required.
	Client gwclient.Interface
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Now stamps LastTransitionTime of changed conditions; time.Now when nil.
	Now func() time.Time
}

// Writer writes object statuses.
type Writer struct {
	client gwclient.Interface
	log    *slog.Logger
	now    func() time.Time
}

// New returns a Writer.
func New(cfg Config) (*Writer, error) {
	if cfg.Client == nil {
		return nil, ErrNoClient
	}
	w := &Writer{client: cfg.Client, log: cfg.Logger, now: cfg.Now}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.now == nil {
		w.now = time.Now
	}
	return w, nil
}

type objKey struct{ kind, namespace, name string }

// kind adapts one object kind to the generic write path.
type kind[T any] struct {
	name   string
	limit  int
	meta   func(*T) *metav1.ObjectMeta
	get    func(ctx context.Context, ns, name string) (*T, error)
	update func(ctx context.Context, obj *T) error
	read   func(*T) []entry
	write  func(*T, []entry)
	copy   func(*T) *T
}

// Write brings the status of every route and XBackendTrafficPolicy in in
// to what statuses say: objects with a status entry get ours set, objects
// without one lose any entry of ours. in holds the objects as last seen
// (their current status is compared first, so an unchanged object costs no
// request); a write that conflicts is retried on a fresh read. It returns
// the number of objects written and every error met (it goes on after one).
func (w *Writer) Write(ctx context.Context, in resolve.Input, statuses []resolve.ObjectStatus) (int, error) {
	desired := make(map[objKey][]resolve.ParentStatus, len(statuses))
	for _, s := range statuses {
		desired[objKey{s.Kind, s.Namespace, s.Name}] = s.Parents
	}
	now := metav1.NewTime(w.now().Truncate(time.Second))
	var errs []error
	writes := 0
	add := func(n int, err error) {
		writes += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	c := w.client
	add(writeAll(ctx, w, kind[gwv1.HTTPRoute]{
		name: "HTTPRoute", limit: maxRouteParents,
		meta: func(o *gwv1.HTTPRoute) *metav1.ObjectMeta { return &o.ObjectMeta },
		get: func(ctx context.Context, ns, name string) (*gwv1.HTTPRoute, error) {
			return c.GatewayV1().HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.HTTPRoute) error {
			_, err := c.GatewayV1().HTTPRoutes(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
		read:  func(o *gwv1.HTTPRoute) []entry { return fromRouteParents(o.Status.Parents) },
		write: func(o *gwv1.HTTPRoute, es []entry) { o.Status.Parents = toRouteParents(es) },
		copy:  (*gwv1.HTTPRoute).DeepCopy,
	}, in.HTTPRoutes, desired, now))
	add(writeAll(ctx, w, kind[gwv1.GRPCRoute]{
		name: "GRPCRoute", limit: maxRouteParents,
		meta: func(o *gwv1.GRPCRoute) *metav1.ObjectMeta { return &o.ObjectMeta },
		get: func(ctx context.Context, ns, name string) (*gwv1.GRPCRoute, error) {
			return c.GatewayV1().GRPCRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.GRPCRoute) error {
			_, err := c.GatewayV1().GRPCRoutes(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
		read:  func(o *gwv1.GRPCRoute) []entry { return fromRouteParents(o.Status.Parents) },
		write: func(o *gwv1.GRPCRoute, es []entry) { o.Status.Parents = toRouteParents(es) },
		copy:  (*gwv1.GRPCRoute).DeepCopy,
	}, in.GRPCRoutes, desired, now))
	add(writeAll(ctx, w, kind[gwv1.TCPRoute]{
		name: "TCPRoute", limit: maxRouteParents,
		meta: func(o *gwv1.TCPRoute) *metav1.ObjectMeta { return &o.ObjectMeta },
		get: func(ctx context.Context, ns, name string) (*gwv1.TCPRoute, error) {
			return c.GatewayV1().TCPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.TCPRoute) error {
			_, err := c.GatewayV1().TCPRoutes(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
		read:  func(o *gwv1.TCPRoute) []entry { return fromRouteParents(o.Status.Parents) },
		write: func(o *gwv1.TCPRoute, es []entry) { o.Status.Parents = toRouteParents(es) },
		copy:  (*gwv1.TCPRoute).DeepCopy,
	}, in.TCPRoutes, desired, now))
	add(writeAll(ctx, w, kind[gwxv1a1.XBackendTrafficPolicy]{
		name: "XBackendTrafficPolicy", limit: maxPolicyAncestors,
		meta: func(o *gwxv1a1.XBackendTrafficPolicy) *metav1.ObjectMeta { return &o.ObjectMeta },
		get: func(ctx context.Context, ns, name string) (*gwxv1a1.XBackendTrafficPolicy, error) {
			return c.ExperimentalV1alpha1().XBackendTrafficPolicies(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwxv1a1.XBackendTrafficPolicy) error {
			_, err := c.ExperimentalV1alpha1().XBackendTrafficPolicies(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
		read:  func(o *gwxv1a1.XBackendTrafficPolicy) []entry { return fromAncestors(o.Status.Ancestors) },
		write: func(o *gwxv1a1.XBackendTrafficPolicy, es []entry) { o.Status.Ancestors = toAncestors(es) },
		copy:  (*gwxv1a1.XBackendTrafficPolicy).DeepCopy,
	}, in.BackendTrafficPolicies, desired, now))
	return writes, errors.Join(errs...)
}

func writeAll[T any](ctx context.Context, w *Writer, k kind[T], objs []T, desired map[objKey][]resolve.ParentStatus, now metav1.Time) (int, error) {
	var errs []error
	writes := 0
	for i := range objs {
		if err := ctx.Err(); err != nil {
			return writes, err
		}
		wrote, err := writeOne(ctx, w, k, &objs[i], desired, now)
		if wrote {
			writes++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return writes, errors.Join(errs...)
}

// writeOne updates one object's status if it differs from what is desired,
// re-reading and re-applying on conflict. cached is never modified.
func writeOne[T any](ctx context.Context, w *Writer, k kind[T], cached *T, desired map[objKey][]resolve.ParentStatus, now metav1.Time) (bool, error) {
	m := k.meta(cached)
	want := desired[objKey{k.name, m.Namespace, m.Name}]
	current := k.read(cached)
	merged := merge(current, want, m.Namespace, now, k.limit)
	if equal(current, merged, m.Namespace) {
		return false, nil
	}
	wrote := false
	obj := cached
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if obj == nil {
			fresh, err := k.get(ctx, m.Namespace, m.Name)
			if err != nil {
				return err
			}
			obj = fresh
			current = k.read(obj)
			merged = merge(current, want, m.Namespace, now, k.limit)
			if equal(current, merged, m.Namespace) {
				return nil
			}
		}
		out := k.copy(obj)
		k.write(out, merged)
		err := k.update(ctx, out)
		if err == nil {
			wrote = true
		} else {
			obj = nil
		}
		return err
	})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("write status of %s %s/%s: %w", k.name, m.Namespace, m.Name, err)
	}
	if wrote {
		w.log.Debug("wrote status", logkey.Kind, k.name, logkey.Namespace, m.Namespace, logkey.Name, m.Name)
	}
	return wrote, nil
}
