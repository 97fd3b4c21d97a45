package source

import (
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// objRef names a namespaced object of one kind ("Secret" or "ConfigMap").
type objRef struct{ kind, namespace, name string }

// references lists the Secrets and ConfigMaps that Gateways and
// BackendTLSPolicies refer to: listener certificates, frontend client
// validation CAs, the backend client certificate and BackendTLSPolicy CAs.
// Only these are handed to resolution and only their changes resolve
// again: a cluster's other Secrets (service account tokens, Helm releases,
// application credentials) cost no resolution and are not compared.
// References are collected whatever the Gateway's class or the
// ReferenceGrants say: resolution decides what may be used.
func references(gateways []*gwv1.Gateway, policies []*gwv1.BackendTLSPolicy) map[objRef]bool {
	refs := map[objRef]bool{}
	secret := func(ns string, r gwv1.SecretObjectReference) {
		if (r.Group == nil || *r.Group == "") && (r.Kind == nil || *r.Kind == "Secret") {
			if r.Namespace != nil && *r.Namespace != "" {
				ns = string(*r.Namespace)
			}
			refs[objRef{"Secret", ns, string(r.Name)}] = true
		}
	}
	object := func(ns string, group gwv1.Group, kind gwv1.Kind, name gwv1.ObjectName, refNS *gwv1.Namespace) {
		if group != "" || (kind != "Secret" && kind != "ConfigMap") {
			return
		}
		if refNS != nil && *refNS != "" {
			ns = string(*refNS)
		}
		refs[objRef{string(kind), ns, string(name)}] = true
	}
	validation := func(ns string, c gwv1.TLSConfig) {
		if c.Validation == nil {
			return
		}
		for _, r := range c.Validation.CACertificateRefs {
			object(ns, r.Group, r.Kind, r.Name, r.Namespace)
		}
	}
	for _, gw := range gateways {
		for _, l := range gw.Spec.Listeners {
			if l.TLS != nil {
				for _, r := range l.TLS.CertificateRefs {
					secret(gw.Namespace, r)
				}
			}
		}
		tls := gw.Spec.TLS
		if tls == nil {
			continue
		}
		if tls.Backend != nil && tls.Backend.ClientCertificateRef != nil {
			secret(gw.Namespace, *tls.Backend.ClientCertificateRef)
		}
		if tls.Frontend != nil {
			validation(gw.Namespace, tls.Frontend.Default)
			for _, p := range tls.Frontend.PerPort {
				validation(gw.Namespace, p.TLS)
			}
		}
	}
	for _, p := range policies {
		for _, r := range p.Spec.Validation.CACertificateRefs {
			object(p.Namespace, r.Group, r.Kind, r.Name, nil)
		}
	}
	return refs
}
