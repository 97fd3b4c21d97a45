package status

import (
	"context"
	"errors"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	"github.com/weft-mesh/weft/controller/resolve"
)

// AuthorizationPolicies (policy.weft.dev) are Weft's own kind: their status
// (the Accepted condition and inForce, the spec in force) is Weft's
// entirely, written through a dynamic client (the project generates no
// clientset for its own types).

// ErrNoDynamic: AuthorizationPolicy statuses to write without
// Config.Dynamic.
var ErrNoDynamic = errors.New("status: no dynamic client for AuthorizationPolicy statuses")

func (w *Writer) writeAuthz(ctx context.Context, current []policyv1a1.AuthorizationPolicy, want []resolve.AuthzStatus, now metav1.Time) (int, error) {
	if len(want) == 0 {
		return 0, nil
	}
	if w.dynamic == nil {
		return 0, ErrNoDynamic
	}
	desired := make(map[[2]string]resolve.AuthzStatus, len(want))
	for _, s := range want {
		desired[[2]string{s.Namespace, s.Name}] = s
	}
	held := make(map[[2]string]authzHeld, len(w.authzHeld))
	defer func() { w.authzHeld = held }()
	res := w.dynamic.Resource(policyv1a1.GroupVersionResource)
	return writeAll(ctx, w, kind[policyv1a1.AuthorizationPolicy]{
		name: policyv1a1.Kind,
		meta: func(o *policyv1a1.AuthorizationPolicy) *metav1.ObjectMeta { return &o.ObjectMeta },
		get: func(ctx context.Context, ns, name string) (*policyv1a1.AuthorizationPolicy, error) {
			u, err := res.Namespace(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return policyv1a1.FromUnstructured(u)
		},
		update: func(ctx context.Context, o *policyv1a1.AuthorizationPolicy) error {
			u, err := policyv1a1.ToUnstructured(o)
			if err != nil {
				return err
			}
			_, err = res.Namespace(o.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{})
			return err
		},
		want: func(o *policyv1a1.AuthorizationPolicy) *policyv1a1.AuthorizationPolicy {
			k := [2]string{o.Namespace, o.Name}
			d, ok := desired[k]
			if !ok {
				return nil
			}
			if v, seen := w.authzHeld[k]; seen && o.ResourceVersion != "" && v.resourceVersion == o.ResourceVersion && resolve.SameAuthzStatus(&v.want, &d) {
				held[k] = v
				return nil
			}
			if sameConditions(o.Status.Conditions, d.Conditions) && equality.Semantic.DeepEqual(o.Status.InForce, d.InForce) {
				held[k] = authzHeld{resourceVersion: o.ResourceVersion, want: d}
				return nil
			}
			out := *o
			out.Status.Conditions = keepTransitions(d.Conditions, o.Status.Conditions, now)
			out.Status.InForce = d.InForce
			return &out
		},
	}, addrs(current))
}

// authzHeld is a policy a Write found with the status it wanted: the
// object at resourceVersion had want's conditions and spec in force. The
// next Write skips the deep comparison of a policy whose resourceVersion
// and wanted status are both the same (SameAuthzStatus, quick while the
// spec in force is the same memory): at 10,000 policies comparing every
// one on every pass was a quarter of the controller's CPU under endpoint
// churn (bench-scale, WEFT_SCALE_AUTHZ=1).
type authzHeld struct {
	resourceVersion string
	want            resolve.AuthzStatus
}

// sameConditions compares conditions by type, ignoring
// LastTransitionTime.
func sameConditions(have, want []metav1.Condition) bool {
	if len(have) != len(want) {
		return false
	}
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.Type == w.Type {
				found = h.Status == w.Status && h.Reason == w.Reason && h.Message == w.Message && h.ObservedGeneration == w.ObservedGeneration
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
