package resolve

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// Condition types and reasons, from the Gateway API constants.
const (
	condAccepted         = string(gwv1.RouteConditionAccepted)
	condResolvedRefs     = string(gwv1.RouteConditionResolvedRefs)
	condPartiallyInvalid = string(gwv1.RouteConditionPartiallyInvalid)

	reasonAccepted            = string(gwv1.RouteReasonAccepted)
	reasonNoMatchingParent    = string(gwv1.RouteReasonNoMatchingParent)
	reasonUnsupportedValue    = string(gwv1.RouteReasonUnsupportedValue)
	reasonPending             = string(gwv1.RouteReasonPending)
	reasonIncompatibleFilters = string(gwv1.RouteReasonIncompatibleFilters)
	reasonConflicted          = "Conflicted"
	reasonResolvedRefs        = string(gwv1.RouteReasonResolvedRefs)
	reasonRefNotPermitted     = string(gwv1.RouteReasonRefNotPermitted)
	reasonInvalidKind         = string(gwv1.RouteReasonInvalidKind)
	reasonBackendNotFound     = string(gwv1.RouteReasonBackendNotFound)
	reasonUnsupportedProtocol = string(gwv1.RouteReasonUnsupportedProtocol)

	policyReasonAccepted       = string(gwv1.PolicyReasonAccepted)
	policyReasonConflicted     = string(gwv1.PolicyReasonConflicted)
	policyReasonInvalid        = string(gwv1.PolicyReasonInvalid)
	policyReasonTargetNotFound = string(gwv1.PolicyReasonTargetNotFound)
)

// Kinds of ObjectStatus.
const (
	KindHTTPRoute             = "HTTPRoute"
	KindGRPCRoute             = "GRPCRoute"
	KindTCPRoute              = "TCPRoute"
	KindXBackendTrafficPolicy = "XBackendTrafficPolicy"
)

func condTrue(typ, reason, msg string) *metav1.Condition {
	return &metav1.Condition{Type: typ, Status: metav1.ConditionTrue, Reason: reason, Message: msg}
}

func condFalse(typ, reason, msg string) *metav1.Condition {
	return &metav1.Condition{Type: typ, Status: metav1.ConditionFalse, Reason: reason, Message: msg}
}

// refProblems collects what is wrong with a route's backend references.
type refProblems struct {
	reason string
	msgs   []string
}

func (p *refProblems) add(reason, msg string) {
	if p.reason == "" {
		p.reason = reason
	}
	if !slices.Contains(p.msgs, msg) {
		p.msgs = append(p.msgs, msg)
	}
}

// maxMessage bounds a condition message (the API allows 32768 bytes).
const maxMessage = 8192

// joinMessages joins sentences, each starting with a capital letter.
func joinMessages(msgs []string) string {
	caps := make([]string, len(msgs))
	for i, m := range msgs {
		if m != "" && m[0] >= 'a' && m[0] <= 'z' {
			m = string(m[0]-'a'+'A') + m[1:]
		}
		caps[i] = m
	}
	s := strings.Join(caps, ". ")
	if len(s) > maxMessage {
		s = s[:maxMessage-3] + "..."
	}
	return s
}

// routeConditions builds the conditions of one parentRef of a route.
func routeConditions(rt *route, pr *parentResult) []metav1.Condition {
	var conds []metav1.Condition
	accepted := pr.accepted
	if accepted == nil {
		switch {
		case len(pr.won) == 0 && len(pr.lost) > 0:
			accepted = condFalse(condAccepted, reasonConflicted, joinMessages(pr.lost))
		case rt.totalRules > 0 && len(rt.rules) == 0:
			accepted = condFalse(condAccepted, reasonUnsupportedValue,
				"No rule of this route can be programmed: "+joinMessages(rt.dropped))
		default:
			msg := acceptedMessage(rt, pr)
			accepted = condTrue(condAccepted, reasonAccepted, msg)
		}
	}
	conds = append(conds, *accepted)
	if len(rt.refs.msgs) > 0 {
		conds = append(conds, *condFalse(condResolvedRefs, rt.refs.reason, joinMessages(rt.refs.msgs)))
	} else {
		conds = append(conds, *condTrue(condResolvedRefs, reasonResolvedRefs, "All backend references resolved"))
	}
	if accepted.Status == metav1.ConditionTrue && len(rt.dropped) > 0 {
		conds = append(conds, *condTrue(condPartiallyInvalid, reasonUnsupportedValue, joinMessages(rt.dropped)))
	}
	for i := range conds {
		conds[i].ObservedGeneration = rt.generation
	}
	return conds
}

func acceptedMessage(rt *route, pr *parentResult) string {
	var ports []string
	for _, p := range pr.won {
		ports = append(ports, p.String())
	}
	msg := "programmed on " + strings.Join(ports, ", ")
	if pr.consumer != "" {
		msg += fmt.Sprintf(" as a consumer route for callers in namespace %s", pr.consumer)
	} else {
		msg += " as a producer route for callers in every namespace"
	}
	msgs := []string{msg}
	if pr.idle {
		msgs = append(msgs, fmt.Sprintf("namespace %s is not enrolled (annotation %s: %s), so its pods' traffic does not reach the mesh and this consumer route has no effect until it is", pr.consumer, mesh.AnnotationMesh, mesh.MeshEnabled))
	}
	msgs = append(msgs, pr.lost...)
	msgs = append(msgs, rt.notes...)
	return joinMessages(msgs)
}

// statuses assembles every route and policy status, sorted.
func (r *resolver) statuses(routes []*route) []ObjectStatus {
	out := make([]ObjectStatus, 0, len(routes))
	for _, rt := range routes {
		os := ObjectStatus{Kind: rt.kind.String(), Namespace: rt.ns, Name: rt.name, Generation: rt.generation, Parents: r.routeStatus(rt)}
		if len(os.Parents) > 0 {
			out = append(out, os)
		}
	}
	out = append(out, r.policies.statuses()...)
	// kind, namespace and name are unique: an unstable sort is the same
	// order, and 20,000 routes' symmerge was 2% of the controller's CPU
	slices.SortFunc(out, CompareStatuses)
	return out
}

// CompareStatuses orders statuses by kind, namespace and name: the order
// of Output.Statuses, and of the status writer's lookups.
func CompareStatuses(a, b ObjectStatus) int {
	return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}
