// A stand-in for sigs.k8s.io/gateway-api-conformance-images, which the module proxy
// here refuses. The conformance suite's utils/grpc imports its echo-basic/grpcechoserver
// package for the types of the Gateway gRPC tests; the mesh tests never call it.
module sigs.k8s.io/gateway-api-conformance-images

go 1.27.0

require google.golang.org/grpc v1.85.0
