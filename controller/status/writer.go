// Package status writes what resolution decided into the status of routes
// (status.parents, RouteParentStatus), XBackendTrafficPolicies and
// BackendTLSPolicies (status.ancestors, PolicyAncestorStatus), and Weft's
// GatewayClasses and Gateways. Only entries with one of Weft's
// controllerNames (the mesh's, the gateway's) and the condition types
// controller/gateway owns are touched; nothing is written when nothing
// changed.
package status

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/resolve"
)

// ErrNoClient: Config.Client is nil.
var ErrNoClient = errors.New("status: no gateway api client configured")

// Config configures a Writer.
type Config struct {
	// Client writes the status subresources. Required.
	Client gwclient.Interface
	// Dynamic writes AuthorizationPolicy statuses; without it they are not
	// written (an error when there are some to write).
	Dynamic dynamic.Interface
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Now stamps LastTransitionTime of changed conditions; time.Now when nil.
	Now func() time.Time
}

// Writer writes object statuses.
type Writer struct {
	client  gwclient.Interface
	dynamic dynamic.Interface
	log     *slog.Logger
	now     func() time.Time

	mu        sync.Mutex // one Write at a time: they share unchanged and authzHeld
	unchanged unchanged
	// authzHeld are the policies the last Write found with the status it
	// wanted (authz.go)
	authzHeld map[[2]string]authzHeld
}

// New returns a Writer.
func New(cfg Config) (*Writer, error) {
	if cfg.Client == nil {
		return nil, ErrNoClient
	}
	w := &Writer{client: cfg.Client, dynamic: cfg.Dynamic, log: cfg.Logger, now: cfg.Now}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.now == nil {
		w.now = time.Now
	}
	return w, nil
}

// Objects are the objects whose status Weft writes, as last seen.
type Objects struct {
	// Mesh holds the routes and XBackendTrafficPolicies.
	Mesh resolve.Input
	// Gateway holds the GatewayClasses, Gateways, TLSRoutes and
	// BackendTLSPolicies (its other lists are not read).
	Gateway gateway.Input
}

// Want is what resolution decided about statuses.
type Want struct {
	// Mesh is controller/resolve's route and policy statuses.
	Mesh []resolve.ObjectStatus
	// Authz is controller/resolve's AuthorizationPolicy statuses.
	Authz []resolve.AuthzStatus
	// Gateway is controller/gateway's (Routes, Policies, GatewayClasses,
	// Gateways; the IR is not read). nil: not decided yet (a controller
	// still syncing), the gateway's entries are left as they are.
	Gateway *gateway.Output
}

// kind adapts one object kind to the generic write path.
type kind[T any] struct {
	name   string
	meta   func(*T) *metav1.ObjectMeta
	get    func(ctx context.Context, ns, name string) (*T, error)
	update func(ctx context.Context, obj *T) error
	// want returns a copy of the object with the status Weft wants, or
	// nil when the object already has it. It never modifies its argument.
	want func(*T) *T
	// statusList is the identity of the object's status list (firstOf),
	// for the kinds listKind adapts.
	statusList func(*T) any
	// listed, when set, is told the objects before writeAll goes through
	// them.
	listed func(objs []*T)
}

// lists is what the status lists of one Write are merged with.
type lists struct {
	// desired holds, per controller in weftControllers order, the statuses
	// Weft wants, sorted by kind, namespace and name.
	desired [2][][]resolve.ObjectStatus
	// owned are the controllerNames whose entries are replaced.
	owned []gwv1.GatewayController
	now   metav1.Time
	// unchanged skips the objects found with the wanted status before.
	unchanged *unchanged
}

// finders returns, per controller, a cursor over the wanted statuses of
// one kind.
func (l *lists) finders(kind string) (f [2]cursor[resolve.ObjectStatus]) {
	for ctrl, lists := range l.desired {
		var of []resolve.ObjectStatus
		for _, s := range lists {
			lo, _ := slices.BinarySearchFunc(s, kind, func(st resolve.ObjectStatus, k string) int { return strings.Compare(st.Kind, k) })
			hi := lo
			for hi < len(s) && s[hi].Kind == kind {
				hi++
			}
			switch {
			case hi == lo:
			case of == nil:
				of = s[lo:hi:hi]
			default: // the kind in two lists of one controller: merged
				of = append(of, s[lo:hi]...)
				slices.SortFunc(of, resolve.CompareStatuses)
			}
		}
		f[ctrl] = newCursor(of, func(st *resolve.ObjectStatus) (string, string) { return st.Namespace, st.Name })
	}
	return f
}

// sortedStatuses returns s sorted by kind, namespace and name: s itself
// when it is (resolutions sort their lists), else a sorted copy. A list the
// last Write found sorted is not checked again.
func (u *unchanged) sortedStatuses(s []resolve.ObjectStatus) []resolve.ObjectStatus {
	if len(s) == 0 || u.sorted.check(&s[0], len(s), func() bool { return slices.IsSortedFunc(s, resolve.CompareStatuses) }) {
		return s
	}
	s = slices.Clone(s)
	slices.SortStableFunc(s, resolve.CompareStatuses)
	return s
}

// listKind is a kind whose status is a list of entries (route parents,
// policy ancestors), keyed by controllerName and parentRef.
func listKind[T any](k kind[T], limit int, read func(*T) []entry, write func(*T, []entry), cp func(*T) *T, l lists) kind[T] {
	find := l.finders(k.name)
	mem := l.unchanged.of(k.name)
	k.listed = func(objs []*T) {
		// sorted objects note their entries sorted (see unchanged.end)
		mem.inOrder = len(objs) < 2 || l.unchanged.sorted.check(&objs[0], len(objs), func() bool {
			return slices.IsSortedFunc(objs, func(a, b *T) int {
				ma, mb := k.meta(a), k.meta(b)
				return compareKey(ma.Namespace, ma.Name, mb.Namespace, mb.Name)
			})
		})
	}
	k.want = func(o *T) *T {
		m := k.meta(o)
		var desired wanted
		for ctrl := range find {
			if st := find[ctrl].find(m.Namespace, m.Name); st != nil {
				desired[ctrl] = st.Parents
			}
		}
		list := k.statusList(o)
		if mem.holds(m.Namespace, m.Name, m.ResourceVersion, list, desired) {
			return nil
		}
		current := read(o)
		merged := mergeOwned(current, l.owned, desired, m.Namespace, l.now, limit)
		if equal(current, merged, m.Namespace) {
			mem.note(m.Namespace, m.Name, m.ResourceVersion, list, desired)
			return nil
		}
		out := cp(o)
		write(out, merged)
		return out
	}
	return k
}

// Write brings the status of every object in in to what want says: routes
// and policies with an entry get ours set (the mesh's and the gateway's
// side by side), those without one lose any entry of ours; Weft's
// GatewayClasses and Gateways get the status want gives them, keeping
// conditions of types Weft does not own. in holds the objects as last seen
// (their current status is compared first, so an unchanged object costs no
// request); a write that conflicts is retried on a fresh read. It returns
// the number of objects written and every error met (it goes on after one).
func (w *Writer) Write(ctx context.Context, in Objects, want Want) (int, error) {
	owned := []gwv1.GatewayController{resolve.ControllerName}
	if want.Gateway != nil {
		owned = append(owned, gateway.ControllerName)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.unchanged.begin(len(owned))
	defer w.unchanged.end()
	var desired [2][][]resolve.ObjectStatus
	desired[0] = [][]resolve.ObjectStatus{w.unchanged.sortedStatuses(want.Mesh)}
	if want.Gateway != nil {
		desired[1] = [][]resolve.ObjectStatus{w.unchanged.sortedStatuses(want.Gateway.Routes), w.unchanged.sortedStatuses(want.Gateway.Policies)}
	}
	now := metav1.NewTime(w.now().Truncate(time.Second))
	var errs []error
	writes := 0
	count := func(n int, err error) {
		writes += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	lists := lists{desired: desired, owned: owned, now: now, unchanged: &w.unchanged}
	count(w.writeRoutes(ctx, in, lists))
	count(w.writePolicies(ctx, in, lists))
	count(w.writeAuthz(ctx, in.Mesh.AuthorizationPolicies, want.Authz, now))
	if want.Gateway != nil {
		count(w.writeGateways(ctx, in.Gateway, *want.Gateway, now))
	}
	return writes, errors.Join(errs...)
}

func (w *Writer) writeRoutes(ctx context.Context, in Objects, l lists) (int, error) {
	c := w.client.GatewayV1()
	n1, err1 := writeAll(ctx, w, listKind(kind[gwv1.HTTPRoute]{
		name:       "HTTPRoute",
		meta:       func(o *gwv1.HTTPRoute) *metav1.ObjectMeta { return &o.ObjectMeta },
		statusList: func(o *gwv1.HTTPRoute) any { return firstOf(o.Status.Parents) },
		get: func(ctx context.Context, ns, name string) (*gwv1.HTTPRoute, error) {
			return c.HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.HTTPRoute) error {
			_, err := c.HTTPRoutes(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
	}, maxRouteParents, func(o *gwv1.HTTPRoute) []entry { return fromRouteParents(o.Status.Parents) },
		func(o *gwv1.HTTPRoute, es []entry) { o.Status.Parents = toRouteParents(es) },
		(*gwv1.HTTPRoute).DeepCopy, l), in.Mesh.HTTPRoutes)
	n2, err2 := writeAll(ctx, w, listKind(kind[gwv1.GRPCRoute]{
		name:       "GRPCRoute",
		meta:       func(o *gwv1.GRPCRoute) *metav1.ObjectMeta { return &o.ObjectMeta },
		statusList: func(o *gwv1.GRPCRoute) any { return firstOf(o.Status.Parents) },
		get: func(ctx context.Context, ns, name string) (*gwv1.GRPCRoute, error) {
			return c.GRPCRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.GRPCRoute) error {
			_, err := c.GRPCRoutes(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
	}, maxRouteParents, func(o *gwv1.GRPCRoute) []entry { return fromRouteParents(o.Status.Parents) },
		func(o *gwv1.GRPCRoute, es []entry) { o.Status.Parents = toRouteParents(es) },
		(*gwv1.GRPCRoute).DeepCopy, l), in.Mesh.GRPCRoutes)
	n3, err3 := writeAll(ctx, w, listKind(kind[gwv1.TCPRoute]{
		name:       "TCPRoute",
		meta:       func(o *gwv1.TCPRoute) *metav1.ObjectMeta { return &o.ObjectMeta },
		statusList: func(o *gwv1.TCPRoute) any { return firstOf(o.Status.Parents) },
		get: func(ctx context.Context, ns, name string) (*gwv1.TCPRoute, error) {
			return c.TCPRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.TCPRoute) error {
			_, err := c.TCPRoutes(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
	}, maxRouteParents, func(o *gwv1.TCPRoute) []entry { return fromRouteParents(o.Status.Parents) },
		func(o *gwv1.TCPRoute, es []entry) { o.Status.Parents = toRouteParents(es) },
		(*gwv1.TCPRoute).DeepCopy, l), in.Mesh.TCPRoutes)
	n4, err4 := writeAll(ctx, w, listKind(kind[gwv1.TLSRoute]{
		name:       "TLSRoute",
		meta:       func(o *gwv1.TLSRoute) *metav1.ObjectMeta { return &o.ObjectMeta },
		statusList: func(o *gwv1.TLSRoute) any { return firstOf(o.Status.Parents) },
		get: func(ctx context.Context, ns, name string) (*gwv1.TLSRoute, error) {
			return c.TLSRoutes(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.TLSRoute) error {
			_, err := c.TLSRoutes(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
	}, maxRouteParents, func(o *gwv1.TLSRoute) []entry { return fromRouteParents(o.Status.Parents) },
		func(o *gwv1.TLSRoute, es []entry) { o.Status.Parents = toRouteParents(es) },
		(*gwv1.TLSRoute).DeepCopy, l), in.Gateway.TLSRoutes)
	return n1 + n2 + n3 + n4, errors.Join(err1, err2, err3, err4)
}

func (w *Writer) writePolicies(ctx context.Context, in Objects, l lists) (int, error) {
	x := w.client.ExperimentalV1alpha1()
	n1, err1 := writeAll(ctx, w, listKind(kind[gwxv1a1.XBackendTrafficPolicy]{
		name:       "XBackendTrafficPolicy",
		meta:       func(o *gwxv1a1.XBackendTrafficPolicy) *metav1.ObjectMeta { return &o.ObjectMeta },
		statusList: func(o *gwxv1a1.XBackendTrafficPolicy) any { return firstOf(o.Status.Ancestors) },
		get: func(ctx context.Context, ns, name string) (*gwxv1a1.XBackendTrafficPolicy, error) {
			return x.XBackendTrafficPolicies(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwxv1a1.XBackendTrafficPolicy) error {
			_, err := x.XBackendTrafficPolicies(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
	}, maxPolicyAncestors, func(o *gwxv1a1.XBackendTrafficPolicy) []entry { return fromAncestors(o.Status.Ancestors) },
		func(o *gwxv1a1.XBackendTrafficPolicy, es []entry) { o.Status.Ancestors = toAncestors(es) },
		(*gwxv1a1.XBackendTrafficPolicy).DeepCopy, l), addrs(in.Mesh.BackendTrafficPolicies))
	c := w.client.GatewayV1()
	n2, err2 := writeAll(ctx, w, listKind(kind[gwv1.BackendTLSPolicy]{
		name:       gateway.KindBackendTLSPolicy,
		meta:       func(o *gwv1.BackendTLSPolicy) *metav1.ObjectMeta { return &o.ObjectMeta },
		statusList: func(o *gwv1.BackendTLSPolicy) any { return firstOf(o.Status.Ancestors) },
		get: func(ctx context.Context, ns, name string) (*gwv1.BackendTLSPolicy, error) {
			return c.BackendTLSPolicies(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.BackendTLSPolicy) error {
			_, err := c.BackendTLSPolicies(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
	}, maxPolicyAncestors, func(o *gwv1.BackendTLSPolicy) []entry { return fromAncestors(o.Status.Ancestors) },
		func(o *gwv1.BackendTLSPolicy, es []entry) { o.Status.Ancestors = toAncestors(es) },
		(*gwv1.BackendTLSPolicy).DeepCopy, l), addrs(in.Gateway.BackendTLSPolicies))
	return n1 + n2, errors.Join(err1, err2)
}

// writeAll writes the status of every object of objs (writeOne). They may
// be the informer cache's own (routes): they are only read.
func writeAll[T any](ctx context.Context, w *Writer, k kind[T], objs []*T) (int, error) {
	if k.listed != nil {
		k.listed(objs)
	}
	var errs []error
	writes := 0
	for _, o := range objs {
		if err := ctx.Err(); err != nil {
			return writes, err
		}
		wrote, err := writeOne(ctx, w, k, o)
		if wrote {
			writes++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return writes, errors.Join(errs...)
}

// addrs points at the elements of a by-value listing, for writeAll: a
// slice of pointers, not a copy of the objects.
func addrs[T any](objs []T) []*T {
	out := make([]*T, len(objs))
	for i := range objs {
		out[i] = &objs[i]
	}
	return out
}

// writeOne updates one object's status if it differs from what is wanted,
// re-reading and re-applying on conflict. cached is never modified.
func writeOne[T any](ctx context.Context, w *Writer, k kind[T], cached *T) (bool, error) {
	m := k.meta(cached)
	out := k.want(cached)
	if out == nil {
		return false, nil
	}
	wrote := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if out == nil {
			fresh, err := k.get(ctx, m.Namespace, m.Name)
			if err != nil {
				return err
			}
			if out = k.want(fresh); out == nil {
				return nil
			}
		}
		err := k.update(ctx, out)
		if err == nil {
			wrote = true
		} else {
			out = nil
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
