package gateway

import (
	"errors"
	"fmt"
	"slices"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// The IR is what one Gateway's data plane serves, in plain Go structs that
// another package translates into the node proxy's policy format. Lists
// are in match order: where several entries could match, the first that
// matches is the one to use. Route tables are weftv1.RouteTables compiled
// by controller/resolve, so the gateway runs the mesh's route engine.

// Gateway is the data plane configuration of one accepted Gateway.
type Gateway struct {
	Namespace, Name string
	// Ports the data plane listens on, ascending; only ports with at least
	// one programmed listener.
	Ports []Port
	// Clusters referred to by any table (backends, mirrors), by name.
	Clusters []*weftv1.Cluster
	// BackendTLS says how to originate TLS toward clusters that a
	// BackendTLSPolicy covers, by cluster name. It applies where the
	// gateway speaks to the backend itself (HTTP and gRPC tables, TCP
	// tables of terminating TLS listeners), never to TCP listeners or TLS
	// passthrough, where the bytes are the client's. Only clusters used in
	// those places are listed.
	BackendTLS map[string]*BackendTLS
	// ClientCertificate is presented to backends that ask for one when
	// the gateway originates TLS (spec.tls.backend.clientCertificateRef);
	// nil when none is configured or it is unusable.
	ClientCertificate *Certificate
}

// Port is one port the data plane listens on and its listeners.
type Port struct {
	Port int32
	// Listeners in match order. HTTP: the first whose Hostname matches
	// the request's Host (port ignored) serves it; no match is a 404.
	// HTTPS and TLS: the first whose Hostname matches the SNI serves the
	// connection (no SNI: the listener with an empty Hostname, if any);
	// no match closes the connection. TCP: one listener.
	Listeners []Listener
}

// Listener is one programmed Gateway listener.
type Listener struct {
	// Name is the listener's name in the Gateway spec.
	Name     string
	Protocol gwv1.ProtocolType
	// Hostname the listener serves; "" any, "*.example.com" any host under
	// example.com. Empty for TCP.
	Hostname string
	// TLSMode is Terminate or Passthrough for HTTPS and TLS listeners.
	TLSMode gwv1.TLSModeType
	// Certificates of a terminating listener, in spec order: the first
	// whose Hostnames match the SNI (an exact name before a wildcard) is
	// presented, else the first.
	Certificates []*Certificate
	// ClientValidation, when set, makes the listener ask for (and check)
	// client certificates (HTTPS listeners; spec.tls.frontend).
	ClientValidation *ClientValidation
	// VirtualHosts in match order: the first whose Hostname matches the
	// request's Host (HTTP, HTTPS) or SNI (TLS) serves it; for TCP one
	// virtual host with an empty Hostname. No match is a 404 (a closed
	// connection for TLS).
	VirtualHosts []VirtualHost
}

// VirtualHost is what one hostname of a listener serves.
type VirtualHost struct {
	// Hostname is the intersection of the listener's and the routes'
	// hostnames; "" matches any host.
	Hostname string
	// Tables are tried in order: routes whose own hostnames are more
	// specific come first (GEP: "precedence using the original hostnames
	// configured on the Route"); the first table with a matching rule
	// serves the request, and a request no table matches is a 404. For
	// TCP tables (TCPRoute, TLSRoute) the first table serves the
	// connection.
	Tables []*weftv1.RouteTable
}

// Certificate is a serving or client certificate with its key.
type Certificate struct {
	// SecretNamespace and SecretName name the Secret it comes from.
	SecretNamespace, SecretName string
	// CertPEM is the PEM chain (tls.crt), KeyPEM the PEM key (tls.key).
	CertPEM, KeyPEM []byte
	// Hostnames are the DNS names (SANs) of the leaf certificate.
	Hostnames []string
}

// ClientValidation is frontend client certificate validation.
type ClientValidation struct {
	// CACertificates are the trust anchors; only the valid references.
	CACertificates []*CACertificate
	// Mode is AllowValidOnly (a valid client certificate is required) or
	// AllowInsecureFallback (connections without one, or with an invalid
	// one, are accepted too).
	Mode gwv1.FrontendValidationModeType
}

// CACertificate is a PEM bundle of trust anchors and where it comes from.
type CACertificate struct {
	// Kind is ConfigMap or Secret; Namespace and Name name the object.
	Kind, Namespace, Name string
	// PEM holds one or more CERTIFICATE blocks (ca.crt).
	PEM []byte
}

// BackendTLS is how the gateway originates TLS to a backend
// (BackendTLSPolicy).
type BackendTLS struct {
	// Policy is the BackendTLSPolicy, "namespace/name".
	Policy string
	// Hostname is the SNI to send, and the name the backend certificate
	// must carry unless SubjectAltNames are given.
	Hostname string
	// SubjectAltNames, when set, replace Hostname for authentication: the
	// backend certificate must carry one of them.
	SubjectAltNames []SubjectAltName
	// CACertificates are the trust anchors (valid references only);
	// System means the well-known system roots instead.
	CACertificates []*CACertificate
	System         bool
	// Invalid, when set, says why no connection may be made: requests to
	// the backend fail with a 5xx (every CA reference is unusable).
	Invalid string
}

// SubjectAltName is one name a backend certificate may carry.
type SubjectAltName struct {
	// Type is Hostname or URI.
	Type gwv1.SubjectAltNameType
	// Value is the DNS name (may start with "*.") or the URI.
	Value string
}

// Errors of Validate.
var (
	ErrPortOrder      = errors.New("ports are not unique and ascending")
	ErrNoListener     = errors.New("port has no listener")
	ErrMixedProtocols = errors.New("port mixes protocols that cannot share it")
	ErrNoCertificate  = errors.New("terminating listener has no certificate")
	ErrMatchOrder     = errors.New("hostnames are not in match order")
	ErrBadTable       = errors.New("route table is invalid")
	ErrUnknownCluster = errors.New("table refers to an unknown cluster")
	ErrNoCA           = errors.New("client validation has no CA certificate")
)

// Validate checks the invariants the data plane relies on; the errors are
// the Err* values above, wrapped with where they are, joined.
func (g *Gateway) Validate() error {
	clusters := map[string]bool{}
	for _, c := range g.Clusters {
		clusters[c.GetName()] = true
	}
	var errs []error
	for i := range g.Ports {
		p := &g.Ports[i]
		if i > 0 && g.Ports[i-1].Port >= p.Port {
			errs = append(errs, fmt.Errorf("port %d: %w", p.Port, ErrPortOrder))
		}
		if len(p.Listeners) == 0 {
			errs = append(errs, fmt.Errorf("port %d: %w", p.Port, ErrNoListener))
		}
		for _, l := range p.Listeners {
			if family(l.Protocol) != family(p.Listeners[0].Protocol) || family(l.Protocol) == familyTCP && len(p.Listeners) > 1 {
				errs = append(errs, fmt.Errorf("port %d: %w", p.Port, ErrMixedProtocols))
				break
			}
		}
		if !slices.IsSortedFunc(p.Listeners, func(a, b Listener) int { return compareHostnames(a.Hostname, b.Hostname) }) {
			errs = append(errs, fmt.Errorf("port %d: listeners: %w", p.Port, ErrMatchOrder))
		}
		for j := range p.Listeners {
			if err := p.Listeners[j].validate(clusters); err != nil {
				errs = append(errs, fmt.Errorf("port %d listener %s: %w", p.Port, p.Listeners[j].Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (l *Listener) validate(clusters map[string]bool) error {
	var errs []error
	if l.TLSMode == gwv1.TLSModeTerminate && len(l.Certificates) == 0 {
		errs = append(errs, ErrNoCertificate)
	}
	if l.ClientValidation != nil && len(l.ClientValidation.CACertificates) == 0 {
		errs = append(errs, ErrNoCA)
	}
	if !slices.IsSortedFunc(l.VirtualHosts, func(a, b VirtualHost) int { return compareHostnames(a.Hostname, b.Hostname) }) {
		errs = append(errs, fmt.Errorf("virtual hosts: %w", ErrMatchOrder))
	}
	for _, vh := range l.VirtualHosts {
		for _, t := range vh.Tables {
			if err := t.Validate(); err != nil {
				errs = append(errs, fmt.Errorf("host %q: %w: %w", vh.Hostname, ErrBadTable, err))
			}
			for _, c := range tableClusters(t) {
				if !clusters[c] {
					errs = append(errs, fmt.Errorf("host %q: %w %s", vh.Hostname, ErrUnknownCluster, c))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// tableClusters lists the clusters a table sends to (backends, mirrors).
func tableClusters(t *weftv1.RouteTable) []string {
	var out []string
	add := func(fs []*weftv1.Filter) {
		for _, f := range fs {
			if c := f.GetRequestMirror().GetCluster(); c != "" {
				out = append(out, c)
			}
		}
	}
	for _, r := range t.GetRules() {
		add(r.Filters)
		for _, b := range r.Backends {
			if b.Cluster != "" {
				out = append(out, b.Cluster)
			}
			add(b.Filters)
		}
	}
	return out
}
