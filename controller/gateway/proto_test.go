package gateway

import (
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// TestPolicyOfEveryCaseIsValid translates the IR of every accepted Gateway
// of every case: what the controller pushes must pass the data plane's
// validation.
func TestPolicyOfEveryCaseIsValid(t *testing.T) {
	cases, _ := filepath.Glob("testdata/*.in.yaml")
	n := 0
	for _, path := range cases {
		in, err := loadCase(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		for _, g := range Resolve(in).IR {
			p := g.Policy(PolicyParams{
				TrustDomain: "cluster.local",
				NodeTunnels: map[string]string{"n1": "10.0.0.1:15008"},
				Identity:    "spiffe://cluster.local/ns/" + g.Namespace + "/sa/" + g.Name + "-weft-gateway",
			})
			if err := p.Validate(); err != nil {
				t.Errorf("%s: gateway %s/%s: %v", filepath.Base(path), g.Namespace, g.Name, err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no accepted Gateway in any case")
	}
}

func TestPolicy(t *testing.T) {
	table := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP}
	cert := &Certificate{SecretNamespace: "ns", SecretName: "s", CertPEM: []byte("c"), KeyPEM: []byte("k"), Hostnames: []string{"a.example"}}
	g := &Gateway{
		Namespace: "ns", Name: "gw",
		Ports: []Port{{Port: 443, Listeners: []Listener{{
			Name: "https", Protocol: gwv1.HTTPSProtocolType, Hostname: "a.example", TLSMode: gwv1.TLSModeTerminate,
			Certificates:     []*Certificate{cert},
			ClientValidation: &ClientValidation{Mode: gwv1.AllowInsecureFallback, CACertificates: []*CACertificate{{Kind: "ConfigMap", Namespace: "ns", Name: "ca", PEM: []byte("p")}}},
			VirtualHosts:     []VirtualHost{{Hostname: "a.example", Tables: []*weftv1.RouteTable{table}}},
		}}}},
		Clusters: []*weftv1.Cluster{{Name: "ns/svc:443"}},
		BackendTLS: map[string]*BackendTLS{"ns/svc:443": {
			Policy: "ns/btls", Hostname: "svc.example", System: true,
			SubjectAltNames: []SubjectAltName{{Type: gwv1.URISubjectAltNameType, Value: "spiffe://x/y"}, {Type: gwv1.HostnameSubjectAltNameType, Value: "b.example"}},
		}},
		ClientCertificate: cert,
	}
	got := g.Policy(PolicyParams{TrustDomain: "td", TrustAnchors: [][]byte{{1}}, NodeTunnels: map[string]string{"n": "1.2.3.4:15008"}, Identity: "spiffe://td/ns/ns/sa/gw-weft-gateway"})
	wantCert := &weftv1.Certificate{Secret: "ns/s", CertPem: []byte("c"), KeyPem: []byte("k"), Hostnames: []string{"a.example"}}
	want := &weftv1.GatewayPolicy{
		Namespace: "ns", Name: "gw", TrustDomain: "td", TrustAnchors: [][]byte{{1}}, Identity: "spiffe://td/ns/ns/sa/gw-weft-gateway",
		Ports: []*weftv1.GatewayPort{{Port: 443, Listeners: []*weftv1.GatewayListener{{
			Name: "https", Protocol: weftv1.ListenerProtocol_LISTENER_PROTOCOL_HTTPS, Hostname: "a.example", TlsMode: weftv1.TLSMode_TLS_MODE_TERMINATE,
			Certificates: []*weftv1.Certificate{wantCert},
			ClientValidation: &weftv1.ClientValidation{
				Mode:           weftv1.FrontendValidationMode_FRONTEND_VALIDATION_MODE_ALLOW_INSECURE_FALLBACK,
				CaCertificates: []*weftv1.CACertificate{{Ref: "ConfigMap ns/ca", Pem: []byte("p")}},
			},
			VirtualHosts: []*weftv1.VirtualHost{{Hostname: "a.example", Tables: []*weftv1.RouteTable{table}}},
		}}}},
		Clusters: []*weftv1.Cluster{{Name: "ns/svc:443"}},
		BackendTls: map[string]*weftv1.BackendTLS{"ns/svc:443": {
			Policy: "ns/btls", Hostname: "svc.example", System: true,
			SubjectAltNames: []*weftv1.SubjectAltName{{Value: "spiffe://x/y", Uri: true}, {Value: "b.example"}},
		}},
		ClientCertificate: wantCert,
		NodeTunnels:       map[string]string{"n": "1.2.3.4:15008"},
	}
	if !proto.Equal(got, want) {
		t.Errorf("Policy:\n got %v\nwant %v", got, want)
	}
}

func TestPolicyProtocols(t *testing.T) {
	for _, tc := range []struct {
		p    gwv1.ProtocolType
		m    gwv1.TLSModeType
		want string
	}{
		{gwv1.HTTPProtocolType, "", "LISTENER_PROTOCOL_HTTP TLS_MODE_UNSPECIFIED"},
		{gwv1.TLSProtocolType, gwv1.TLSModePassthrough, "LISTENER_PROTOCOL_TLS TLS_MODE_PASSTHROUGH"},
		{gwv1.TCPProtocolType, "", "LISTENER_PROTOCOL_TCP TLS_MODE_UNSPECIFIED"},
		{gwv1.UDPProtocolType, "", "LISTENER_PROTOCOL_UNSPECIFIED TLS_MODE_UNSPECIFIED"},
	} {
		l := listenerProto(&Listener{Protocol: tc.p, TLSMode: tc.m})
		if got := l.Protocol.String() + " " + l.TlsMode.String(); got != tc.want {
			t.Errorf("%s/%s: got %s, want %s", tc.p, tc.m, got, tc.want)
		}
	}
}
