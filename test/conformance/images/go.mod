// A stand-in for sigs.k8s.io/gateway-api-conformance-images, which the module proxy
// here refuses. The conformance suite imports three of its echo-basic packages:
// grpcechoserver (generated from test/echo/basicpb/grpcecho.proto, the proto weft-echo's
// basic mode serves), tcpserver and udpechoserver (the JSON the TCP and UDP echo
// servers answer with). Versions are those of Weft's go.mod.
module sigs.k8s.io/gateway-api-conformance-images

go 1.27.0

require (
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)
