package source

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/weft-mesh/weft/api/logkey"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
)

// AuthorizationPolicies (policy.weft.dev) are watched through a dynamic
// informer once their CRD is served (looked for with the Gateway API kinds,
// every RecheckInterval): the project generates no clientset for its own
// kind, and converting the few policies of a snapshot costs less than the
// generated code would weigh.

// authzKind names the kind in logs and Kinds.
const authzKind = policyv1a1.Kind

// authzWatch is the AuthorizationPolicy informer; inf is nil until the CRD
// is served.
type authzWatch struct {
	factory dynamicinformer.DynamicSharedInformerFactory
	inf     cache.SharedIndexInformer
	// decoded are the policies listAuthz converted, by UID, kept while
	// their object's resourceVersion is the same (s.mu guards it):
	// converting a policy from its unstructured form takes about 15 µs,
	// 150 ms of every round at 10,000 policies.
	decoded map[types.UID]decodedPolicy
}

// decodedPolicy is one policy's conversion at resourceVersion rv; err when
// it did not convert (logged once per resourceVersion).
type decodedPolicy struct {
	rv  string
	p   *policyv1a1.AuthorizationPolicy
	err error
}

func newAuthzWatch(c dynamic.Interface) *authzWatch {
	if c == nil {
		return nil
	}
	return &authzWatch{factory: dynamicinformer.NewFilteredDynamicSharedInformerFactory(c, 0, "", nil)}
}

// discoverAuthz enables the informer when the CRD is served; s.mu is held.
func (s *Source) discoverAuthzLocked(ctx context.Context) error {
	if s.authz == nil || s.authz.inf != nil {
		return nil
	}
	list, err := s.kube.Discovery().ServerResourcesForGroupVersion(policyv1a1.Group + "/" + policyv1a1.Version)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("discover %s: %w", policyv1a1.Group, err)
	}
	served := err == nil && list != nil && slices.ContainsFunc(list.APIResources, func(r metav1.APIResource) bool { return r.Name == policyv1a1.Resource })
	if !served {
		if !s.missing[authzKind] {
			s.log.Warn("custom resource not installed; running without it", logkey.Kind, authzKind, logkey.GroupVersion, policyv1a1.Group+"/"+policyv1a1.Version)
			s.missing[authzKind] = true
		}
		return nil
	}
	inf := s.authz.factory.ForResource(policyv1a1.GroupVersionResource).Informer()
	if err := inf.SetTransform(strip); err != nil {
		return fmt.Errorf("authorization policy transform: %w", err)
	}
	if _, err := inf.AddEventHandler(s.handler()); err != nil {
		return fmt.Errorf("add %s event handler: %w", authzKind, err)
	}
	s.authz.inf = inf
	if s.missing[authzKind] {
		s.log.Info("custom resource installed; watching it", logkey.Kind, authzKind)
	}
	if s.started {
		s.authz.factory.Start(ctx.Done())
	}
	return nil
}

// authzChanged classifies an update of an AuthorizationPolicy.
func authzChanged(o, n *unstructured.Unstructured) change {
	switch {
	case o.GetUID() != n.GetUID() || o.GetGeneration() != n.GetGeneration() ||
		!equality.Semantic.DeepEqual(o.Object["spec"], n.Object["spec"]):
		return changeResolve
	case !equality.Semantic.DeepEqual(o.Object["status"], n.Object["status"]):
		return changeStatus
	}
	return changeNone
}

// listAuthz converts the cached policies, sorted by namespace and name; one
// that does not convert (a schema the CRD should have refused) is logged
// and left out. Rounds share the listing while no policy had an event (as
// the biggest kinds', listing.go): at 10,000 policies, listing them again
// for every round of endpoint churn was most of the controller's garbage.
func (s *Source) listAuthz() []policyv1a1.AuthorizationPolicy {
	if s.authz == nil || s.authz.inf == nil || !s.authz.inf.HasSynced() {
		return nil
	}
	list := func() ([]policyv1a1.AuthorizationPolicy, error) {
		ptrs := s.authz.decode(s.authz.inf.GetStore().List(), s.log)
		sortObjects(ptrs)
		sorted := make([]policyv1a1.AuthorizationPolicy, len(ptrs))
		for i, p := range ptrs {
			sorted[i] = *p
		}
		return sorted, nil
	}
	// after events, listed again: decode keeps the unchanged policies
	ps, _ := cached(s, "authz", list, func([]policyv1a1.AuthorizationPolicy, []nsName) ([]policyv1a1.AuthorizationPolicy, error) {
		return list()
	})
	return ps
}

// decode converts the policies of objs (an informer store's objects), a
// policy again only when its resourceVersion changed since the last call;
// one that does not convert is logged when first seen and left out.
func (w *authzWatch) decode(objs []any, log *slog.Logger) []*policyv1a1.AuthorizationPolicy {
	decoded := make(map[types.UID]decodedPolicy, len(objs))
	ptrs := make([]*policyv1a1.AuthorizationPolicy, 0, len(objs))
	for _, o := range objs {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		d, ok := w.decoded[u.GetUID()]
		if !ok || d.rv != u.GetResourceVersion() || d.rv == "" {
			d = decodedPolicy{rv: u.GetResourceVersion()}
			if d.p, d.err = policyv1a1.FromUnstructured(u); d.err != nil {
				log.Warn("authorization policy does not decode; ignored", logkey.Namespace, u.GetNamespace(), logkey.Name, u.GetName(), logkey.Error, d.err)
			}
		}
		decoded[u.GetUID()] = d
		if d.err == nil {
			ptrs = append(ptrs, d.p)
		}
	}
	w.decoded = decoded
	return ptrs
}

// serviceAccountChanged: resolution reads a ServiceAccount's existence only.
func serviceAccountChanged(o, n *corev1.ServiceAccount) bool { return o.UID != n.UID }
