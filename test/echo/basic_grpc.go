package echo

// echo-basic's gRPC server (GRPC_ECHO_SERVER): the GrpcEcho service of basicpb, whose
// wire names are those the suite's conformance/utils/grpc calls.

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/test/echo/basicpb"
)

// NewBasicGRPCServer returns a gRPC server with the GrpcEcho service and server
// reflection, not yet listening; with tlsCfg it serves TLS and reports the connection
// in every answer. Echo and EchoTwo answer with the call's assertions; EchoThree is
// unimplemented.
func NewBasicGRPCServer(id Identity, tlsCfg *tls.Config) *grpc.Server {
	var opts []grpc.ServerOption
	if tlsCfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s := grpc.NewServer(opts...)
	basicpb.RegisterGrpcEchoServer(s, &grpcEchoBasic{
		pod: &basicpb.Context{Namespace: id.Namespace, Ingress: id.Ingress, ServiceName: id.Service, Pod: id.Pod},
		tls: tlsCfg != nil,
	})
	reflection.Register(s)
	return s
}

type grpcEchoBasic struct {
	basicpb.UnimplementedGrpcEchoServer
	pod *basicpb.Context
	tls bool
}

func (g *grpcEchoBasic) Echo(ctx context.Context, _ *basicpb.EchoRequest) (*basicpb.EchoResponse, error) {
	return g.answer(ctx, basicpb.GrpcEcho_Echo_FullMethodName)
}

func (g *grpcEchoBasic) EchoTwo(ctx context.Context, _ *basicpb.EchoRequest) (*basicpb.EchoResponse, error) {
	return g.answer(ctx, basicpb.GrpcEcho_EchoTwo_FullMethodName)
}

func (g *grpcEchoBasic) answer(ctx context.Context, method string) (*basicpb.EchoResponse, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "no metadata in the incoming call")
	}
	a := &basicpb.Assertions{FullyQualifiedMethod: method, Context: g.pod}
	for k, vs := range md {
		for _, v := range vs {
			if k == ":authority" {
				a.Authority = v
			}
			a.Headers = append(a.Headers, &basicpb.Header{Key: k, Value: v})
		}
	}
	if g.tls {
		p, ok := peer.FromContext(ctx)
		if !ok {
			return nil, status.Error(codes.Internal, "no peer in the incoming call")
		}
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok {
			return nil, status.Error(codes.Internal, "no TLS information on the TLS port")
		}
		cs := basicTLS(&info.State)
		a.TlsAssertions = &basicpb.TLSAssertions{
			Version:            cs.Version,
			NegotiatedProtocol: cs.NegotiatedProtocol,
			ServerName:         cs.ServerName,
			CipherSuite:        cs.CipherSuite,
			PeerCertificates:   cs.PeerCertificates,
		}
	}
	return &basicpb.EchoResponse{Assertions: a}, nil
}

// basicGRPCServers listens on the plaintext port (HTTP_PORT) and, with a key pair, the
// TLS port (HTTPS_PORT).
func basicGRPCServers(cfg BasicConfig) ([]server, error) {
	var servers []server
	add := func(name, port string, tlsCfg *tls.Config) error {
		l, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, port))
		if err != nil {
			stopAll(servers)
			return fmt.Errorf("listen %s: %w", name, err)
		}
		gs := NewBasicGRPCServer(cfg.Identity, tlsCfg)
		servers = append(servers, server{name: name, addr: l.Addr().String(), serve: func() error { return gs.Serve(l) }, stop: gs.Stop})
		return nil
	}
	var tlsCfg *tls.Config
	if cfg.TLS() {
		var err error
		if tlsCfg, err = serverTLS(cfg.CertFile, cfg.KeyFile, ""); err != nil {
			return nil, err
		}
	}
	if err := add("grpc", cfg.HTTPPort, nil); err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		if err := add("grpc-tls", cfg.HTTPSPort, tlsCfg); err != nil {
			return nil, err
		}
	}
	return servers, nil
}
