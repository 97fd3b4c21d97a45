package weftv1

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// Sentinel errors of GatewayPolicy validation.
var (
	ErrInvalidGateway     = errors.New("invalid gateway policy")
	ErrInvalidListener    = errors.New("invalid gateway listener")
	ErrInvalidCertificate = errors.New("invalid certificate")
	ErrInvalidBackendTLS  = errors.New("invalid backend TLS")
)

// Validate is ValidateWithin(DefaultLimits); a gateway's data plane NACKs a
// policy that fails.
func (g *GatewayPolicy) Validate() error { return g.ValidateWithin(DefaultLimits) }

// ValidateWithin checks a GatewayPolicy: ports unique, ascending and in
// range; the listeners of one port of one family (all HTTP; HTTPS and TLS;
// or one TCP); each listener's TLS settings consistent with its protocol;
// certificates, CA bundles and trust anchors parse; route tables valid and
// of a kind the listener serves; regex budget as for a node; clusters
// named once; tunnel addresses parse; backend TLS settings usable unless
// marked invalid.
func (g *GatewayPolicy) ValidateWithin(l Limits) error {
	var errs []error
	if g.GetNamespace() == "" || g.GetName() == "" {
		errs = append(errs, fmt.Errorf("%w: gateway namespace and name are required", ErrInvalidGateway))
	}
	if id := g.GetIdentity(); id != "" && !strings.HasPrefix(id, "spiffe://") {
		errs = append(errs, fmt.Errorf("%w: identity %q is not a SPIFFE ID", ErrInvalidGateway, id))
	}
	for i, der := range g.GetTrustAnchors() {
		if _, err := x509.ParseCertificate(der); err != nil {
			errs = append(errs, fmt.Errorf("%w: trust anchor %d: %v", ErrInvalidCertificate, i, err))
		}
	}
	var prev uint32
	for _, p := range g.GetPorts() {
		if p.GetPort() == 0 || p.GetPort() > 65535 || p.GetPort() <= prev {
			errs = append(errs, fmt.Errorf("%w: port %d out of range, repeated or not ascending", ErrInvalidGateway, p.GetPort()))
		}
		prev = max(prev, p.GetPort())
		errs = append(errs, at(fmt.Sprintf("port %d", p.GetPort()), p.validate(l)))
	}
	errs = append(errs, g.validateBackends())
	if len(g.GetPorts()) > 0 {
		errs = append(errs, g.checkRegexBudget(l))
	}
	return errors.Join(errs...)
}

// validateBackends checks clusters, tunnels, backend TLS and the client
// certificate.
func (g *GatewayPolicy) validateBackends() error {
	var errs []error
	seen := make(map[string]bool, len(g.GetClusters()))
	for _, c := range g.GetClusters() {
		if c.GetName() == "" || seen[c.GetName()] {
			errs = append(errs, fmt.Errorf("%w: cluster name %q empty or repeated", ErrInvalidGateway, c.GetName()))
		}
		seen[c.GetName()] = true
	}
	for node, addr := range g.GetNodeTunnels() {
		if _, err := netip.ParseAddrPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%w: tunnel address of node %q: %v", ErrInvalidGateway, node, err))
		}
	}
	for cluster, bt := range g.GetBackendTls() {
		errs = append(errs, at("backend TLS of "+cluster, bt.Validate()))
	}
	if c := g.GetClientCertificate(); c != nil {
		errs = append(errs, at("client certificate", c.Validate()))
	}
	return errors.Join(errs...)
}

// checkRegexBudget is NodePolicy's regex budget over every table of the
// gateway.
func (g *GatewayPolicy) checkRegexBudget(l Limits) error {
	np := &NodePolicy{}
	for _, p := range g.GetPorts() {
		for _, ls := range p.GetListeners() {
			for _, vh := range ls.GetVirtualHosts() {
				for _, t := range vh.GetTables() {
					np.Services = append(np.Services, &ServicePort{Producer: t})
				}
			}
		}
	}
	return np.checkRegexBudget(l)
}

// listenerFamily groups the protocols that may share a port.
func listenerFamily(p ListenerProtocol) int {
	switch p {
	case ListenerProtocol_LISTENER_PROTOCOL_HTTP:
		return 1
	case ListenerProtocol_LISTENER_PROTOCOL_HTTPS, ListenerProtocol_LISTENER_PROTOCOL_TLS:
		return 2
	case ListenerProtocol_LISTENER_PROTOCOL_TCP:
		return 3
	}
	return 0
}

func (p *GatewayPort) validate(l Limits) error {
	ls := p.GetListeners()
	if len(ls) == 0 {
		return fmt.Errorf("%w: no listener", ErrInvalidListener)
	}
	var errs []error
	fam := listenerFamily(ls[0].GetProtocol())
	for _, x := range ls {
		if f := listenerFamily(x.GetProtocol()); f != fam {
			errs = append(errs, fmt.Errorf("%w: listener %q (%s) cannot share the port with listener %q (%s)",
				ErrInvalidListener, x.GetName(), x.GetProtocol(), ls[0].GetName(), ls[0].GetProtocol()))
		}
		errs = append(errs, at("listener "+x.GetName(), x.Validate(l)))
	}
	if fam == 3 && len(ls) > 1 {
		errs = append(errs, fmt.Errorf("%w: a TCP port has exactly one listener, not %d", ErrInvalidListener, len(ls)))
	}
	return errors.Join(errs...)
}

// ValidateListenerHostname checks a listener or virtual host hostname: ""
// (any), a host name, or "*." followed by a host name.
func ValidateListenerHostname(h string) error {
	if h == "" {
		return nil
	}
	return ValidateHostname(strings.TrimPrefix(h, "*."))
}

// Validate checks one listener within l.
func (x *GatewayListener) Validate(l Limits) error {
	var errs []error
	if x.GetName() == "" {
		errs = append(errs, fmt.Errorf("%w: name is required", ErrInvalidListener))
	}
	errs = append(errs, ValidateListenerHostname(x.GetHostname()), x.validateTLS())
	for _, c := range x.GetCertificates() {
		errs = append(errs, at("certificate "+c.GetSecret(), c.Validate()))
	}
	if cv := x.GetClientValidation(); cv != nil {
		errs = append(errs, at("client validation", cv.Validate()))
	}
	kinds := x.tableKinds()
	for i, vh := range x.GetVirtualHosts() {
		where := fmt.Sprintf("virtual host %d (%q)", i, vh.GetHostname())
		errs = append(errs, at(where, ValidateListenerHostname(vh.GetHostname())))
		for j, t := range vh.GetTables() {
			if !kinds[t.GetKind()] {
				errs = append(errs, fmt.Errorf("%w: %s table %d: a %s listener cannot serve %s tables", ErrInvalidListener, where, j, x.GetProtocol(), t.GetKind()))
				continue
			}
			errs = append(errs, at(fmt.Sprintf("%s table %d", where, j), t.ValidateWithin(l)))
		}
	}
	if x.GetProtocol() == ListenerProtocol_LISTENER_PROTOCOL_TCP && (x.GetHostname() != "" || len(x.GetVirtualHosts()) > 1) {
		errs = append(errs, fmt.Errorf("%w: a TCP listener has no hostname and at most one virtual host", ErrInvalidListener))
	}
	return errors.Join(errs...)
}

// tableKinds are the route table kinds a listener serves.
func (x *GatewayListener) tableKinds() map[RouteKind]bool {
	switch x.GetProtocol() {
	case ListenerProtocol_LISTENER_PROTOCOL_HTTP, ListenerProtocol_LISTENER_PROTOCOL_HTTPS:
		return map[RouteKind]bool{RouteKind_ROUTE_KIND_HTTP: true, RouteKind_ROUTE_KIND_GRPC: true}
	case ListenerProtocol_LISTENER_PROTOCOL_TLS, ListenerProtocol_LISTENER_PROTOCOL_TCP:
		return map[RouteKind]bool{RouteKind_ROUTE_KIND_TCP: true}
	}
	return nil
}

// validateTLS checks the TLS mode, certificates and client validation
// against the protocol.
func (x *GatewayListener) validateTLS() error {
	mode, certs, cv := x.GetTlsMode(), len(x.GetCertificates()), x.GetClientValidation() != nil
	switch x.GetProtocol() {
	case ListenerProtocol_LISTENER_PROTOCOL_HTTP, ListenerProtocol_LISTENER_PROTOCOL_TCP:
		if mode != TLSMode_TLS_MODE_UNSPECIFIED || certs > 0 || cv {
			return fmt.Errorf("%w: a %s listener has no TLS settings", ErrInvalidListener, x.GetProtocol())
		}
	case ListenerProtocol_LISTENER_PROTOCOL_HTTPS, ListenerProtocol_LISTENER_PROTOCOL_TLS:
		switch {
		case mode == TLSMode_TLS_MODE_TERMINATE && certs == 0:
			return fmt.Errorf("%w: a terminating listener needs a certificate", ErrInvalidListener)
		case mode == TLSMode_TLS_MODE_PASSTHROUGH && x.GetProtocol() == ListenerProtocol_LISTENER_PROTOCOL_HTTPS:
			return fmt.Errorf("%w: an HTTPS listener terminates TLS", ErrInvalidListener)
		case mode == TLSMode_TLS_MODE_PASSTHROUGH && (certs > 0 || cv):
			return fmt.Errorf("%w: a passthrough listener has no certificates or client validation", ErrInvalidListener)
		case mode == TLSMode_TLS_MODE_UNSPECIFIED:
			return fmt.Errorf("%w: TLS mode is required", ErrInvalidListener)
		}
	default:
		return fmt.Errorf("%w: protocol %s", ErrInvalidListener, x.GetProtocol())
	}
	return nil
}

// Validate checks that the chain and the key parse and match.
func (c *Certificate) Validate() error {
	if _, err := tls.X509KeyPair(c.GetCertPem(), c.GetKeyPem()); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidCertificate, err)
	}
	return nil
}

// ParsePEMCertificates parses every CERTIFICATE block of b; none is an error.
func ParsePEMCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidCertificate, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no PEM CERTIFICATE block", ErrInvalidCertificate)
	}
	return out, nil
}

// Validate checks that the bundle holds at least one certificate.
func (c *CACertificate) Validate() error {
	_, err := ParsePEMCertificates(c.GetPem())
	return at("CA "+c.GetRef(), err)
}

// Validate checks the mode and the CA bundles.
func (v *ClientValidation) Validate() error {
	var errs []error
	if v.GetMode() == FrontendValidationMode_FRONTEND_VALIDATION_MODE_UNSPECIFIED {
		errs = append(errs, fmt.Errorf("%w: client validation mode is required", ErrInvalidListener))
	}
	if len(v.GetCaCertificates()) == 0 {
		errs = append(errs, fmt.Errorf("%w: client validation needs a CA certificate", ErrInvalidListener))
	}
	for _, ca := range v.GetCaCertificates() {
		errs = append(errs, ca.Validate())
	}
	return errors.Join(errs...)
}

// Validate checks a usable BackendTLS; one marked invalid needs nothing
// else (no connection is ever made with it).
func (b *BackendTLS) Validate() error {
	if b.GetInvalid() != "" {
		return nil
	}
	var errs []error
	if err := ValidateHostname(b.GetHostname()); err != nil {
		errs = append(errs, fmt.Errorf("%w: hostname: %w", ErrInvalidBackendTLS, err))
	}
	if !b.GetSystem() && len(b.GetCaCertificates()) == 0 {
		errs = append(errs, fmt.Errorf("%w: neither CA certificates nor system roots", ErrInvalidBackendTLS))
	}
	for _, ca := range b.GetCaCertificates() {
		errs = append(errs, ca.Validate())
	}
	for _, san := range b.GetSubjectAltNames() {
		errs = append(errs, san.Validate())
	}
	return errors.Join(errs...)
}

// Validate checks a DNS name (maybe "*."-prefixed) or an absolute URI.
func (s *SubjectAltName) Validate() error {
	if s.GetUri() {
		if u, err := url.Parse(s.GetValue()); err != nil || u.Scheme == "" {
			return fmt.Errorf("%w: subject alt name %q is not an absolute URI", ErrInvalidBackendTLS, s.GetValue())
		}
		return nil
	}
	if err := ValidateListenerHostname(s.GetValue()); err != nil || s.GetValue() == "" {
		return fmt.Errorf("%w: subject alt name %q is not a DNS name", ErrInvalidBackendTLS, s.GetValue())
	}
	return nil
}
