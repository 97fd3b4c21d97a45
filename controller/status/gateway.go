package status

import (
	"context"
	"errors"
	"slices"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/gateway"
)

// Condition types Weft owns (controller/gateway doc.go): an owned type
// missing from the wanted status is removed, other types are kept.
var (
	ownedClass    = []string{string(gwv1.GatewayClassConditionStatusAccepted), string(gwv1.GatewayClassConditionStatusSupportedVersion)}
	ownedGateway  = []string{string(gwv1.GatewayConditionAccepted), string(gwv1.GatewayConditionProgrammed), string(gwv1.GatewayConditionResolvedRefs), string(gwv1.GatewayConditionInsecureFrontendValidationMode)}
	ownedListener = []string{string(gwv1.ListenerConditionAccepted), string(gwv1.ListenerConditionProgrammed), string(gwv1.ListenerConditionResolvedRefs), string(gwv1.ListenerConditionConflicted), string(gwv1.ListenerConditionOverlappingTLSConfig)}
)

// mergeConditions returns current's conditions of types not in owned, in
// place, then want's, each keeping its LastTransitionTime from current when
// its status did not change.
func mergeConditions(current, want []metav1.Condition, owned []string, now metav1.Time) []metav1.Condition {
	var out []metav1.Condition
	for _, c := range current {
		if !slices.Contains(owned, c.Type) {
			out = append(out, c)
		}
	}
	return append(out, keepTransitions(want, current, now)...)
}

// gatewayStatus is want merged into current: addresses and listeners are
// Weft's (a listener's conditions of other types are kept), conditions are
// merged by mergeConditions; attachedListenerSets is left alone.
func gatewayStatus(current, want gwv1.GatewayStatus, now metav1.Time) gwv1.GatewayStatus {
	out := *current.DeepCopy()
	out.Addresses = want.Addresses
	out.Conditions = mergeConditions(current.Conditions, want.Conditions, ownedGateway, now)
	out.Listeners = make([]gwv1.ListenerStatus, 0, len(want.Listeners))
	for _, l := range want.Listeners {
		var prev []metav1.Condition
		for _, p := range current.Listeners {
			if p.Name == l.Name {
				prev = p.Conditions
			}
		}
		l = *l.DeepCopy()
		l.Conditions = mergeConditions(prev, l.Conditions, ownedListener, now)
		out.Listeners = append(out.Listeners, l)
	}
	return out
}

func classStatus(current, want gwv1.GatewayClassStatus, now metav1.Time) gwv1.GatewayClassStatus {
	out := *current.DeepCopy()
	out.Conditions = mergeConditions(current.Conditions, want.Conditions, ownedClass, now)
	out.SupportedFeatures = want.SupportedFeatures
	return out
}

// writeGateways writes the status of Weft's GatewayClasses and Gateways:
// those want has an entry for; others are left alone.
func (w *Writer) writeGateways(ctx context.Context, in gateway.Input, want gateway.Output, now metav1.Time) (int, error) {
	c := w.client.GatewayV1()
	classes := map[string]gwv1.GatewayClassStatus{}
	for _, s := range want.GatewayClasses {
		classes[s.Name] = s.Status
	}
	gateways := map[[2]string]gwv1.GatewayStatus{}
	for _, s := range want.Gateways {
		gateways[[2]string{s.Namespace, s.Name}] = s.Status
	}
	n1, err1 := writeAll(ctx, w, kind[gwv1.GatewayClass]{
		name: "GatewayClass",
		meta: func(o *gwv1.GatewayClass) *metav1.ObjectMeta { return &o.ObjectMeta },
		get: func(ctx context.Context, _, name string) (*gwv1.GatewayClass, error) {
			return c.GatewayClasses().Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.GatewayClass) error {
			_, err := c.GatewayClasses().UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
		want: func(o *gwv1.GatewayClass) *gwv1.GatewayClass {
			st, ok := classes[o.Name]
			if !ok {
				return nil
			}
			merged := classStatus(o.Status, st, now)
			if equality.Semantic.DeepEqual(merged, o.Status) {
				return nil
			}
			out := o.DeepCopy()
			out.Status = merged
			return out
		},
	}, addrs(in.GatewayClasses))
	n2, err2 := writeAll(ctx, w, kind[gwv1.Gateway]{
		name: "Gateway",
		meta: func(o *gwv1.Gateway) *metav1.ObjectMeta { return &o.ObjectMeta },
		get: func(ctx context.Context, ns, name string) (*gwv1.Gateway, error) {
			return c.Gateways(ns).Get(ctx, name, metav1.GetOptions{})
		},
		update: func(ctx context.Context, o *gwv1.Gateway) error {
			_, err := c.Gateways(o.Namespace).UpdateStatus(ctx, o, metav1.UpdateOptions{})
			return err
		},
		want: func(o *gwv1.Gateway) *gwv1.Gateway {
			st, ok := gateways[[2]string{o.Namespace, o.Name}]
			if !ok {
				return nil
			}
			merged := gatewayStatus(o.Status, st, now)
			if equality.Semantic.DeepEqual(merged, o.Status) {
				return nil
			}
			out := o.DeepCopy()
			out.Status = merged
			return out
		},
	}, addrs(in.Gateways))
	return n1 + n2, errors.Join(err1, err2)
}
