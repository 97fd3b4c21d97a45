package echo

import (
	"context"
	"errors"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/test/echo/echopb"
)

type grpcEcho struct {
	echopb.UnimplementedEchoServer
	id Identity
}

func (e *grpcEcho) Echo(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return e.unary(ctx, req)
}

func (e *grpcEcho) Ping(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	return e.unary(ctx, req)
}

func (e *grpcEcho) unary(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoReply, error) {
	method, _ := grpc.Method(ctx)
	rep := e.reply(ctx, method, req)
	if req.GetCode() != 0 {
		return nil, status.Errorf(codes.Code(req.GetCode()), "asked to fail with code %d by pod %s", req.GetCode(), e.id.Pod)
	}
	return rep, nil
}

func (e *grpcEcho) Stream(stream grpc.BidiStreamingServer[echopb.EchoRequest, echopb.EchoReply]) error {
	ctx := stream.Context()
	method, _ := grpc.Method(ctx)
	for seq := uint64(1); ; seq++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if req.GetCode() != 0 {
			return status.Errorf(codes.Code(req.GetCode()), "asked to fail with code %d by pod %s", req.GetCode(), e.id.Pod)
		}
		rep := e.reply(ctx, method, req)
		rep.Seq = seq
		if err := stream.Send(rep); err != nil {
			return err
		}
	}
}

func (e *grpcEcho) reply(ctx context.Context, method string, req *echopb.EchoRequest) *echopb.EchoReply {
	md, _ := metadata.FromIncomingContext(ctx)
	headers := make(map[string]*echopb.Header, len(md))
	host := ""
	for k, v := range md {
		if k == ":authority" {
			host = strings.Join(v, ",")
			continue
		}
		headers[k] = &echopb.Header{Values: v}
	}
	remote := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	return &echopb.EchoReply{
		Pod:       e.id.Pod,
		Namespace: e.id.Namespace,
		Method:    method,
		Path:      method,
		Host:      host,
		Proto:     "HTTP/2.0",
		Headers:   headers,
		Message:   req.GetMessage(),
		Remote:    remote,
	}
}
