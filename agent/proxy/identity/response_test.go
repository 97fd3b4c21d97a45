package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/ca"
)

func certWith(notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{NotBefore: notBefore, NotAfter: notAfter}
}

func TestCheckResponse(t *testing.T) {
	now := time.Now()
	root, rootKey, err := ca.GenerateRoot(td, now, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := ca.GenerateRoot(td, now, 365*24*time.Hour)
	auth := &ca.Authority{Chain: []*x509.Certificate{root}, Key: rootKey, Anchors: []*x509.Certificate{root}}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sign := func(id spiffeid.ID, pub any) [][]byte {
		chain, _, err := auth.SignSVID(id, pub, now, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return chain
	}
	tests := []struct {
		name string
		resp *weftv1.SignResponse
		ok   bool
	}{
		{"good", &weftv1.SignResponse{CertChain: sign(idCart, key.Public()), TrustAnchors: [][]byte{root.Raw}}, true},
		{"empty", &weftv1.SignResponse{}, false},
		{"other id", &weftv1.SignResponse{CertChain: sign(idPay, key.Public()), TrustAnchors: [][]byte{root.Raw}}, false},
		{"other key", &weftv1.SignResponse{CertChain: sign(idCart, otherKey.Public()), TrustAnchors: [][]byte{root.Raw}}, false},
		{"foreign anchors", &weftv1.SignResponse{CertChain: sign(idCart, key.Public()), TrustAnchors: [][]byte{other.Raw}}, false},
		{"no anchors", &weftv1.SignResponse{CertChain: sign(idCart, key.Public())}, false},
		{"ca cert as svid", &weftv1.SignResponse{CertChain: [][]byte{root.Raw}, TrustAnchors: [][]byte{root.Raw}}, false},
		{"garbage", &weftv1.SignResponse{CertChain: [][]byte{[]byte("junk")}, TrustAnchors: [][]byte{root.Raw}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svid, err := checkResponse(idCart, key, tt.resp, now)
			if tt.ok != (err == nil) {
				t.Fatalf("checkResponse = %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && svid.ID != idCart {
				t.Fatalf("svid id %s", svid.ID)
			}
		})
	}
}
