package gateway

import (
	"fmt"
	"slices"
	"strings"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// listenerTLS checks a listener's tls stanza and reads its certificates.
func (gs *gatewayState) listenerTLS(ls *listenerState) {
	l := ls.spec
	unsupported := func(msg string) {
		if ls.notAccepted == nil {
			ls.notAccepted = &reason{string(gwv1.ListenerReasonUnsupportedValue), msg}
		}
	}
	if family(l.Protocol) != familyTLS {
		if l.TLS != nil {
			unsupported(fmt.Sprintf("tls must not be set on a listener of protocol %s; remove it or use protocol HTTPS or TLS", l.Protocol))
		}
		return
	}
	ls.tlsMode = gwv1.TLSModeTerminate
	if l.TLS != nil && l.TLS.Mode != nil && *l.TLS.Mode != "" {
		ls.tlsMode = *l.TLS.Mode
	}
	switch {
	case ls.tlsMode != gwv1.TLSModeTerminate && ls.tlsMode != gwv1.TLSModePassthrough:
		unsupported(fmt.Sprintf("tls.mode %q is unknown; use Terminate or Passthrough", ls.tlsMode))
		return
	case ls.tlsMode == gwv1.TLSModePassthrough && l.Protocol == gwv1.HTTPSProtocolType:
		unsupported("an HTTPS listener terminates TLS; for passthrough use protocol TLS and a TLSRoute")
		return
	}
	if l.TLS != nil && len(l.TLS.Options) > 0 {
		keys := make([]string, 0, len(l.TLS.Options))
		for k := range l.TLS.Options {
			keys = append(keys, string(k))
		}
		slices.Sort(keys)
		unsupported(fmt.Sprintf("tls.options %s are not supported by Weft, and ignoring a TLS setting could weaken the listener; remove them", strings.Join(keys, ", ")))
	}
	if ls.tlsMode == gwv1.TLSModePassthrough {
		return
	}
	if l.TLS == nil || len(l.TLS.CertificateRefs) == 0 {
		ls.refs = append(ls.refs, reason{string(gwv1.ListenerReasonInvalidCertificateRef), "a listener that terminates TLS needs a certificate; set tls.certificateRefs to a Secret with tls.crt and tls.key"})
		return
	}
	for i, r := range l.TLS.CertificateRefs {
		c, p := gs.ix.secretCertificate(gs.gw, r, fmt.Sprintf("tls.certificateRefs[%d]", i))
		if p == nil {
			ls.certs = append(ls.certs, c)
			continue
		}
		rsn := gwv1.ListenerReasonInvalidCertificateRef
		if p.class == refNotPermitted {
			rsn = gwv1.ListenerReasonRefNotPermitted
		}
		ls.refs = append(ls.refs, reason{string(rsn), p.msg})
	}
}

// frontend is the client certificate validation of one port, resolved.
type frontend struct {
	validation *ClientValidation
	// refs are the unusable CA references (every listener of the port
	// reports them); none is usable when validation has no CA.
	refs []reason
	// invalid says why the configuration cannot be applied at all.
	invalid string
}

// frontendFor resolves spec.tls.frontend for one port: the perPort entry
// for it, else the default. nil when there is no validation to apply.
func (gs *gatewayState) frontendFor(port int32) *frontend {
	if f, ok := gs.frontends[port]; ok {
		return f
	}
	var cfg *gwv1.FrontendTLSValidation
	where := "tls.frontend.default.validation"
	if t := gs.gw.Spec.TLS; t != nil && t.Frontend != nil {
		cfg = t.Frontend.Default.Validation
		for i, pp := range t.Frontend.PerPort {
			if pp.Port == port {
				cfg, where = pp.TLS.Validation, fmt.Sprintf("tls.frontend.perPort[%d].tls.validation", i)
				break
			}
		}
	}
	var f *frontend
	if cfg != nil {
		f = gs.resolveFrontend(cfg, where)
	}
	gs.frontends[port] = f
	return f
}

func (gs *gatewayState) resolveFrontend(cfg *gwv1.FrontendTLSValidation, where string) *frontend {
	f := &frontend{validation: &ClientValidation{Mode: cfg.Mode}}
	switch cfg.Mode {
	case "":
		f.validation.Mode = gwv1.AllowValidOnly
	case gwv1.AllowValidOnly, gwv1.AllowInsecureFallback:
	default:
		f.invalid = fmt.Sprintf("%s.mode %q is unknown; use AllowValidOnly or AllowInsecureFallback", where, cfg.Mode)
	}
	from := gatewayRef(gs.gw, "", "", "", "")
	for i, r := range cfg.CACertificateRefs {
		ns := gs.gw.Namespace
		if r.Namespace != nil && *r.Namespace != "" {
			ns = string(*r.Namespace)
		}
		ca, p := gs.ix.caCertificate(string(r.Group), string(r.Kind), ns, string(r.Name), &from, fmt.Sprintf("%s.caCertificateRefs[%d]", where, i))
		if p == nil {
			f.validation.CACertificates = append(f.validation.CACertificates, ca)
			continue
		}
		rsn := map[problemClass]gwv1.ListenerConditionReason{
			badKind:         gwv1.ListenerReasonInvalidCACertificateKind,
			badRef:          gwv1.ListenerReasonInvalidCACertificateRef,
			refNotPermitted: gwv1.ListenerReasonRefNotPermitted,
		}[p.class]
		f.refs = append(f.refs, reason{string(rsn), p.msg})
	}
	if len(cfg.CACertificateRefs) == 0 {
		f.refs = append(f.refs, reason{string(gwv1.ListenerReasonInvalidCACertificateRef), where + " sets no caCertificateRefs; list the ConfigMaps (or Secrets) with the CA certificates in ca.crt"})
	}
	return f
}

// listenerFrontend applies the port's client certificate validation to an
// HTTPS listener (the Gateway API applies it to "Listeners handling HTTPS
// traffic"; TLS listeners are not affected).
func (gs *gatewayState) listenerFrontend(ls *listenerState) {
	if ls.spec.Protocol != gwv1.HTTPSProtocolType {
		return
	}
	f := gs.frontendFor(ls.spec.Port)
	if f == nil {
		return
	}
	ls.refs = append(ls.refs, f.refs...)
	switch {
	case f.invalid != "":
		if ls.notAccepted == nil {
			ls.notAccepted = &reason{string(gwv1.ListenerReasonUnsupportedValue), f.invalid}
		}
	case len(f.validation.CACertificates) == 0:
		if ls.notAccepted == nil {
			_, msg := firstReason(f.refs)
			ls.notAccepted = &reason{string(gwv1.ListenerReasonNoValidCACertificate), "no CA certificate for client certificate validation is usable, so no client could be verified: " + msg}
		}
	default:
		ls.validation = f.validation
	}
}

// insecureFrontend names where AllowInsecureFallback is configured.
func (gs *gatewayState) insecureFrontend() []string {
	t := gs.gw.Spec.TLS
	if t == nil || t.Frontend == nil {
		return nil
	}
	var out []string
	if v := t.Frontend.Default.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
		out = append(out, "tls.frontend.default")
	}
	for _, pp := range t.Frontend.PerPort {
		if v := pp.TLS.Validation; v != nil && v.Mode == gwv1.AllowInsecureFallback {
			out = append(out, fmt.Sprintf("tls.frontend.perPort (port %d)", pp.Port))
		}
	}
	return out
}
