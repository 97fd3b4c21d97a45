package gateway

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Route condition reasons that are not Gateway API constants. The spec
// names no reason for a route the GRPCRoute doc says to reject when an
// HTTPRoute and a GRPCRoute claim one hostname of a listener ("MUST raise
// an Accepted condition with a status of False"); Weft uses the one its
// mesh uses for the same situation on a Service port (design.md).
const reasonRouteConflicted = "Conflicted"

// reason is a condition reason and its message.
type reason struct {
	reason, msg string
}

// cond builds a condition; LastTransitionTime is left for the status
// writer.
func cond[T ~string, R ~string](typ T, ok bool, r R, msg string, gen int64) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: string(typ), Status: st, Reason: string(r), Message: sentences(msg), ObservedGeneration: gen}
}

// listeners names listeners for messages: "listener a", "listeners a, b".
func listeners(names []string) string {
	if len(names) == 1 {
		return "listener " + names[0]
	}
	return "listeners " + strings.Join(names, ", ")
}

// isAre is the verb for listeners(names).
func isAre(names []string) string {
	if len(names) == 1 {
		return "is"
	}
	return "are"
}

// maxMessage bounds a condition message (the API allows 32768 bytes).
const maxMessage = 8192

// sentences joins messages into sentences, each starting with a capital
// letter (the style of the mesh's messages) unless it starts with a field
// path (tls.certificateRefs[0]), and bounds the result.
func sentences(msgs ...string) string {
	var parts []string
	for _, m := range msgs {
		m = strings.TrimSuffix(strings.TrimSpace(m), ".")
		if m == "" {
			continue
		}
		word, _, _ := strings.Cut(m, " ")
		if c := m[0]; c >= 'a' && c <= 'z' && !strings.ContainsAny(word, ".[:") {
			m = string(c-'a'+'A') + m[1:]
		}
		parts = append(parts, m)
	}
	s := strings.Join(parts, ". ")
	if len(s) > maxMessage {
		s = s[:maxMessage-3] + "..."
	}
	return s
}

// firstReason is the reason of the first problem, and every problem's
// message as sentences.
func firstReason(rs []reason) (string, string) {
	msgs := make([]string, len(rs))
	for i, r := range rs {
		msgs[i] = r.msg
	}
	return rs[0].reason, sentences(msgs...)
}

// listenerStatus assembles one listener's status.
func (gs *gatewayState) listenerStatus(ls *listenerState) gwv1.ListenerStatus {
	gen := gs.gw.Generation
	st := gwv1.ListenerStatus{Name: ls.spec.Name, SupportedKinds: ls.supportedKinds(), AttachedRoutes: ls.attached}
	var accepted, programmed metav1.Condition
	switch {
	case ls.notAccepted != nil:
		accepted = cond(gwv1.ListenerConditionAccepted, false, ls.notAccepted.reason, ls.notAccepted.msg, gen)
		programmed = cond(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonInvalid, "the listener is not accepted: "+ls.notAccepted.msg, gen)
	case ls.conflict != nil:
		accepted = cond(gwv1.ListenerConditionAccepted, false, ls.conflict.reason, ls.conflict.msg, gen)
		programmed = cond(gwv1.ListenerConditionProgrammed, false, ls.conflict.reason, ls.conflict.msg, gen)
	default:
		accepted = cond(gwv1.ListenerConditionAccepted, true, gwv1.ListenerReasonAccepted, sentences(append([]string{ls.describeAllowed(gs.gw.Namespace)}, ls.notes...)...), gen)
		programmed = gs.listenerProgrammed(ls)
	}
	resolved := cond(gwv1.ListenerConditionResolvedRefs, true, gwv1.ListenerReasonResolvedRefs, "all references resolved", gen)
	if len(ls.refs) > 0 {
		rsn, msg := firstReason(ls.refs)
		resolved = cond(gwv1.ListenerConditionResolvedRefs, false, rsn, msg, gen)
	}
	conflicted := cond(gwv1.ListenerConditionConflicted, false, gwv1.ListenerReasonNoConflicts, "no other listener shares this listener's port and hostname", gen)
	if ls.conflict != nil {
		conflicted = cond(gwv1.ListenerConditionConflicted, true, ls.conflict.reason, ls.conflict.msg, gen)
	}
	st.Conditions = []metav1.Condition{accepted, programmed, resolved, conflicted}
	if len(ls.overlaps) > 0 {
		st.Conditions = append(st.Conditions, cond(gwv1.ListenerConditionOverlappingTLSConfig, true, gwv1.ListenerReasonOverlappingHostnames,
			fmt.Sprintf("hostname %s overlaps the hostnames of %s on port %d, so a client that reuses a TLS connection across hosts may reach this listener with another listener's certificate; use hostnames that do not overlap, or the same certificate", describeHost(ls.hostname), listeners(ls.overlaps), ls.spec.Port), gen))
	}
	return st
}

// listenerProgrammed is Programmed for an accepted, unconflicted listener.
func (gs *gatewayState) listenerProgrammed(ls *listenerState) metav1.Condition {
	gen := gs.gw.Generation
	switch {
	case !ls.usable():
		_, msg := firstReason(ls.refs)
		return cond(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonInvalid, "no certificate of the listener is usable, so it cannot terminate TLS: "+msg, gen)
	case !gs.programmed():
		return cond(gwv1.ListenerConditionProgrammed, false, gwv1.ListenerReasonPending, "waiting for the Gateway to be programmed (see its Programmed condition)", gen)
	}
	return cond(gwv1.ListenerConditionProgrammed, true, gwv1.ListenerReasonProgrammed, fmt.Sprintf("the data plane serves the listener on port %d", ls.spec.Port), gen)
}

// describeHost quotes a listener hostname for messages.
func describeHost(h string) string {
	if h == "" {
		return "(none: every host)"
	}
	return fmt.Sprintf("%q", h)
}
