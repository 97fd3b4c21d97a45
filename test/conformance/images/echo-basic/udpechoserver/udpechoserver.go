// Package udpechoserver is Weft's stand-in for the package of the same path in
// sigs.k8s.io/gateway-api-conformance-images: the answer of echo-basic's UDP echo
// server (UDP_ECHO_SERVER), which the conformance suite's UDPRoute tests read. Only the
// wire format lives here; weft-echo's basic mode is the server.
package udpechoserver

// Context is the answering pod, from the container's environment.
type Context struct {
	Namespace string `json:"namespace"`
	Ingress   string `json:"ingress"`
	Service   string `json:"service"`
	Pod       string `json:"pod"`
}

// EchoResponse is the JSON datagram sent back for every datagram received: Request is
// the received payload, verbatim.
type EchoResponse struct {
	Request string `json:"request"`
	Context `json:",inline"`
}
