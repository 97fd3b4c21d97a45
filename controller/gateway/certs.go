package gateway

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Keys of the objects certificates are read from (the kubernetes.io/tls
// Secret layout, and the ConfigMap layout the Gateway API names for CAs).
const (
	keyTLSCert = corev1.TLSCertKey       // "tls.crt"
	keyTLSKey  = corev1.TLSPrivateKeyKey // "tls.key"
	keyCACert  = "ca.crt"
)

// problemClass is what is wrong with a reference; each caller maps it to
// the reason its own condition uses.
type problemClass int

const (
	// badKind: the reference names a group/kind Weft cannot read.
	badKind problemClass = iota + 1
	// badRef: the object does not exist or does not hold what it must.
	badRef
	// refNotPermitted: a cross-namespace reference no ReferenceGrant allows.
	refNotPermitted
)

// problem is one unusable reference.
type problem struct {
	class problemClass
	msg   string
}

func problemf(c problemClass, format string, args ...any) *problem {
	return &problem{class: c, msg: fmt.Sprintf(format, args...)}
}

// gatewayRef is a reference made by a Gateway, for ReferenceGrants.
func gatewayRef(gw *gwv1.Gateway, toGroup, toKind, toNS, toName string) ref {
	return ref{fromGroup: gwv1.GroupName, fromKind: "Gateway", fromNS: gw.Namespace, fromName: gw.Name, toGroup: toGroup, toKind: toKind, toNS: toNS, toName: toName}
}

// secretCertificate reads the certificate and key a Gateway refers to (a
// listener's certificateRefs, spec.tls.backend.clientCertificateRef). what
// names the field for messages.
func (ix *index) secretCertificate(gw *gwv1.Gateway, r gwv1.SecretObjectReference, what string) (*Certificate, *problem) {
	group, kind := "", "Secret"
	if r.Group != nil {
		group = string(*r.Group)
	}
	if r.Kind != nil {
		kind = string(*r.Kind)
	}
	ns := gw.Namespace
	if r.Namespace != nil && *r.Namespace != "" {
		ns = string(*r.Namespace)
	}
	if group != "" || kind != "Secret" {
		return nil, problemf(badKind, "%s %s names kind %s in group %q; Weft reads certificates from Secrets: set group \"\" and kind Secret", what, r.Name, kind, group)
	}
	if rf := gatewayRef(gw, "", "Secret", ns, string(r.Name)); !ix.permitted(rf) {
		return nil, problemf(refNotPermitted, "%s %s/%s: %s", what, ns, r.Name, notPermitted(rf))
	}
	s := ix.secrets[objKey{ns, string(r.Name)}]
	if s == nil {
		return nil, problemf(badRef, "%s: Secret %s/%s does not exist; create it with the certificate chain in %s and the private key in %s", what, ns, r.Name, keyTLSCert, keyTLSKey)
	}
	crt, key := s.Data[keyTLSCert], s.Data[keyTLSKey]
	if len(crt) == 0 || len(key) == 0 {
		return nil, problemf(badRef, "%s: Secret %s/%s must hold a PEM certificate chain in %s and its private key in %s", what, ns, r.Name, keyTLSCert, keyTLSKey)
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, problemf(badRef, "%s: Secret %s/%s does not hold a usable certificate and key in %s and %s: %v", what, ns, r.Name, keyTLSCert, keyTLSKey, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, problemf(badRef, "%s: Secret %s/%s: the first certificate in %s does not parse: %v", what, ns, r.Name, keyTLSCert, err)
	}
	return &Certificate{SecretNamespace: ns, SecretName: string(r.Name), CertPEM: crt, KeyPEM: key, Hostnames: leaf.DNSNames}, nil
}

// caCertificate reads a CA bundle (ca.crt of a ConfigMap or a Secret) in
// namespace ns. from, when set, is the referrer, whose cross-namespace
// references need a ReferenceGrant. what names the field for messages.
func (ix *index) caCertificate(group, kind, ns, name string, from *ref, what string) (*CACertificate, *problem) {
	if group != "" || (kind != "ConfigMap" && kind != "Secret") {
		return nil, problemf(badKind, "%s %s names kind %s in group %q; Weft reads CA certificates from the %s key of a ConfigMap or a Secret (group \"\")", what, name, kind, group, keyCACert)
	}
	if from != nil {
		r := *from
		r.toGroup, r.toKind, r.toNS, r.toName = "", kind, ns, name
		if !ix.permitted(r) {
			return nil, problemf(refNotPermitted, "%s %s/%s: %s", what, ns, name, notPermitted(r))
		}
	}
	var data []byte
	var found bool
	switch kind {
	case "ConfigMap":
		if cm := ix.configMaps[objKey{ns, name}]; cm != nil {
			found = true
			data = []byte(cm.Data[keyCACert])
			if len(data) == 0 {
				data = cm.BinaryData[keyCACert]
			}
		}
	case "Secret":
		if s := ix.secrets[objKey{ns, name}]; s != nil {
			found = true
			data = s.Data[keyCACert]
		}
	}
	if !found {
		return nil, problemf(badRef, "%s: %s %s/%s does not exist; create it with the PEM CA certificates in %s", what, kind, ns, name, keyCACert)
	}
	if err := checkCABundle(data); err != nil {
		return nil, problemf(badRef, "%s: %s %s/%s: %v", what, kind, ns, name, err)
	}
	return &CACertificate{Kind: kind, Namespace: ns, Name: name, PEM: data}, nil
}

// checkCABundle requires at least one PEM certificate and nothing that is
// not one.
func checkCABundle(data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("key %s is missing or empty; put the PEM CA certificates there", keyCACert)
	}
	n := 0
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return fmt.Errorf("key %s holds a PEM %s block; it must hold only CERTIFICATE blocks", keyCACert, b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("certificate %d in key %s does not parse: %v", n, keyCACert, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("key %s holds no PEM certificate", keyCACert)
	}
	return nil
}
