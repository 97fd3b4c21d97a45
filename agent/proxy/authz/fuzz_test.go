package authz

import (
	"context"
	"net/http"
	"testing"

	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// FuzzCompileNodeAuthz feeds arbitrary node policies (protobuf bytes) to
// Compile: it never panics, accepts only what NodePolicy.Validate accepts
// (so that what the agent ACKs is what it can enforce), and a compiled
// table decides any request without panicking.
func FuzzCompileNodeAuthz(f *testing.F) {
	for _, p := range []*weftv1.NodePolicy{shop(), {}, {Authz: []*weftv1.AuthzPolicy{{}}}} {
		b, err := proto.Marshal(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "POST", "/admin/x", uint16(8080))
	}
	f.Fuzz(func(t *testing.T, b []byte, method, path string, port uint16) {
		var pol weftv1.NodePolicy
		if proto.Unmarshal(b, &pol) != nil {
			return
		}
		tab, err := Compile(&pol, td)
		if err != nil {
			return
		}
		if err := pol.Validate(); err != nil && len(pol.GetAuthz()) > 0 {
			// Validate covers route tables too: only its authz part must agree
			if err := pol.ValidateAuthz(); err != nil {
				t.Fatalf("Compile accepted what ValidateAuthz refuses: %v", err)
			}
		}
		for _, w := range pol.GetWorkloads() {
			wl := tab.For(w.GetNamespace() + "/" + w.GetName())
			for _, peer := range []string{"spiffe://cluster.local/ns/shop/sa/frontend", "spiffe://x.example/y"} {
				id := mustID(peer)
				wl.Connection(id, uint32(port))
				wl.Request(context.Background(), id, uint32(port), &Request{Method: method, Path: path, Header: http.Header{}})
			}
		}
	})
}
