package gateway

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// gatewayState is one of Weft's Gateways and what was decided about it.
type gatewayState struct {
	ix        *index
	gw        *gwv1.Gateway
	listeners []*listenerState
	frontends map[int32]*frontend
	// invalid is why the Gateway itself is not accepted (nil: it may be).
	invalid *reason
	// notes are added to the Accepted message.
	notes []string
	// unprogrammed is why the data plane is not programmed (addresses,
	// provisioning); nil when it is.
	unprogrammed *reason
	addresses    []gwv1.GatewayStatusAddress
	// clientCert is spec.tls.backend.clientCertificateRef, read;
	// clientCertRef is why it is unusable.
	clientCert    *Certificate
	clientCertRef *reason
}

func (gs *gatewayState) key() objKey { return objKey{gs.gw.Namespace, gs.gw.Name} }

// newGateway checks a Gateway of one of Weft's classes and its listeners.
func newGateway(ix *index, gw *gwv1.Gateway, class *classState) *gatewayState {
	gs := &gatewayState{ix: ix, gw: gw, frontends: map[int32]*frontend{}}
	for i := range gw.Spec.Listeners {
		gs.listeners = append(gs.listeners, gs.newListener(&gw.Spec.Listeners[i]))
	}
	for _, ls := range gs.listeners {
		gs.listenerFrontend(ls)
	}
	conflicts(gs.listeners)
	overlappingTLS(gs.listeners)
	gs.checkSpec(class)
	gs.checkAddresses()
	gs.readClientCertificate()
	return gs
}

// checkSpec checks what concerns the Gateway as a whole.
func (gs *gatewayState) checkSpec(class *classState) {
	spec := &gs.gw.Spec
	switch {
	case class.invalid != "":
		gs.invalid = &reason{string(gwv1.GatewayReasonInvalid), fmt.Sprintf("GatewayClass %s is not accepted (%s); fix the GatewayClass", class.gc.Name, class.invalid)}
	case spec.Infrastructure != nil && spec.Infrastructure.ParametersRef != nil:
		p := spec.Infrastructure.ParametersRef
		gs.invalid = &reason{string(gwv1.GatewayReasonInvalidParameters), fmt.Sprintf("Weft's gateway takes no parameters, but infrastructure.parametersRef names %s %s (group %q); remove it", p.Kind, p.Name, p.Group)}
	}
	if spec.AllowedListeners != nil && spec.AllowedListeners.Namespaces != nil && spec.AllowedListeners.Namespaces.From != nil && *spec.AllowedListeners.Namespaces.From != gwv1.NamespacesFromNone {
		gs.notes = append(gs.notes, "allowedListeners is ignored: Weft does not attach ListenerSets yet")
	}
	if spec.DefaultScope != "" && spec.DefaultScope != gwv1.GatewayDefaultScopeNone {
		gs.notes = append(gs.notes, "defaultScope is ignored: Weft does not attach routes to default Gateways yet; list the Gateway in the routes' parentRefs")
	}
}

// readClientCertificate reads spec.tls.backend.clientCertificateRef.
func (gs *gatewayState) readClientCertificate() {
	t := gs.gw.Spec.TLS
	if t == nil || t.Backend == nil || t.Backend.ClientCertificateRef == nil {
		return
	}
	c, p := gs.ix.secretCertificate(gs.gw, *t.Backend.ClientCertificateRef, "tls.backend.clientCertificateRef")
	if p == nil {
		gs.clientCert = c
		return
	}
	rsn := gwv1.GatewayReasonInvalidClientCertificateRef
	if p.class == refNotPermitted {
		rsn = gwv1.GatewayReasonRefNotPermitted
	}
	gs.clientCertRef = &reason{string(rsn), p.msg + " (backends that require a client certificate refuse the gateway's connections until it is fixed)"}
}

// validListeners splits listener names by acceptance.
func (gs *gatewayState) validListeners() (ok, bad []string, why []string) {
	for _, ls := range gs.listeners {
		r := ls.notAccepted
		if r == nil {
			r = ls.conflict
		}
		if r == nil {
			ok = append(ok, ls.name())
			continue
		}
		bad = append(bad, ls.name())
		why = append(why, fmt.Sprintf("listener %s: %s (%s)", ls.name(), r.msg, r.reason))
	}
	return ok, bad, why
}

// accepted reports whether the Gateway is accepted.
func (gs *gatewayState) accepted() bool {
	ok, _, _ := gs.validListeners()
	return gs.invalid == nil && len(ok) > 0
}

// programmed reports whether the data plane serves the Gateway.
func (gs *gatewayState) programmed() bool { return gs.accepted() && gs.unprogrammed == nil }

func (gs *gatewayState) acceptedCondition() metav1.Condition {
	gen := gs.gw.Generation
	if gs.invalid != nil {
		return cond(gwv1.GatewayConditionAccepted, false, gs.invalid.reason, sentences(append([]string{gs.invalid.msg}, gs.notes...)...), gen)
	}
	ok, bad, why := gs.validListeners()
	switch {
	case len(gs.listeners) == 0:
		return cond(gwv1.GatewayConditionAccepted, false, gwv1.GatewayReasonListenersNotValid, "the Gateway has no listeners; add at least one", gen)
	case len(ok) == 0:
		return cond(gwv1.GatewayConditionAccepted, false, gwv1.GatewayReasonListenersNotValid, sentences(append([]string{"no listener is valid, so the Gateway serves nothing"}, why...)...), gen)
	case len(bad) > 0:
		msg := fmt.Sprintf("%s %s served; %s %s not", listeners(ok), isAre(ok), listeners(bad), isAre(bad))
		return cond(gwv1.GatewayConditionAccepted, true, gwv1.GatewayReasonListenersNotValid, sentences(append(append([]string{msg}, why...), gs.notes...)...), gen)
	}
	return cond(gwv1.GatewayConditionAccepted, true, gwv1.GatewayReasonAccepted, sentences(append([]string{listeners(ok) + " " + isAre(ok) + " valid"}, gs.notes...)...), gen)
}

func (gs *gatewayState) programmedCondition() metav1.Condition {
	gen := gs.gw.Generation
	switch {
	case !gs.accepted():
		return cond(gwv1.GatewayConditionProgrammed, false, gwv1.GatewayReasonInvalid, "the Gateway is not accepted (see the Accepted condition), so nothing is programmed", gen)
	case gs.unprogrammed != nil:
		return cond(gwv1.GatewayConditionProgrammed, false, gs.unprogrammed.reason, gs.unprogrammed.msg, gen)
	}
	var addrs []string
	for _, a := range gs.addresses {
		addrs = append(addrs, a.Value)
	}
	return cond(gwv1.GatewayConditionProgrammed, true, gwv1.GatewayReasonProgrammed, "the data plane serves the Gateway on "+strings.Join(addrs, ", "), gen)
}

func (gs *gatewayState) resolvedRefsCondition() metav1.Condition {
	gen := gs.gw.Generation
	if r := gs.clientCertRef; r != nil {
		return cond(gwv1.GatewayConditionResolvedRefs, false, r.reason, r.msg, gen)
	}
	var bad []string
	for _, ls := range gs.listeners {
		if len(ls.refs) > 0 {
			rsn, _ := firstReason(ls.refs)
			bad = append(bad, fmt.Sprintf("%s (%s)", ls.name(), rsn))
		}
	}
	if len(bad) > 0 {
		return cond(gwv1.GatewayConditionResolvedRefs, false, gwv1.GatewayReasonListenersNotResolved, listeners(bad)+" cannot resolve every reference; see the listeners' ResolvedRefs conditions", gen)
	}
	return cond(gwv1.GatewayConditionResolvedRefs, true, gwv1.GatewayReasonResolvedRefs, "all references resolved", gen)
}

// status assembles the Gateway's status.
func (gs *gatewayState) status() GatewayStatus {
	gen := gs.gw.Generation
	st := gwv1.GatewayStatus{Addresses: gs.addresses}
	st.Conditions = []metav1.Condition{gs.acceptedCondition(), gs.programmedCondition(), gs.resolvedRefsCondition()}
	if where := gs.insecureFrontend(); len(where) > 0 {
		st.Conditions = append(st.Conditions, cond(gwv1.GatewayConditionInsecureFrontendValidationMode, true, gwv1.GatewayReasonConfigurationChanged,
			fmt.Sprintf("client certificate validation in %s is AllowInsecureFallback: connections without a valid client certificate are accepted and authorization is left to the backends; set mode AllowValidOnly once every client presents a certificate", strings.Join(where, ", ")), gen))
	}
	for _, ls := range gs.listeners {
		st.Listeners = append(st.Listeners, gs.listenerStatus(ls))
	}
	return GatewayStatus{Namespace: gs.gw.Namespace, Name: gs.gw.Name, Generation: gen, Status: st}
}
