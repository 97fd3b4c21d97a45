// Package tcpserver is Weft's stand-in for the package of the same path in
// sigs.k8s.io/gateway-api-conformance-images: the answers of echo-basic's TCP echo
// server (TCP_ECHO_SERVER), which the conformance suite's utils/tcp reads. Only the
// wire format lives here; weft-echo's basic mode is the server, and a test in
// test/conformance/echobasic checks it against the suite's own client.
package tcpserver

// WelcomeMessage is the first line the server writes on every connection.
const WelcomeMessage = "Gateway API Test TCP Server\n"

// Context is the answering pod, from the container's environment, and the ports the
// server listens on.
type Context struct {
	Namespace string `json:"namespace"`
	Ingress   string `json:"ingress"`
	Service   string `json:"service"`
	Pod       string `json:"pod"`
	TCPPort   string `json:"tcpport"`
	TLSPort   string `json:"tlsport,omitempty,omitzero"`
}

// TLSAssertions describe the TLS connection (Version as crypto/tls.VersionName gives it).
type TLSAssertions struct {
	Version            string `json:"version"`
	ServerName         string `json:"serverName"`
	NegotiatedProtocol string `json:"negotiatedProtocol,omitempty,omitzero"`
	Curves             string `json:"curves,omitempty,omitzero"`
	CipherSuite        string `json:"cipherSuite"`
}

// TCPAssertions is the one-line JSON answer to "TEST".
type TCPAssertions struct {
	Context      `json:",inline"`
	IsTLS        bool           `json:"isTLS"`
	TLSAssertion *TLSAssertions `json:"tls,omitempty,omitzero"`
}
