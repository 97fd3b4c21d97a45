package ca

import (
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func BenchmarkValidateCSR(b *testing.B) {
	csr := makeCSR(b, p256(b), &x509.CertificateRequest{URIs: []*url.URL{mustURL(b, "spiffe://cluster.local/ns/shop/sa/cart")}})
	for b.Loop() {
		if _, _, err := ValidateCSR(csr, testTD); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignSVID(b *testing.B) {
	now := time.Now()
	root, key, err := GenerateRoot(testTD, now, 365*24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	a := &Authority{Chain: []*x509.Certificate{root}, Key: key, Anchors: []*x509.Certificate{root}}
	pub := p256(b).Public()
	id := spiffeid.RequireFromString("spiffe://cluster.local/ns/shop/sa/cart")
	for b.Loop() {
		if _, _, err := a.SignSVID(id, pub, now, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign is the whole Sign path minus the apiserver (authenticator
// and pod lookups are in-memory).
func BenchmarkSign(b *testing.B) {
	f := newFixture(b)
	csr := makeCSR(b, p256(b), &x509.CertificateRequest{URIs: []*url.URL{mustURL(b, "spiffe://cluster.local/ns/shop/sa/cart")}})
	ctx := agentCtx("token-1")
	for b.Loop() {
		if _, err := f.ca.Sign(ctx, &weftv1.SignRequest{Csr: csr}); err != nil {
			b.Fatal(err)
		}
	}
}
