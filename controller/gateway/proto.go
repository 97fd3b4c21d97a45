package gateway

import (
	"maps"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// PolicyParams are the parts of a GatewayPolicy that do not come from the
// Gateway: the mesh's trust, the nodes' tunnels and the data plane's identity.
type PolicyParams struct {
	TrustDomain string
	// TrustAnchors are DER CA certificates (the mesh CA's bundle).
	TrustAnchors [][]byte
	// NodeTunnels is every node's inbound proxy (node name -> "ip:15008").
	NodeTunnels map[string]string
	// Identity is the SPIFFE ID of the Gateway's data plane pods.
	Identity string
}

// Policy translates the IR of g into what its data plane is sent. Pure; the
// result shares the route tables and clusters of g, which must not be
// modified afterwards.
func (g *Gateway) Policy(p PolicyParams) *weftv1.GatewayPolicy {
	out := &weftv1.GatewayPolicy{
		Namespace:         g.Namespace,
		Name:              g.Name,
		TrustDomain:       p.TrustDomain,
		TrustAnchors:      p.TrustAnchors,
		Identity:          p.Identity,
		Clusters:          g.Clusters,
		ClientCertificate: certificateProto(g.ClientCertificate),
		NodeTunnels:       maps.Clone(p.NodeTunnels),
	}
	for i := range g.Ports {
		out.Ports = append(out.Ports, portProto(&g.Ports[i]))
	}
	if len(g.BackendTLS) > 0 {
		out.BackendTls = make(map[string]*weftv1.BackendTLS, len(g.BackendTLS))
		for name, b := range g.BackendTLS {
			out.BackendTls[name] = backendTLSProto(b)
		}
	}
	return out
}

func portProto(p *Port) *weftv1.GatewayPort {
	out := &weftv1.GatewayPort{Port: uint32(p.Port)}
	for i := range p.Listeners {
		out.Listeners = append(out.Listeners, listenerProto(&p.Listeners[i]))
	}
	return out
}

func listenerProto(l *Listener) *weftv1.GatewayListener {
	out := &weftv1.GatewayListener{
		Name:             l.Name,
		Protocol:         protocolProto(l.Protocol),
		Hostname:         l.Hostname,
		TlsMode:          tlsModeProto(l.TLSMode),
		ClientValidation: clientValidationProto(l.ClientValidation),
	}
	for _, c := range l.Certificates {
		out.Certificates = append(out.Certificates, certificateProto(c))
	}
	for _, vh := range l.VirtualHosts {
		out.VirtualHosts = append(out.VirtualHosts, &weftv1.VirtualHost{Hostname: vh.Hostname, Tables: vh.Tables})
	}
	return out
}

func protocolProto(p gwv1.ProtocolType) weftv1.ListenerProtocol {
	switch p {
	case gwv1.HTTPProtocolType:
		return weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTP
	case gwv1.HTTPSProtocolType:
		return weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTPS
	case gwv1.TLSProtocolType:
		return weftv1.ListenerProtocol_LISTENER_PROTOCOL_TLS
	case gwv1.TCPProtocolType:
		return weftv1.ListenerProtocol_LISTENER_PROTOCOL_TCP
	}
	return weftv1.ListenerProtocol_LISTENER_PROTOCOL_UNSPECIFIED
}

func tlsModeProto(m gwv1.TLSModeType) weftv1.TLSMode {
	switch m {
	case gwv1.TLSModeTerminate:
		return weftv1.TLSMode_TLS_MODE_TERMINATE
	case gwv1.TLSModePassthrough:
		return weftv1.TLSMode_TLS_MODE_PASSTHROUGH
	}
	return weftv1.TLSMode_TLS_MODE_UNSPECIFIED
}

func certificateProto(c *Certificate) *weftv1.Certificate {
	if c == nil {
		return nil
	}
	return &weftv1.Certificate{
		Secret:    c.SecretNamespace + "/" + c.SecretName,
		CertPem:   c.CertPEM,
		KeyPem:    c.KeyPEM,
		Hostnames: c.Hostnames,
	}
}

func clientValidationProto(v *ClientValidation) *weftv1.ClientValidation {
	if v == nil {
		return nil
	}
	out := &weftv1.ClientValidation{CaCertificates: caProtos(v.CACertificates)}
	switch v.Mode {
	case gwv1.AllowValidOnly:
		out.Mode = weftv1.FrontendValidationMode_FRONTEND_VALIDATION_MODE_ALLOW_VALID_ONLY
	case gwv1.AllowInsecureFallback:
		out.Mode = weftv1.FrontendValidationMode_FRONTEND_VALIDATION_MODE_ALLOW_INSECURE_FALLBACK
	}
	return out
}

func caProtos(cs []*CACertificate) []*weftv1.CACertificate {
	var out []*weftv1.CACertificate
	for _, c := range cs {
		out = append(out, &weftv1.CACertificate{Ref: c.Kind + " " + c.Namespace + "/" + c.Name, Pem: c.PEM})
	}
	return out
}

func backendTLSProto(b *BackendTLS) *weftv1.BackendTLS {
	out := &weftv1.BackendTLS{
		Policy:         b.Policy,
		Hostname:       b.Hostname,
		CaCertificates: caProtos(b.CACertificates),
		System:         b.System,
		Invalid:        b.Invalid,
	}
	for _, san := range b.SubjectAltNames {
		out.SubjectAltNames = append(out.SubjectAltNames, &weftv1.SubjectAltName{Value: san.Value, Uri: san.Type == gwv1.URISubjectAltNameType})
	}
	return out
}
