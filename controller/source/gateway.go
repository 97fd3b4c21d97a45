package source

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/pkg/consts"

	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/resolve"
)

// refInformers watch Secrets and ConfigMaps, the objects Gateways and
// BackendTLSPolicies refer to for certificates. They start when the first
// Gateway is seen: a mesh without Gateways caches no Secret. Their cache
// keeps only the keys resolution reads (tls.crt, tls.key, ca.crt) and no
// labels or annotations; service account token Secrets are not listed at
// all (a field selector). Events of objects no Gateway or policy refers to
// are ignored (references).
type refInformers struct {
	secrets, configMaps cache.SharedIndexInformer
	once                sync.Once
	synced              atomic.Bool
}

// refKeys are the data keys resolution reads (controller/gateway certs.go).
var refKeys = map[string]bool{corev1.TLSCertKey: true, corev1.TLSPrivateKeyKey: true, "ca.crt": true}

func newRefInformers(kube kubernetes.Interface, h cache.ResourceEventHandler) *refInformers {
	notTokens := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermNotEqualSelector("type", string(corev1.SecretTypeServiceAccountToken)).String()
	}
	r := &refInformers{
		secrets:    coreinformers.NewFilteredSecretInformer(kube, "", 0, cache.Indexers{}, notTokens),
		configMaps: coreinformers.NewConfigMapInformer(kube, "", 0, cache.Indexers{}),
	}
	_ = r.secrets.SetTransform(stripRef)
	_ = r.configMaps.SetTransform(stripRef)
	_, _ = r.secrets.AddEventHandler(h)
	_, _ = r.configMaps.AddEventHandler(h)
	return r
}

// stripRef keeps of a Secret or ConfigMap only what resolution reads.
func stripRef(obj any) (any, error) {
	keep := func(m map[string][]byte) {
		for k := range m {
			if !refKeys[k] {
				delete(m, k)
			}
		}
	}
	switch o := obj.(type) {
	case *corev1.Secret:
		keep(o.Data)
		o.StringData = nil
		o.ObjectMeta = metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion}
	case *corev1.ConfigMap:
		for k := range o.Data {
			if !refKeys[k] {
				delete(o.Data, k)
			}
		}
		keep(o.BinaryData)
		o.ObjectMeta = metav1.ObjectMeta{Namespace: o.Namespace, Name: o.Name, UID: o.UID, ResourceVersion: o.ResourceVersion}
	}
	return obj, nil
}

// refHandler signals Dirty for Secrets and ConfigMaps some Gateway or
// BackendTLSPolicy refers to, and ignores the others.
func (s *Source) refHandler() cache.ResourceEventHandler {
	referenced := func(obj any) bool {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		var r objRef
		switch o := obj.(type) {
		case *corev1.Secret:
			r = objRef{"Secret", o.Namespace, o.Name}
		case *corev1.ConfigMap:
			r = objRef{"ConfigMap", o.Namespace, o.Name}
		default:
			return true
		}
		return s.references()[r]
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if referenced(obj) {
				s.markDirty()
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			if referenced(newObj) && classify(oldObj, newObj) == changeResolve {
				s.markDirty()
				return
			}
			s.nIgnored.Add(1)
		},
		DeleteFunc: func(obj any) {
			if referenced(obj) {
				s.markDirty()
			}
		},
	}
}

// references lists what the cached Gateways and policies refer to.
func (s *Source) references() map[objRef]bool {
	s.mu.Lock()
	gws, pols := s.enabled["Gateway"], s.enabled["BackendTLSPolicy"]
	s.mu.Unlock()
	var gateways []*gwv1.Gateway
	var policies []*gwv1.BackendTLSPolicy
	if gws != nil {
		gateways, _ = s.gw.Gateway().V1().Gateways().Lister().List(everything)
	}
	if pols != nil {
		policies, _ = s.gw.Gateway().V1().BackendTLSPolicies().Lister().List(everything)
	}
	return references(gateways, policies)
}

// gatewaySeen starts the ref informers on the first Gateway: in the
// background (an event handler must not block), signalling Dirty once
// they are synced.
func (s *Source) gatewaySeen() {
	s.mu.Lock()
	ctx := s.ctx
	s.mu.Unlock()
	if ctx == nil {
		return
	}
	s.refs.once.Do(func() {
		go func() {
			go s.refs.secrets.RunWithContext(ctx)
			go s.refs.configMaps.RunWithContext(ctx)
			if !cache.WaitForCacheSync(ctx.Done(), s.refs.secrets.HasSynced, s.refs.configMaps.HasSynced) {
				return
			}
			s.refs.synced.Store(true)
			s.log.Info("watching Secrets and ConfigMaps for Gateway certificates")
			s.markDirty()
		}()
	})
}

// startRefsIfGateways starts the ref informers at Start when Gateways
// exist already.
func (s *Source) startRefsIfGateways() error {
	s.mu.Lock()
	gws := s.enabled["Gateway"]
	s.mu.Unlock()
	if gws == nil {
		return nil
	}
	list, err := s.gw.Gateway().V1().Gateways().Lister().List(everything)
	if err != nil {
		return fmt.Errorf("list gateways from cache: %w", err)
	}
	if len(list) > 0 {
		s.gatewaySeen()
	}
	return nil
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// newCRDInformer watches the metadata of CRDs (not their schemas): the
// bundle-version annotation of the Gateway API ones.
func newCRDInformer(client metadata.Interface) cache.SharedIndexInformer {
	return metadatainformer.NewFilteredMetadataInformer(client, crdResource, "", 0, cache.Indexers{}, nil).Informer()
}

func (s *Source) startCRDs(ctx context.Context) error {
	if s.crds == nil {
		return nil
	}
	_ = s.crds.SetTransform(func(obj any) (any, error) {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok {
			v, has := m.Annotations[consts.BundleVersionAnnotation]
			m.ObjectMeta = metav1.ObjectMeta{Name: m.Name, UID: m.UID, ResourceVersion: m.ResourceVersion}
			if has {
				m.Annotations = map[string]string{consts.BundleVersionAnnotation: v}
			}
		}
		return obj, nil
	})
	if _, err := s.crds.AddEventHandler(s.crdHandler()); err != nil {
		return fmt.Errorf("add crd event handler: %w", err)
	}
	go s.crds.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), s.crds.HasSynced) {
		return fmt.Errorf("sync crd cache: %w", context.Cause(ctx))
	}
	return nil
}

// crdHandler signals Dirty for Gateway API CRDs only.
func (s *Source) crdHandler() cache.ResourceEventHandler {
	h := s.handler()
	ours := func(obj any) bool {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		m, ok := obj.(*metav1.PartialObjectMetadata)
		return ok && isGatewayAPICRD(m.Name)
	}
	return cache.FilteringResourceEventHandler{FilterFunc: ours, Handler: h}
}

func isGatewayAPICRD(name string) bool {
	return strings.HasSuffix(name, ".gateway.networking.k8s.io") || strings.HasSuffix(name, ".gateway.networking.x-k8s.io")
}

// bundleVersions maps every Gateway API CRD to its bundle version.
func (s *Source) bundleVersions() map[string]string {
	if s.crds == nil {
		return nil
	}
	out := map[string]string{}
	for _, obj := range s.crds.GetStore().List() {
		if m, ok := obj.(*metav1.PartialObjectMetadata); ok && isGatewayAPICRD(m.Name) {
			out[m.Name] = m.Annotations[consts.BundleVersionAnnotation]
		}
	}
	return out
}

// GatewaySnapshot returns the input of controller/gateway: the kinds only
// Gateways use, read from the caches, and the mesh's objects taken from
// mesh (a Snapshot or StatusSnapshot of the same moment). Secrets and
// ConfigMaps are only those some Gateway or policy refers to. ok is false
// while Gateways exist but their Secrets are not synced yet: resolving
// then would call every certificate missing.
func (s *Source) GatewaySnapshot(mesh resolve.Input) (in gateway.Input, ok bool, err error) {
	s.mu.Lock()
	synced := map[string]bool{}
	for name, inf := range s.enabled {
		synced[name] = inf.HasSynced()
	}
	s.mu.Unlock()
	in = gateway.Input{
		HTTPRoutes: mesh.HTTPRoutes, GRPCRoutes: mesh.GRPCRoutes, TCPRoutes: mesh.TCPRoutes,
		Namespaces: mesh.Namespaces, Services: mesh.Services, EndpointSlices: mesh.EndpointSlices, Pods: mesh.Pods,
		Backends: mesh.Backends, BackendTrafficPolicies: mesh.BackendTrafficPolicies,
	}
	in.Options.BundleVersions = s.bundleVersions()
	v1 := s.gw.Gateway().V1()
	for _, k := range []struct {
		name string
		fill func() error
	}{
		{"GatewayClass", func() (err error) { in.GatewayClasses, err = list(v1.GatewayClasses().Lister()); return }},
		{"Gateway", func() (err error) { in.Gateways, err = list(v1.Gateways().Lister()); return }},
		{"TLSRoute", func() (err error) { in.TLSRoutes, err = listPointers(v1.TLSRoutes().Lister()); return }},
		{"ReferenceGrant", func() (err error) { in.ReferenceGrants, err = list(v1.ReferenceGrants().Lister()); return }},
		{"BackendTLSPolicy", func() (err error) { in.BackendTLSPolicies, err = list(v1.BackendTLSPolicies().Lister()); return }},
	} {
		if !synced[k.name] {
			continue
		}
		if err := k.fill(); err != nil {
			return gateway.Input{}, false, err
		}
	}
	if len(in.Gateways) == 0 {
		return in, true, nil
	}
	if !s.refs.synced.Load() {
		s.gatewaySeen()
		return in, false, nil
	}
	refs := s.references()
	if in.Secrets, err = listRefs[corev1.Secret](s.refs.secrets, "Secret", refs); err != nil {
		return gateway.Input{}, false, err
	}
	if in.ConfigMaps, err = listRefs[corev1.ConfigMap](s.refs.configMaps, "ConfigMap", refs); err != nil {
		return gateway.Input{}, false, err
	}
	return in, true, nil
}

// listRefs returns the cached objects of kind that refs names, sorted.
func listRefs[T any](inf cache.SharedIndexInformer, kind string, refs map[objRef]bool) ([]T, error) {
	var ptrs []*T
	for r := range refs {
		if r.kind != kind {
			continue
		}
		obj, ok, err := inf.GetStore().GetByKey(r.namespace + "/" + r.name)
		if err != nil {
			return nil, fmt.Errorf("get %s %s/%s from cache: %w", kind, r.namespace, r.name, err)
		}
		if t, isT := obj.(*T); ok && isT {
			ptrs = append(ptrs, t)
		}
	}
	sortObjects(ptrs)
	out := make([]T, len(ptrs))
	for i, p := range ptrs {
		out[i] = *p
	}
	return out, nil
}
