package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/weft-mesh/weft/agent/proxy/forward"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
)

// Dial errors.
var (
	// ErrNoEndpoint: the cluster is unknown or has no ready endpoint.
	ErrNoEndpoint = forward.ErrNoEndpoint
	// ErrNoTunnel: an enrolled endpoint cannot be reached: no tunnel
	// address for its node, no tunnel dialer or no gateway identity yet.
	// An enrolled endpoint is never dialled in plaintext.
	ErrNoTunnel = errors.New("enrolled endpoint unreachable without the tunnel")
)

// pickEndpoint chooses a ready endpoint of cluster.
func (g *Gateway) pickEndpoint(snap *Snapshot, cluster string) (*outbound.Endpoint, *outbound.Cluster, error) {
	cl, ok := snap.Backends.Clusters[cluster]
	if !ok {
		return nil, nil, fmt.Errorf("%w: cluster %q", ErrNoEndpoint, cluster)
	}
	ep, ok := cl.Pick(g.cfg.Rand)
	if !ok {
		return nil, nil, fmt.Errorf("%w: cluster %q", ErrNoEndpoint, cluster)
	}
	return ep, cl, nil
}

// dialCluster connects to an endpoint of cluster (ep, or one picked now):
// directly when it is outside the mesh, else through its node's tunnel with
// the gateway's SVID. originate: wrap the connection in TLS when the
// cluster has a BackendTLSPolicy (alpn offered), or refuse when that policy
// is invalid.
func (g *Gateway) dialCluster(ctx context.Context, snap *Snapshot, cluster string, originate bool, alpn []string, ep *outbound.Endpoint) (net.Conn, error) {
	var bt *BackendTLS
	if originate {
		bt = snap.BackendTLS[cluster]
		if bt != nil && bt.Invalid != "" {
			return nil, fmt.Errorf("%w: %s: %s", ErrBackendTLSInvalid, bt.Policy, bt.Invalid)
		}
	}
	if ep == nil {
		var err error
		if ep, _, err = g.pickEndpoint(snap, cluster); err != nil {
			return nil, err
		}
	}
	raw, err := g.dialEndpoint(ctx, snap, ep)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", forward.ErrConnect, err)
	}
	if bt == nil {
		return raw, nil
	}
	cfg := bt.Config.Clone()
	cfg.NextProtos = alpn
	if snap.ClientCert != nil {
		cfg.Certificates = []tls.Certificate{*snap.ClientCert}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("%w: backend TLS (%s) to %s: %w", forward.ErrConnect, bt.Policy, ep.Addr, err)
	}
	return tc, nil
}

func (g *Gateway) dialEndpoint(ctx context.Context, snap *Snapshot, ep *outbound.Endpoint) (net.Conn, error) {
	if ep.Plaintext {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ep.Addr.String())
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", ep.Addr, err)
		}
		return c, nil
	}
	node, ok := snap.Backends.Tunnels[ep.Node]
	if !ok || g.cfg.Tunnel == nil || snap.Identity.IsZero() {
		return nil, fmt.Errorf("%w: %s on node %q", ErrNoTunnel, ep.Addr, ep.Node)
	}
	c, err := g.cfg.Tunnel.Dial(ctx, tunnel.Target{Node: node, Addr: ep.Addr, Source: snap.Identity, Dest: ep.Identity})
	if err != nil {
		return nil, err
	}
	return c, nil
}
