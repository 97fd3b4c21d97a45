package main

import (
	"context"
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"net/netip"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/agent/proxy"
	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/tunnel"
	"github.com/weft-mesh/weft/api/promserve"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

type weftConfig struct {
	role, out, in, peer, backend, pki, proto, pprof string
	// metrics: serve the proxy's metrics here; empty: metrics off
	metrics string
	// loops: the outbound's HTTP/1.1 event loops (0: a goroutine per
	// connection)
	loops int
}

// benchVIP is the Service address every captured connection "was sent to".
var benchVIP = netip.MustParseAddrPort("10.96.0.10:80")

// anyLookup is the bench's OrigDstLookup: every connection is a capture of
// a call to benchVIP from the client workload (the bench measures the proxy,
// not the BPF redirect).
type anyLookup struct{}

func (anyLookup) Lookup(_, _ netip.AddrPort) (outbound.Original, bool) {
	return outbound.Original{Dst: benchVIP, NetnsCookie: 1}, true
}

type oneCaller struct{ w *weftv1.Workload }

func (c oneCaller) ByCookie(uint64) (*weftv1.Workload, bool) { return c.w, true }

// files is a tunnel.Identities over SVIDs loaded once from the PKI directory.
type files struct {
	svids  map[spiffeid.ID]*x509svid.SVID
	bundle *x509bundle.Set
}

func (f *files) SVID(id spiffeid.ID) (*x509svid.SVID, error) {
	s, ok := f.svids[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, tunnel.ErrNoSVID)
	}
	return s, nil
}

func (f *files) Bundle() *x509bundle.Set { return f.bundle }

func loadIdentities(dir string) (*files, error) {
	td := trustDomain
	b, err := x509bundle.Load(td, filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, err
	}
	f := &files{svids: map[spiffeid.ID]*x509svid.SVID{}, bundle: x509bundle.NewSet(b)}
	for _, n := range []string{"client", "server"} {
		s, err := x509svid.Load(filepath.Join(dir, n+".pem"), filepath.Join(dir, n+".key"))
		if err != nil {
			return nil, err
		}
		f.svids[s.ID] = s
	}
	return f, nil
}

// benchPolicy: the client workload on node "src", the server workload
// (the backend) on node "dst", one HTTP service with a one-rule route. For
// node "node" both workloads live on it: its outbound side tunnels to its
// own inbound side (peer is its own inbound address).
func benchPolicy(node, peer, backend, proto string) (*weftv1.NodePolicy, error) {
	be, err := netip.ParseAddrPort(backend)
	if err != nil {
		return nil, err
	}
	var p weftv1.Protocol
	switch proto {
	case "http":
		p = weftv1.Protocol_PROTOCOL_HTTP
	case "h2c":
		p = weftv1.Protocol_PROTOCOL_H2C
	case "grpc":
		p = weftv1.Protocol_PROTOCOL_GRPC
	default:
		return nil, fmt.Errorf("unknown protocol %q", proto)
	}
	client := &weftv1.Workload{Namespace: "bench", Name: "client-7d9f8c6b5-x2x9k", ServiceAccount: "client", Identity: clientID, Ips: []string{"127.0.0.2"},
		Workload: "client", WorkloadKind: "Deployment"}
	server := &weftv1.Workload{Namespace: "bench", Name: "server", ServiceAccount: "server", Identity: serverID, Ips: []string{be.Addr().String()}}
	dstNode := "dst"
	if node == "node" {
		dstNode = "node"
	}
	pol := &weftv1.NodePolicy{
		Node: node, TrustDomain: trustDomain.Name(),
		NodeTunnels: map[string]string{dstNode: peer},
		Clusters: []*weftv1.Cluster{{Name: "bench/server:80", Protocol: p, Endpoints: []*weftv1.Endpoint{{
			Ip: be.Addr().String(), Port: uint32(be.Port()), Node: dstNode, Pod: "bench/server", Identity: serverID, Ready: true, Serving: true,
		}}}},
		Services: []*weftv1.ServicePort{{
			Namespace: "bench", Name: "server", Vips: []string{benchVIP.Addr().String()}, Port: uint32(benchVIP.Port()), Protocol: p,
			DefaultCluster: "bench/server:80",
			Producer: &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
				Rules:   []*weftv1.Rule{{Route: "bench/r", RouteKind: weftv1.RouteKind_ROUTE_KIND_HTTP, Backends: []*weftv1.BackendRef{{Cluster: "bench/server:80", Weight: 1}}}},
				Matches: []*weftv1.Match{{Rule: 0, Http: &weftv1.HTTPMatch{Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/"}}}}},
		}},
	}
	switch node {
	case "src":
		pol.Workloads = []*weftv1.Workload{client}
	case "dst":
		pol.Workloads = []*weftv1.Workload{server}
	case "node":
		pol.Workloads = []*weftv1.Workload{client, server}
	default:
		return nil, fmt.Errorf("unknown role %q", node)
	}
	return pol, nil
}

func runWeft(ctx context.Context, c weftConfig) error {
	ids, err := loadIdentities(c.pki)
	if err != nil {
		return err
	}
	pol, err := benchPolicy(c.role, c.peer, c.backend, c.proto)
	if err != nil {
		return err
	}
	cfg := proxy.Config{
		Node: c.role, OutboundAddr: c.out, InboundAddr: c.in,
		TrustDomain: trustDomain,
		Lookup:      anyLookup{}, Callers: oneCaller{w: pol.GetWorkloads()[0]}, Identities: ids,
		OutboundLoops: c.loops,
	}
	if c.metrics != "" {
		reg := promserve.Registry()
		cfg.Metrics = reg
		mux := http.NewServeMux()
		mux.Handle("/metrics", promserve.Handler(reg))
		go http.ListenAndServe(c.metrics, mux)
	}
	p, err := proxy.New(cfg)
	if err != nil {
		return err
	}
	if err := p.Update(pol); err != nil {
		return err
	}
	if c.pprof != "" {
		go http.ListenAndServe(c.pprof, nil)
	}
	return p.Run(ctx)
}
