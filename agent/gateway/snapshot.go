// Package gateway is the data plane of one Gateway (north-south): it opens a
// listener per GatewayPolicy port, picks the Gateway listener by Host or SNI,
// then the virtual host and the first route table with a matching rule, runs
// the mesh's route engine (agent/proxy/route) and forwards to the cluster's
// endpoints: directly to pods outside the mesh, through their node's mTLS
// tunnel (agent/proxy/tunnel) to enrolled ones, with TLS origination where a
// BackendTLSPolicy says so.
//
// The decisions (Compile, listener, virtual host and certificate choice,
// the ClientHello parser) are pure and tested by tables; the Gateway type
// is the thin I/O around them.
package gateway

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/route"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// ErrInvalidPolicy wraps every reason Compile refuses a GatewayPolicy.
var ErrInvalidPolicy = errors.New("invalid gateway policy")

// Snapshot is the compiled view of one GatewayPolicy. It is immutable once
// built; the Gateway swaps whole snapshots atomically.
type Snapshot struct {
	Gateway  string // namespace/name
	Identity spiffeid.ID
	// Ports by number.
	Ports map[uint32]*Port
	// Backends holds the clusters and node tunnels (compiled as the node
	// proxy compiles them).
	Backends *outbound.Snapshot
	// BackendTLS by cluster name.
	BackendTLS map[string]*BackendTLS
	// ClientCert is presented to backends that ask; nil: none.
	ClientCert *tls.Certificate
	// ClientCertKey names ClientCert in connection pools:
	// a connection is reused only with the certificate it presented.
	ClientCertKey string
	// Bundle verifies enrolled endpoints' SVIDs.
	Bundle []*x509.Certificate
}

// Family is what a port speaks.
type Family uint8

// Port families.
const (
	FamilyHTTP Family = iota + 1 // HTTP listeners (HTTP/1.1, h2c, gRPC)
	FamilyTLS                    // HTTPS and TLS listeners, chosen by SNI
	FamilyTCP                    // one TCP listener
)

// Port is one listening port.
type Port struct {
	Number    uint32
	Family    Family
	Listeners []*Listener
}

// Listener is one Gateway listener.
type Listener struct {
	Name     string
	Protocol weftv1.ListenerProtocol
	Hostname string
	Mode     weftv1.TLSMode
	Certs    []Cert
	// TLS is the server configuration of a terminating listener.
	TLS    *tls.Config
	VHosts []VHost
}

// Cert is one serving certificate and the names it covers.
type Cert struct {
	Cert      *tls.Certificate
	Hostnames []string
}

// VHost is one virtual host: its tables in order.
type VHost struct {
	Hostname string
	Tables   []*route.Table
}

// Compile validates p (weftv1.GatewayPolicy.Validate) and builds a Snapshot.
// Any error leaves nothing half-built: the caller keeps its previous one.
func Compile(p *weftv1.GatewayPolicy) (*Snapshot, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	s := &Snapshot{Gateway: p.GetNamespace() + "/" + p.GetName(), Ports: make(map[uint32]*Port, len(p.GetPorts()))}
	var err error
	if p.GetIdentity() != "" {
		if s.Identity, err = spiffeid.FromString(p.GetIdentity()); err != nil {
			return nil, fmt.Errorf("%w: identity: %v", ErrInvalidPolicy, err)
		}
	}
	// clusters and tunnels mean the same as in a node policy
	s.Backends, err = outbound.Compile(&weftv1.NodePolicy{Clusters: p.GetClusters(), NodeTunnels: p.GetNodeTunnels()})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPolicy, err)
	}
	for _, der := range p.GetTrustAnchors() {
		c, _ := x509.ParseCertificate(der) // Validate parsed it
		s.Bundle = append(s.Bundle, c)
	}
	if s.BackendTLS, err = compileBackendTLS(p.GetBackendTls()); err != nil {
		return nil, err
	}
	if c := p.GetClientCertificate(); c != nil {
		kp, err := tls.X509KeyPair(c.GetCertPem(), c.GetKeyPem())
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %v", ErrInvalidPolicy, err)
		}
		s.ClientCert = &kp
		sum := sha256.Sum256(c.GetCertPem())
		s.ClientCertKey = hex.EncodeToString(sum[:8])
	}
	for _, gp := range p.GetPorts() {
		port, err := compilePort(gp)
		if err != nil {
			return nil, err
		}
		s.Ports[port.Number] = port
	}
	return s, nil
}

func compilePort(gp *weftv1.GatewayPort) (*Port, error) {
	port := &Port{Number: gp.GetPort()}
	switch gp.GetListeners()[0].GetProtocol() {
	case weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTP:
		port.Family = FamilyHTTP
	case weftv1.ListenerProtocol_LISTENER_PROTOCOL_TCP:
		port.Family = FamilyTCP
	default:
		port.Family = FamilyTLS
	}
	for _, gl := range gp.GetListeners() {
		l, err := compileListener(gl)
		if err != nil {
			return nil, fmt.Errorf("%w: port %d listener %s: %w", ErrInvalidPolicy, port.Number, gl.GetName(), err)
		}
		port.Listeners = append(port.Listeners, l)
	}
	return port, nil
}

func compileListener(gl *weftv1.GatewayListener) (*Listener, error) {
	l := &Listener{Name: gl.GetName(), Protocol: gl.GetProtocol(), Hostname: gl.GetHostname(), Mode: gl.GetTlsMode()}
	for _, c := range gl.GetCertificates() {
		kp, err := tls.X509KeyPair(c.GetCertPem(), c.GetKeyPem())
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", c.GetSecret(), err)
		}
		l.Certs = append(l.Certs, Cert{Cert: &kp, Hostnames: c.GetHostnames()})
	}
	for _, vh := range gl.GetVirtualHosts() {
		v := VHost{Hostname: vh.GetHostname()}
		for i, t := range vh.GetTables() {
			ct, err := route.Compile(t)
			if err != nil {
				return nil, fmt.Errorf("virtual host %q table %d: %w", vh.GetHostname(), i, err)
			}
			v.Tables = append(v.Tables, ct)
		}
		l.VHosts = append(l.VHosts, v)
	}
	if l.Mode == weftv1.TLSMode_TLS_MODE_TERMINATE {
		cfg, err := serverTLS(l, gl.GetClientValidation())
		if err != nil {
			return nil, err
		}
		l.TLS = cfg
	}
	return l, nil
}
