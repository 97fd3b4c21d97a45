package gateway

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// objKey names a namespaced object.
type objKey struct{ ns, name string }

func (k objKey) String() string { return k.ns + "/" + k.name }

// index holds the input objects keyed the way resolution looks them up.
type index struct {
	in         *Input
	namespaces map[string]*corev1.Namespace
	secrets    map[objKey]*corev1.Secret
	configMaps map[objKey]*corev1.ConfigMap
	// services is built on first use (service): a round that finds no
	// Gateway of Weft's never looks a Service up, and at issue #17's scale
	// indexing 10,000 of them every round was 1.4 MB of garbage each.
	services    map[objKey]*corev1.Service
	grants      map[string][]*gwv1.ReferenceGrant
	provisioned map[objKey]*Provisioned
	reserved    map[int32]bool
}

func newIndex(in *Input) *index {
	ix := &index{
		in:          in,
		namespaces:  map[string]*corev1.Namespace{},
		secrets:     map[objKey]*corev1.Secret{},
		configMaps:  map[objKey]*corev1.ConfigMap{},
		grants:      map[string][]*gwv1.ReferenceGrant{},
		provisioned: map[objKey]*Provisioned{},
		reserved:    map[int32]bool{},
	}
	for i := range in.Namespaces {
		ix.namespaces[in.Namespaces[i].Name] = &in.Namespaces[i]
	}
	for i := range in.Secrets {
		s := &in.Secrets[i]
		ix.secrets[objKey{s.Namespace, s.Name}] = s
	}
	for i := range in.ConfigMaps {
		c := &in.ConfigMaps[i]
		ix.configMaps[objKey{c.Namespace, c.Name}] = c
	}
	for i := range in.ReferenceGrants {
		g := &in.ReferenceGrants[i]
		ix.grants[g.Namespace] = append(ix.grants[g.Namespace], g)
	}
	for i := range in.Provisioned {
		p := &in.Provisioned[i]
		ix.provisioned[objKey{p.Namespace, p.Name}] = p
	}
	for _, p := range in.Options.ReservedPorts {
		ix.reserved[p] = true
	}
	return ix
}

// service returns the Service k, nil when there is none.
func (ix *index) service(k objKey) *corev1.Service {
	if ix.services == nil {
		ix.services = make(map[objKey]*corev1.Service, len(ix.in.Services))
		for i := range ix.in.Services {
			s := &ix.in.Services[i]
			ix.services[objKey{s.Namespace, s.Name}] = s
		}
	}
	return ix.services[k]
}

// ref is a reference from an object (from) to another (to), as
// ReferenceGrants describe both ends. Group "" is the core API group.
type ref struct {
	fromGroup, fromKind, fromNS, fromName string
	toGroup, toKind, toNS, toName         string
}

// permitted reports whether a reference may be made: always within one
// namespace; across namespaces only when a ReferenceGrant in the target
// namespace lists the source (group, kind, namespace) in from and the
// target (group, kind, and name if it sets one) in to.
func (ix *index) permitted(r ref) bool {
	if r.fromNS == r.toNS {
		return true
	}
	for _, g := range ix.grants[r.toNS] {
		if grantFrom(g, r) && grantTo(g, r) {
			return true
		}
	}
	return false
}

func grantFrom(g *gwv1.ReferenceGrant, r ref) bool {
	for _, f := range g.Spec.From {
		if string(f.Group) == r.fromGroup && string(f.Kind) == r.fromKind && string(f.Namespace) == r.fromNS {
			return true
		}
	}
	return false
}

func grantTo(g *gwv1.ReferenceGrant, r ref) bool {
	for _, t := range g.Spec.To {
		if string(t.Group) == r.toGroup && string(t.Kind) == r.toKind && (t.Name == nil || *t.Name == "" || string(*t.Name) == r.toName) {
			return true
		}
	}
	return false
}

// notPermitted says what is missing for a refused reference.
func notPermitted(r ref) string {
	return fmt.Sprintf("no ReferenceGrant in namespace %s allows %s %s/%s to refer to %s %s/%s; create one there with from {group: %q, kind: %s, namespace: %s} and to {group: %q, kind: %s, name: %s}",
		r.toNS, r.fromKind, r.fromNS, r.fromName, r.toKind, r.toNS, r.toName, r.fromGroup, r.fromKind, r.fromNS, r.toGroup, r.toKind, r.toName)
}
