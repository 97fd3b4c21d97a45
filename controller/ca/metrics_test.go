package ca

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/metrics"
)

// TestSignOutcomesReachTheMetrics: every Identity/Sign call tells OnSign
// its outcome: SVIDs issued, and refusals by their gRPC code.
func TestSignOutcomesReachTheMetrics(t *testing.T) {
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg, nil)
	f.ca.cfg.OnSign = m.Signed
	srv := identityServer{ca: f.ca}
	key := p256(t)
	csr := func(id string) []byte {
		return makeCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, id)}})
	}
	for _, req := range []struct {
		token string
		csr   []byte
	}{
		{"token-1", csr("spiffe://cluster.local/ns/shop/sa/cart")}, // issued
		{"token-1", csr("spiffe://cluster.local/ns/shop/sa/cart")}, // issued
		{"token-1", csr("spiffe://cluster.local/ns/shop/sa/pay")},  // not on node-1
		{"nope", csr("spiffe://cluster.local/ns/shop/sa/cart")},    // bad token
		{"token-1", []byte("not a csr")},
	} {
		srv.Sign(agentCtx(req.token), &weftv1.SignRequest{Csr: req.csr})
	}
	want := `
# HELP weft_controller_svids_issued_total Workload SVIDs the CA signed.
# TYPE weft_controller_svids_issued_total counter
weft_controller_svids_issued_total 2
# HELP weft_controller_svids_refused_total SVID requests the CA refused, by reason (the gRPC status code: unauthenticated, permission_denied, invalid_argument, unavailable...).
# TYPE weft_controller_svids_refused_total counter
weft_controller_svids_refused_total{reason="invalid_argument"} 1
weft_controller_svids_refused_total{reason="permission_denied"} 1
weft_controller_svids_refused_total{reason="unauthenticated"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "weft_controller_svids_issued_total", "weft_controller_svids_refused_total"); err != nil {
		t.Error(err)
	}
}
