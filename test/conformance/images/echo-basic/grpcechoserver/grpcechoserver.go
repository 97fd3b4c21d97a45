// Package grpcechoserver is Weft's stand-in for the package of the same path in
// sigs.k8s.io/gateway-api-conformance-images: just the names the conformance suite's
// utils/grpc compiles against. The Gateway gRPC tests that would call it are not run
// by the mesh suite, so every call fails with Unimplemented.
package grpcechoserver

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EchoRequest is a request to the echo service.
type EchoRequest struct{}

// EchoResponse is its answer.
type EchoResponse struct {
	Assertions *Assertions
}

// GetAssertions returns the assertions, nil-safe like generated getters.
func (r *EchoResponse) GetAssertions() *Assertions {
	if r == nil {
		return nil
	}
	return r.Assertions
}

// Assertions are the facts the echo server reports about a call.
type Assertions struct {
	FullyQualifiedMethod string
	Context              *Context
}

// GetFullyQualifiedMethod returns the called method ("" for nil).
func (a *Assertions) GetFullyQualifiedMethod() string {
	if a == nil {
		return ""
	}
	return a.FullyQualifiedMethod
}

// GetContext returns where the call was answered.
func (a *Assertions) GetContext() *Context {
	if a == nil {
		return nil
	}
	return a.Context
}

// Context is the pod that answered.
type Context struct {
	Namespace string
	Pod       string
}

// GetNamespace returns the answering pod's namespace ("" for nil).
func (c *Context) GetNamespace() string {
	if c == nil {
		return ""
	}
	return c.Namespace
}

// GetPod returns the answering pod's name ("" for nil).
func (c *Context) GetPod() string {
	if c == nil {
		return ""
	}
	return c.Pod
}

// GrpcEchoClient is the client of the echo service.
type GrpcEchoClient interface {
	Echo(ctx context.Context, in *EchoRequest, opts ...grpc.CallOption) (*EchoResponse, error)
	EchoTwo(ctx context.Context, in *EchoRequest, opts ...grpc.CallOption) (*EchoResponse, error)
	EchoThree(ctx context.Context, in *EchoRequest, opts ...grpc.CallOption) (*EchoResponse, error)
}

// NewGrpcEchoClient returns a client whose calls all fail with Unimplemented.
func NewGrpcEchoClient(grpc.ClientConnInterface) GrpcEchoClient { return unimplemented{} }

type unimplemented struct{}

var errUnimplemented = status.Error(codes.Unimplemented, "grpcechoserver stand-in: the Gateway gRPC echo is not part of Weft's mesh conformance run")

func (unimplemented) Echo(context.Context, *EchoRequest, ...grpc.CallOption) (*EchoResponse, error) {
	return nil, errUnimplemented
}

func (unimplemented) EchoTwo(context.Context, *EchoRequest, ...grpc.CallOption) (*EchoResponse, error) {
	return nil, errUnimplemented
}

func (unimplemented) EchoThree(context.Context, *EchoRequest, ...grpc.CallOption) (*EchoResponse, error) {
	return nil, errUnimplemented
}
