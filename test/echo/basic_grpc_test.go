package echo

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weft-mesh/weft/test/echo/basicpb"
)

func TestBasicGRPC(t *testing.T) {
	pki := newTestPKI(t)
	addrs := startBasic(t, BasicConfig{Mode: BasicGRPC, Identity: basicID, CertFile: pki.certFile, KeyFile: pki.keyFile})
	for _, tc := range []struct {
		name      string
		addr      string
		creds     credentials.TransportCredentials
		authority string
	}{
		{"plaintext", addrs["grpc"], insecure.NewCredentials(), "grpc.example.com"},
		{"tls", addrs["grpc-tls"], credentials.NewTLS(pki.clientTLS("abc.example.com")), "abc.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := grpc.NewClient("passthrough:///"+tc.addr, grpc.WithTransportCredentials(tc.creds), grpc.WithAuthority(tc.authority))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := basicpb.NewGrpcEchoClient(conn)
			ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-test", "one", "x-test", "two"), 5*time.Second)
			defer cancel()

			for method, call := range map[string]func(context.Context, *basicpb.EchoRequest, ...grpc.CallOption) (*basicpb.EchoResponse, error){
				"/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo":    client.Echo,
				"/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/EchoTwo": client.EchoTwo,
			} {
				resp, err := call(ctx, &basicpb.EchoRequest{})
				if err != nil {
					t.Fatalf("%s: %v", method, err)
				}
				a := resp.GetAssertions()
				if a.GetFullyQualifiedMethod() != method || a.GetAuthority() != tc.authority {
					t.Errorf("%s: assertions %v", method, a)
				}
				if c := a.GetContext(); c.GetPod() != basicID.Pod || c.GetNamespace() != basicID.Namespace || c.GetServiceName() != basicID.Service || c.GetIngress() != basicID.Ingress {
					t.Errorf("%s: context %v", method, c)
				}
				var xTest []string
				authority := false
				for _, h := range a.GetHeaders() {
					switch h.GetKey() {
					case "x-test":
						xTest = append(xTest, h.GetValue())
					case ":authority":
						authority = h.GetValue() == tc.authority
					}
				}
				if slices.Sort(xTest); !slices.Equal(xTest, []string{"one", "two"}) || !authority {
					t.Errorf("%s: headers %v", method, a.GetHeaders())
				}
				ta := a.GetTlsAssertions()
				if tc.name == "plaintext" && ta != nil {
					t.Errorf("%s: TLS assertions on the plaintext port: %v", method, ta)
				}
				if tc.name == "tls" && (ta.GetServerName() != "abc.example.com" || ta.GetNegotiatedProtocol() != "h2" || ta.GetVersion() != "TLSv1.3" || ta.GetCipherSuite() == "") {
					t.Errorf("%s: TLS assertions %v", method, ta)
				}
			}
			if _, err := client.EchoThree(ctx, &basicpb.EchoRequest{}); status.Code(err) != codes.Unimplemented {
				t.Errorf("EchoThree: %v, want Unimplemented", err)
			}
		})
	}
}

func TestBasicGRPCPlaintextOnlyWithoutKey(t *testing.T) {
	addrs := startBasic(t, BasicConfig{Mode: BasicGRPC, Identity: basicID})
	if _, ok := addrs["grpc-tls"]; ok || addrs["grpc"] == "" {
		t.Errorf("servers %v, want only grpc", addrs)
	}
}
