package outbound

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/proxy/route"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Snapshot is the outbound side's compiled view of one NodePolicy. It is
// immutable once built; the proxy swaps whole snapshots atomically.
type Snapshot struct {
	// Services by VIP:port (IPv4 VIPs unmapped).
	Services map[netip.AddrPort]*Service
	Clusters map[string]*Cluster
	// Tunnels: node name -> that node's inbound proxy address.
	Tunnels map[string]string
}

// Service is one meshed Service port with its compiled route tables.
type Service struct {
	// Name is "namespace/name:port".
	Name string
	// Namespace and Service name the Service (metrics labels).
	Namespace, Service string
	Port               uint32
	Protocol           weftv1.Protocol
	Producer           *route.Table
	Consumers          map[string]*route.Table
	// DefaultCluster is used when no table applies.
	DefaultCluster string
}

// Cluster is a set of endpoints.
type Cluster struct {
	Name      string
	Protocol  weftv1.Protocol
	Endpoints []Endpoint
	// Pickable holds the indexes of the endpoints new requests may go to:
	// the ready ones, or, when none is ready, the serving (terminating) ones.
	Pickable []int
	// Raw is the controller's endpoint list (what session persistence
	// resolves over), parallel to Endpoints.
	Raw   []*weftv1.Endpoint
	index map[*weftv1.Endpoint]int
}

// Endpoint is one backend pod address.
type Endpoint struct {
	Addr        netip.AddrPort
	Node        string
	Pod         string
	Identity    spiffeid.ID
	Ready       bool
	Serving     bool
	Terminating bool
	// Plaintext: the pod is not in the mesh; it is dialled directly.
	Plaintext bool
}

// ErrInvalidPolicy wraps every reason Compile rejects a policy.
var ErrInvalidPolicy = errors.New("invalid node policy")

// Compile builds a Snapshot. Any error leaves nothing half-built: the caller
// keeps its previous snapshot.
func Compile(p *weftv1.NodePolicy) (*Snapshot, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil policy", ErrInvalidPolicy)
	}
	s := &Snapshot{
		Services: make(map[netip.AddrPort]*Service, len(p.GetServices())),
		Clusters: make(map[string]*Cluster, len(p.GetClusters())),
		Tunnels:  make(map[string]string, len(p.GetNodeTunnels())),
	}
	for node, addr := range p.GetNodeTunnels() {
		if _, err := netip.ParseAddrPort(addr); err != nil {
			return nil, fmt.Errorf("%w: tunnel address of node %q: %v", ErrInvalidPolicy, node, err)
		}
		s.Tunnels[node] = addr
	}
	for _, c := range p.GetClusters() {
		cl, err := compileCluster(c)
		if err != nil {
			return nil, err
		}
		if _, dup := s.Clusters[cl.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate cluster %q", ErrInvalidPolicy, cl.Name)
		}
		s.Clusters[cl.Name] = cl
	}
	for _, sp := range p.GetServices() {
		svc, err := compileService(sp)
		if err != nil {
			return nil, err
		}
		if sp.GetPort() == 0 || sp.GetPort() > 65535 {
			return nil, fmt.Errorf("%w: service %s: port %d", ErrInvalidPolicy, svc.Name, sp.GetPort())
		}
		for _, v := range sp.GetVips() {
			ip, err := netip.ParseAddr(v)
			if err != nil {
				return nil, fmt.Errorf("%w: service %s: vip %q: %v", ErrInvalidPolicy, svc.Name, v, err)
			}
			ap := netip.AddrPortFrom(ip.Unmap(), uint16(sp.GetPort()))
			if _, dup := s.Services[ap]; dup {
				return nil, fmt.Errorf("%w: two services claim %s", ErrInvalidPolicy, ap)
			}
			s.Services[ap] = svc
		}
	}
	return s, nil
}

func compileService(sp *weftv1.ServicePort) (*Service, error) {
	svc := &Service{
		Name:           fmt.Sprintf("%s/%s:%d", sp.GetNamespace(), sp.GetName(), sp.GetPort()),
		Namespace:      sp.GetNamespace(),
		Service:        sp.GetName(),
		Port:           sp.GetPort(),
		Protocol:       sp.GetProtocol(),
		DefaultCluster: sp.GetDefaultCluster(),
	}
	var err error
	if sp.GetProducer() != nil {
		if svc.Producer, err = route.Compile(sp.GetProducer()); err != nil {
			return nil, fmt.Errorf("%w: service %s producer table: %w", ErrInvalidPolicy, svc.Name, err)
		}
	}
	if len(sp.GetConsumers()) > 0 {
		svc.Consumers = make(map[string]*route.Table, len(sp.GetConsumers()))
		for ns, t := range sp.GetConsumers() {
			ct, err := route.Compile(t)
			if err != nil {
				return nil, fmt.Errorf("%w: service %s consumer table of %q: %w", ErrInvalidPolicy, svc.Name, ns, err)
			}
			svc.Consumers[ns] = ct
		}
	}
	return svc, nil
}

func compileCluster(c *weftv1.Cluster) (*Cluster, error) {
	cl := &Cluster{Name: c.GetName(), Protocol: c.GetProtocol(), Raw: c.GetEndpoints(), index: make(map[*weftv1.Endpoint]int, len(c.GetEndpoints()))}
	for _, e := range c.GetEndpoints() {
		ip, err := netip.ParseAddr(e.GetIp())
		if err != nil || e.GetPort() == 0 || e.GetPort() > 65535 {
			return nil, fmt.Errorf("%w: cluster %s: endpoint %q:%d", ErrInvalidPolicy, cl.Name, e.GetIp(), e.GetPort())
		}
		id, err := spiffeid.FromString(e.GetIdentity())
		if err != nil {
			return nil, fmt.Errorf("%w: cluster %s: endpoint %s identity: %v", ErrInvalidPolicy, cl.Name, e.GetIp(), err)
		}
		ep := Endpoint{
			Addr: netip.AddrPortFrom(ip.Unmap(), uint16(e.GetPort())), Node: e.GetNode(), Pod: e.GetPod(),
			Identity: id, Ready: e.GetReady(), Serving: e.GetServing(), Terminating: e.GetTerminating(),
			Plaintext: e.GetPlaintext(),
		}
		cl.index[e] = len(cl.Endpoints)
		cl.Endpoints = append(cl.Endpoints, ep)
	}
	for i, e := range cl.Endpoints {
		if e.Ready {
			cl.Pickable = append(cl.Pickable, i)
		}
	}
	if len(cl.Pickable) == 0 {
		for i, e := range cl.Endpoints {
			if e.Serving {
				cl.Pickable = append(cl.Pickable, i)
			}
		}
	}
	return cl, nil
}

// Table returns the route table for a caller in namespace ns: its consumer
// table if one exists, else the producer table; nil when neither does.
func (s *Service) Table(ns string) *route.Table {
	if t, ok := s.Consumers[ns]; ok {
		return t
	}
	return s.Producer
}

// L7 reports whether connections of a caller with this table are handled
// as HTTP (HTTP/1.1, h2c, gRPC) rather than forwarded as bytes.
func (s *Service) L7(t *route.Table) bool {
	if t != nil {
		switch t.Kind() {
		case weftv1.RouteKind_ROUTE_KIND_HTTP, weftv1.RouteKind_ROUTE_KIND_GRPC:
			return true
		case weftv1.RouteKind_ROUTE_KIND_TCP:
			return false
		}
	}
	switch s.Protocol {
	case weftv1.Protocol_PROTOCOL_HTTP, weftv1.Protocol_PROTOCOL_H2C, weftv1.Protocol_PROTOCOL_GRPC:
		return true
	}
	return false
}

// Of returns the compiled endpoint of a Raw one.
func (c *Cluster) Of(e *weftv1.Endpoint) (*Endpoint, bool) {
	i, ok := c.index[e]
	if !ok {
		return nil, false
	}
	return &c.Endpoints[i], true
}

// PickRaw is Pick over the Raw list (the session package's pick callback).
func (c *Cluster) PickRaw(rnd func(n int) int) *weftv1.Endpoint {
	switch len(c.Pickable) {
	case 0:
		return nil
	case 1:
		return c.Raw[c.Pickable[0]]
	}
	return c.Raw[c.Pickable[rnd(len(c.Pickable))]]
}

// Pick chooses an endpoint among the pickable ones; rnd(n) in [0, n).
func (c *Cluster) Pick(rnd func(n int) int) (*Endpoint, bool) {
	switch len(c.Pickable) {
	case 0:
		return nil, false
	case 1:
		return &c.Endpoints[c.Pickable[0]], true
	}
	return &c.Endpoints[c.Pickable[rnd(len(c.Pickable))]], true
}
