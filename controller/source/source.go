// Package source watches every object resolution reads (client-go
// informers) and hands out resolve.Input snapshots on demand. Changes are
// coalesced into a "dirty" signal that never blocks an informer. Gateway
// API kinds whose CRD is not installed are skipped (logged once) and picked
// up when the CRD appears.
package source

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gwinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/controller/resolve"
)

// DefaultRecheckInterval is how often missing Gateway API CRDs are looked
// for again.
const DefaultRecheckInterval = 30 * time.Second

// Sentinel errors.
var (
	// ErrNoClient: Config.Kube or Config.Gateway is nil.
	ErrNoClient = errors.New("source: kubernetes and gateway api clients are required")
	// ErrNotStarted: Snapshot before Start returned.
	ErrNotStarted = errors.New("source: not started")
)

// Config configures a Source.
type Config struct {
	Kube    kubernetes.Interface
	Gateway gwclient.Interface
	// Metadata reads the Gateway API CRDs' bundle-version annotations
	// (GatewayClass SupportedVersion); without it no CRD version is known.
	Metadata metadata.Interface
	// Dynamic watches AuthorizationPolicies; without it none are read.
	Dynamic dynamic.Interface
	// RecheckInterval for missing CRDs; DefaultRecheckInterval when zero.
	RecheckInterval time.Duration
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// gatewayKind is one Gateway API resource and how to watch it.
type gatewayKind struct {
	name         string // Kind, for logs
	groupVersion string
	resource     string
	informer     func(gwinformers.SharedInformerFactory) cache.SharedIndexInformer
}

var gatewayKinds = []gatewayKind{
	{"HTTPRoute", "gateway.networking.k8s.io/v1", "httproutes", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Gateway().V1().HTTPRoutes().Informer()
	}},
	{"GRPCRoute", "gateway.networking.k8s.io/v1", "grpcroutes", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Gateway().V1().GRPCRoutes().Informer()
	}},
	{"TCPRoute", "gateway.networking.k8s.io/v1", "tcproutes", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Gateway().V1().TCPRoutes().Informer()
	}},
	{"GatewayClass", "gateway.networking.k8s.io/v1", "gatewayclasses", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Gateway().V1().GatewayClasses().Informer()
	}},
	{"Gateway", "gateway.networking.k8s.io/v1", "gateways", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Gateway().V1().Gateways().Informer()
	}},
	{"TLSRoute", "gateway.networking.k8s.io/v1", "tlsroutes", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Gateway().V1().TLSRoutes().Informer()
	}},
	{"ReferenceGrant", "gateway.networking.k8s.io/v1", "referencegrants", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Gateway().V1().ReferenceGrants().Informer()
	}},
	{"BackendTLSPolicy", "gateway.networking.k8s.io/v1", "backendtlspolicies", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Gateway().V1().BackendTLSPolicies().Informer()
	}},
	{"XBackendTrafficPolicy", "gateway.networking.x-k8s.io/v1alpha1", "xbackendtrafficpolicies", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Experimental().V1alpha1().XBackendTrafficPolicies().Informer()
	}},
	{"XBackend", "gateway.networking.x-k8s.io/v1alpha1", "xbackends", func(f gwinformers.SharedInformerFactory) cache.SharedIndexInformer {
		return f.Experimental().V1alpha1().XBackends().Informer()
	}},
}

// Source is the controller's view of the cluster.
type Source struct {
	kube    kubernetes.Interface
	recheck time.Duration
	log     *slog.Logger

	core  informers.SharedInformerFactory
	gw    gwinformers.SharedInformerFactory
	refs  *refInformers             // Secrets and ConfigMaps, started with the first Gateway
	crds  cache.SharedIndexInformer // CRD metadata; nil without Config.Metadata
	authz *authzWatch               // AuthorizationPolicies; nil without Config.Dynamic
	ctx   context.Context           // of Start, for informers started later

	dirty       chan struct{}
	statusDirty chan struct{}
	nResolve    atomic.Uint64
	nStatus     atomic.Uint64
	nIgnored    atomic.Uint64

	// chMu guards the change record (SnapshotChanges) and the listed
	// copies of the biggest kinds, reused while their kind has no event.
	chMu    sync.Mutex
	changes Changes
	taken   bool
	gens    map[string]uint64
	copies  map[string]listed
	// stale are, per kind, the objects with an event since its copy was
	// listed (listing.go).
	stale map[string]*dirtyKeys
	// listMu serialises the listings of the copied kinds: a copy is
	// patched with the keys taken against it (the resolve and status
	// loops both list).
	listMu sync.Mutex

	mu      sync.Mutex
	started bool
	enabled map[string]cache.SharedIndexInformer // Gateway API kind -> informer
	missing map[string]bool                      // kinds logged as missing
}

// New returns a Source; call Start before Snapshot.
func New(cfg Config) (*Source, error) {
	if cfg.Kube == nil || cfg.Gateway == nil {
		return nil, ErrNoClient
	}
	s := &Source{
		kube:        cfg.Kube,
		recheck:     cfg.RecheckInterval,
		log:         cfg.Logger,
		core:        informers.NewSharedInformerFactoryWithOptions(cfg.Kube, 0, informers.WithTransform(strip)),
		gw:          gwinformers.NewSharedInformerFactoryWithOptions(cfg.Gateway, 0, gwinformers.WithTransform(strip)),
		dirty:       make(chan struct{}, 1),
		statusDirty: make(chan struct{}, 1),
		enabled:     map[string]cache.SharedIndexInformer{},
		missing:     map[string]bool{},
	}
	if s.recheck <= 0 {
		s.recheck = DefaultRecheckInterval
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.refs = newRefInformers(cfg.Kube, s.refHandler())
	s.authz = newAuthzWatch(cfg.Dynamic)
	if cfg.Metadata != nil {
		s.crds = newCRDInformer(cfg.Metadata)
	}
	return s, nil
}

// strip is the informers' transform: it drops what the controller never
// reads from cached objects (managedFields, the last-applied annotation)
// to keep memory down, and turns pods into *resolve.Pod (slimPod).
//
// client-go calls it on every object before it is stored or handed to the
// event handlers, but not on DeletedFinalStateUnknown tombstones (whose
// object is the store's, transformed already), and an object it already
// transformed may come again (were the store's objects passed to Replace;
// client-go's informers do not). Either passes through as it is, and
// nothing is written to an object stripped already (the store's are read
// concurrently). A tombstone of a pod not transformed yet gets it slimmed
// all the same: every pod the handlers and the store see is a
// *resolve.Pod.
func strip(obj any) (any, error) {
	switch o := obj.(type) {
	case *resolve.Pod:
		return o, nil
	case *corev1.Pod:
		return slimPod(o), nil
	case cache.DeletedFinalStateUnknown:
		if p, ok := o.Obj.(*corev1.Pod); ok {
			o.Obj = slimPod(p)
		}
		return o, nil
	case metav1.Object:
		stripMeta(o)
	}
	return obj, nil
}

// slimPod is p stripped, as the controller's own pod type: of a pod it
// keeps only its metadata and what resolution, the Gateway resolution and
// the Gateway provisioner read of its spec and status (podChanged compares
// them), not its containers, volumes or container statuses. Pods are most
// of a cluster's objects (100k at the scale of issue #17), and even a
// slimmed corev1.Pod is mostly empty fields (resolve.Pod says how much).
func slimPod(p *corev1.Pod) *resolve.Pod {
	stripMeta(p)
	return resolve.PodOf(p)
}

func stripMeta(m metav1.Object) {
	if m.GetManagedFields() != nil {
		m.SetManagedFields(nil)
	}
	if a := m.GetAnnotations(); a != nil {
		if _, ok := a["kubectl.kubernetes.io/last-applied-configuration"]; ok {
			delete(a, "kubectl.kubernetes.io/last-applied-configuration")
			m.SetAnnotations(a)
		}
	}
}

// Dirty receives a value after something resolution reads changed since
// the last receive. Any number of changes between two receives are one
// signal. Updates that change nothing resolution reads (Node heartbeats,
// pod container statuses, route statuses, ...) are not signalled.
func (s *Source) Dirty() <-chan struct{} { return s.dirty }

// StatusDirty receives a value after only the status of a route or policy
// changed (typically our own write): the statuses of StatusSnapshot are to
// be compared again with the last resolution's, without resolving.
func (s *Source) StatusDirty() <-chan struct{} { return s.statusDirty }

// Stats counts the watch events a Source has seen since New.
type Stats struct {
	// Events that signalled Dirty: adds, deletes and relevant updates.
	Resolve uint64
	// Updates that only changed a route's or policy's status.
	Status uint64
	// Updates that changed nothing resolution or status writing reads.
	Ignored uint64
}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	return Stats{Resolve: s.nResolve.Load(), Status: s.nStatus.Load(), Ignored: s.nIgnored.Load()}
}

func (s *Source) markDirty() { s.markDirtyFor(nil) }

// markDirtyFor signals a change of obj (nil: of something else) and
// records what kind of object changed for SnapshotChanges.
func (s *Source) markDirtyFor(obj any) {
	s.record(obj, true)
	s.nResolve.Add(1)
	signal(s.dirty)
}

// Changes says what changed since the previous SnapshotChanges, so that
// a resolution can reuse what did not (resolve.Reuse).
type Changes struct {
	// Other: something else than Pods, EndpointSlices, routes and
	// AuthorizationPolicies changed (or may have: the first snapshot, a
	// Gateway or CRD appeared, ...).
	Other bool
	// Pods: a pod was added, deleted or changed in what resolution reads,
	// its readiness aside.
	Pods bool
	// ChangedPods, with Pods, are those pods, before and after each
	// change; nil when more than maxListedPodChanges pod events came
	// (everything is built again).
	ChangedPods []*resolve.Pod
	// Readiness: a pod's Ready condition changed, and nothing else of it
	// that resolution reads (resolve.Input.ReadsPodReadiness says whether
	// the mesh's resolution reads it at all).
	Readiness bool
	// Routes: an HTTPRoute, GRPCRoute or TCPRoute changed.
	Routes bool
	// Authz: an AuthorizationPolicy changed.
	Authz bool
	// Slices holds "namespace/service" of the Services whose
	// EndpointSlices changed.
	Slices map[string]bool

	listed bool // ChangedPods lists every pod event so far
}

// record notes that obj changed (for the kinds Changes tracks) and, for
// every event (relevant says whether resolution reads the change), that
// its kind's listed copy is stale.
func (s *Source) record(obj any, relevant bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	s.chMu.Lock()
	defer s.chMu.Unlock()
	if s.gens == nil {
		s.gens = map[string]uint64{}
	}
	switch o := obj.(type) {
	case *resolve.Pod:
		s.noteEvent("pods", o)
		if relevant {
			s.changes.notePod(o)
		}
	case *discoveryv1.EndpointSlice:
		s.noteEvent("slices", o)
		if relevant {
			if s.changes.Slices == nil {
				s.changes.Slices = map[string]bool{}
			}
			s.changes.Slices[o.Namespace+"/"+o.Labels[discoveryv1.LabelServiceName]] = true
		}
	case *corev1.Service:
		s.noteEvent("services", o)
		s.changes.Other = s.changes.Other || relevant
	case *gwv1.HTTPRoute:
		s.noteEvent("httproutes", o)
		s.changes.Routes = s.changes.Routes || relevant
	case *gwv1.GRPCRoute:
		s.noteEvent("grpcroutes", o)
		s.changes.Routes = s.changes.Routes || relevant
	case *gwv1.TCPRoute:
		s.noteEvent("tcproutes", o)
		s.changes.Routes = s.changes.Routes || relevant
	case *unstructured.Unstructured:
		// the one kind watched through the dynamic client (authz.go)
		s.noteEvent("authz", o)
		s.changes.Authz = s.changes.Authz || relevant
	default:
		s.changes.Other = s.changes.Other || relevant
	}
}

// maxListedPodChanges bounds the pod events Changes lists (a rolling
// update comes one pod at a time; a start, a relist or a node going away
// brings thousands).
const maxListedPodChanges = 4096

// notePod records a relevant event of pod p (its old or new version).
func (c *Changes) notePod(p *resolve.Pod) {
	if !c.Pods {
		c.Pods, c.listed = true, true
	}
	if len(c.ChangedPods) >= maxListedPodChanges {
		c.ChangedPods, c.listed = nil, false
	}
	if c.listed {
		c.ChangedPods = append(c.ChangedPods, p)
	}
}

// takeChanges returns the changes recorded since the last call and starts
// a new record; the first call says Other.
func (s *Source) takeChanges() Changes {
	s.chMu.Lock()
	defer s.chMu.Unlock()
	c := s.changes
	if !s.taken {
		c.Other, s.taken = true, true
	}
	s.changes = Changes{}
	return c
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (s *Source) handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if _, ok := obj.(*gwv1.Gateway); ok {
				s.gatewaySeen()
			}
			s.markDirtyFor(obj)
		},
		UpdateFunc: func(oldObj, newObj any) {
			switch classify(oldObj, newObj) {
			case changeResolve:
				s.record(oldObj, true) // an EndpointSlice may change Service
				s.markDirtyFor(newObj)
			case changeReadiness:
				s.record(newObj, false)
				s.chMu.Lock()
				s.changes.Readiness = true
				s.chMu.Unlock()
				s.nResolve.Add(1)
				signal(s.dirty)
			case changeStatus:
				s.record(newObj, false)
				s.nStatus.Add(1)
				signal(s.statusDirty)
			default:
				s.record(newObj, false)
				s.nIgnored.Add(1)
			}
		},
		DeleteFunc: func(obj any) { s.markDirtyFor(obj) },
	}
}

// Start starts the informers and returns once their caches are filled (or
// ctx ends). Missing Gateway API kinds are looked for again every
// RecheckInterval until ctx ends.
func (s *Source) Start(ctx context.Context) error {
	for _, inf := range []cache.SharedIndexInformer{
		s.core.Core().V1().Namespaces().Informer(),
		s.core.Core().V1().Nodes().Informer(),
		s.core.Core().V1().Services().Informer(),
		// its store holds *resolve.Pod (strip): the typed Pods().Lister()
		// would fail on them
		s.core.Core().V1().Pods().Informer(),
		s.core.Core().V1().ServiceAccounts().Informer(),
		s.core.Discovery().V1().EndpointSlices().Informer(),
	} {
		if _, err := inf.AddEventHandler(s.handler()); err != nil {
			return fmt.Errorf("add event handler: %w", err)
		}
	}
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	if err := s.startCRDs(ctx); err != nil {
		return err
	}
	if err := s.discover(ctx); err != nil {
		return err
	}
	s.core.Start(ctx.Done())
	s.gw.Start(ctx.Done())
	if s.authz != nil {
		s.authz.factory.Start(ctx.Done())
		for typ, ok := range s.authz.factory.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("sync %v cache: %w", typ, context.Cause(ctx))
			}
		}
	}
	for typ, ok := range s.core.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("sync %v cache: %w", typ, context.Cause(ctx))
		}
	}
	for typ, ok := range s.gw.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("sync %v cache: %w", typ, context.Cause(ctx))
		}
	}
	s.mu.Lock()
	s.started = true
	s.mu.Unlock()
	if err := s.startRefsIfGateways(); err != nil {
		return err
	}
	signal(s.dirty) // the first resolution
	go s.recheckLoop(ctx)
	return nil
}

// discover enables the informer of every Gateway API kind whose resource
// the API server serves. A failed discovery request is an error only for
// reasons other than the group not existing.
func (s *Source) discover(ctx context.Context) error {
	served := map[string]map[string]bool{}
	for _, k := range gatewayKinds {
		if _, ok := served[k.groupVersion]; ok {
			continue
		}
		served[k.groupVersion] = map[string]bool{}
		list, err := s.kube.Discovery().ServerResourcesForGroupVersion(k.groupVersion)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("discover %s: %w", k.groupVersion, err)
		}
		for _, r := range list.APIResources {
			served[k.groupVersion][r.Name] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.discoverAuthzLocked(ctx); err != nil {
		return err
	}
	added := false
	for _, k := range gatewayKinds {
		if _, ok := s.enabled[k.name]; ok {
			continue
		}
		if !served[k.groupVersion][k.resource] {
			if !s.missing[k.name] {
				s.log.Warn("custom resource not installed; running without it", logkey.Kind, k.name, logkey.GroupVersion, k.groupVersion)
				s.missing[k.name] = true
			}
			continue
		}
		inf := k.informer(s.gw)
		if _, err := inf.AddEventHandler(s.handler()); err != nil {
			return fmt.Errorf("add %s event handler: %w", k.name, err)
		}
		s.enabled[k.name] = inf
		added = true
		if s.missing[k.name] {
			s.log.Info("custom resource installed; watching it", logkey.Kind, k.name)
		}
	}
	if added && s.started {
		s.gw.Start(ctx.Done())
	}
	return nil
}

func (s *Source) recheckLoop(ctx context.Context) {
	t := time.NewTicker(s.recheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !s.anyMissing() {
				continue
			}
			if err := s.discover(ctx); err != nil {
				s.log.Warn("look for gateway api resources", logkey.Error, err)
			}
		}
	}
}

func (s *Source) anyMissing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.enabled) < len(gatewayKinds) || (s.authz != nil && s.authz.inf == nil)
}

// Kinds returns the Gateway API kinds being watched and synced.
func (s *Source) Kinds() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for name, inf := range s.enabled {
		if inf.HasSynced() {
			out = append(out, name)
		}
	}
	if s.authz != nil && s.authz.inf != nil && s.authz.inf.HasSynced() {
		out = append(out, authzKind)
	}
	slices.Sort(out)
	return out
}

// StatusSnapshot returns the objects whose status Weft writes (routes and
// XBackendTrafficPolicies), as Snapshot does, and nothing else: it is what
// the status writer compares with after a StatusDirty signal.
func (s *Source) StatusSnapshot() (resolve.Input, error) {
	return s.snapshot(false)
}

// Snapshot returns every watched object, each kind sorted by namespace and
// name. Pods (the cache's slim *resolve.Pod, see strip), EndpointSlices and
// routes are the cache's own objects, the other kinds shallow copies of
// them: callers must not modify them (resolution is pure and does not).
func (s *Source) Snapshot() (resolve.Input, error) {
	return s.snapshot(true)
}

// SnapshotChanges is Snapshot with what changed since the previous
// SnapshotChanges (everything, the first time). A change made while the
// snapshot is taken may be in it and is in the next Changes too.
func (s *Source) SnapshotChanges() (resolve.Input, Changes, error) {
	c := s.takeChanges()
	in, err := s.snapshot(true)
	return in, c, err
}

func (s *Source) snapshot(core bool) (resolve.Input, error) {
	s.mu.Lock()
	started := s.started
	gw := map[string]bool{}
	for name, inf := range s.enabled {
		gw[name] = inf.HasSynced()
	}
	s.mu.Unlock()
	if !started {
		return resolve.Input{}, ErrNotStarted
	}
	var in resolve.Input
	var err error
	if core {
		if in.Namespaces, err = list(s.core.Core().V1().Namespaces().Lister()); err != nil {
			return resolve.Input{}, err
		}
		if in.Nodes, err = list(s.core.Core().V1().Nodes().Lister()); err != nil {
			return resolve.Input{}, err
		}
		if in.Services, err = listCached[corev1.Service](s, "services", s.core.Core().V1().Services().Informer().GetIndexer()); err != nil {
			return resolve.Input{}, err
		}
		if in.EndpointSlices, err = listPointersCached[discoveryv1.EndpointSlice](s, "slices", s.core.Discovery().V1().EndpointSlices().Informer().GetIndexer()); err != nil {
			return resolve.Input{}, err
		}
		if in.Pods, err = listPointersCached[resolve.Pod](s, "pods", s.core.Core().V1().Pods().Informer().GetIndexer()); err != nil {
			return resolve.Input{}, err
		}
		in.PodsSorted = true // the listing is sorted (storeList), and patches keep it so
		if in.ServiceAccounts, err = list(s.core.Core().V1().ServiceAccounts().Lister()); err != nil {
			return resolve.Input{}, err
		}
	}
	s.mu.Lock()
	in.AuthorizationPolicies = s.listAuthz()
	s.mu.Unlock()
	if gw["HTTPRoute"] {
		if in.HTTPRoutes, err = listPointersCached[gwv1.HTTPRoute](s, "httproutes", s.gw.Gateway().V1().HTTPRoutes().Informer().GetIndexer()); err != nil {
			return resolve.Input{}, err
		}
	}
	if gw["GRPCRoute"] {
		if in.GRPCRoutes, err = listPointersCached[gwv1.GRPCRoute](s, "grpcroutes", s.gw.Gateway().V1().GRPCRoutes().Informer().GetIndexer()); err != nil {
			return resolve.Input{}, err
		}
	}
	if gw["TCPRoute"] {
		if in.TCPRoutes, err = listPointersCached[gwv1.TCPRoute](s, "tcproutes", s.gw.Gateway().V1().TCPRoutes().Informer().GetIndexer()); err != nil {
			return resolve.Input{}, err
		}
	}
	if gw["XBackendTrafficPolicy"] {
		if in.BackendTrafficPolicies, err = list(s.gw.Experimental().V1alpha1().XBackendTrafficPolicies().Lister()); err != nil {
			return resolve.Input{}, err
		}
	}
	if core && gw["XBackend"] {
		if in.Backends, err = list(s.gw.Experimental().V1alpha1().XBackends().Lister()); err != nil {
			return resolve.Input{}, err
		}
	}
	return in, nil
}

type lister[T any] interface {
	List(labels.Selector) ([]*T, error)
}

func list[T any](l lister[T]) ([]T, error) {
	ptrs, err := listPointers(l)
	if err != nil {
		return nil, err
	}
	return values(ptrs), nil
}

// values copies the objects by value (shallow copies: the Input's).
func values[T any](ptrs []*T) []T {
	out := make([]T, len(ptrs))
	for i, p := range ptrs {
		out[i] = *p
	}
	return out
}

// listPointers lists the cache's objects themselves, sorted by namespace
// and name; callers must not modify them.
func listPointers[T any](l lister[T]) ([]*T, error) {
	ptrs, err := l.List(everything)
	if err != nil {
		return nil, fmt.Errorf("list from cache: %w", err)
	}
	sortObjects(ptrs)
	return ptrs, nil
}

var everything = labels.Everything()

// sortObjects sorts pointers to objects by namespace and name. The names
// are read once per object, not per comparison: through metav1.Object that
// was most of sorting 20,000 routes or 100,000 pods.
func sortObjects[T any](objs []*T) {
	type named struct {
		ns, name string
		obj      *T
	}
	ns := make([]named, len(objs))
	for i, o := range objs {
		m := any(o).(metav1.Object)
		ns[i] = named{m.GetNamespace(), m.GetName(), o}
	}
	slices.SortFunc(ns, func(a, b named) int {
		return cmp.Or(cmp.Compare(a.ns, b.ns), cmp.Compare(a.name, b.name))
	})
	for i := range ns {
		objs[i] = ns[i].obj
	}
}
