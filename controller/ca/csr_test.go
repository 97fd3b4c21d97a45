package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/api/mesh"
)

var testTD = spiffeid.RequireTrustDomainFromString("cluster.local")

func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func p256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func makeCSR(t testing.TB, key crypto.Signer, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func sanExt(t testing.TB, names ...asn1.RawValue) pkix.Extension {
	t.Helper()
	v, err := asn1.Marshal(names)
	if err != nil {
		t.Fatal(err)
	}
	return pkix.Extension{Id: oidSAN, Value: v}
}

func uriName(s string) asn1.RawValue {
	return asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(s)}
}

func TestValidateCSR(t *testing.T) {
	good := "spiffe://cluster.local/ns/shop/sa/cart"
	ecKey := p256(t)
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	goodDER := makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}})
	goodPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: goodDER})
	tampered := append([]byte(nil), goodDER...)
	tampered[len(tampered)-5] ^= 0xff
	caTrue, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	otherName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true,
		Bytes: mustMarshal(t, asn1.ObjectIdentifier{1, 2, 3})}
	dirName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 4, IsCompound: true, Bytes: mustMarshal(t, pkix.Name{CommonName: "x"}.ToRDNSequence())}

	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"ecdsa p256 der", goodDER, nil},
		{"ecdsa p256 pem", goodPEM, nil},
		{"rsa 2048", makeCSR(t, rsa2048, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}}), nil},
		{"ed25519", makeCSR(t, edKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}}), nil},
		{"subject is ignored", makeCSR(t, ecKey, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "root"}, URIs: []*url.URL{mustURL(t, good)}}), nil},
		{"empty", nil, ErrCSRMalformed},
		{"garbage", []byte("hello world"), ErrCSRMalformed},
		{"truncated", goodDER[:len(goodDER)/2], ErrCSRMalformed},
		{"pem wrong type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: goodDER}), ErrCSRMalformed},
		{"pem two blocks", append(append([]byte(nil), goodPEM...), goodPEM...), ErrCSRMalformed},
		{"pem broken", []byte("-----BEGIN CERTIFICATE REQUEST-----\n!!!\n"), ErrCSRMalformed},
		{"oversize", make([]byte, MaxCSRSize+1), ErrCSRTooLarge},
		{"bad signature", tampered, ErrCSRSignature},
		{"rsa 1024", makeCSR(t, rsa1024, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}}), ErrCSRKey},
		{"p224", makeCSR(t, p224, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}}), ErrCSRKey},
		{"no san", makeCSR(t, ecKey, &x509.CertificateRequest{}), ErrCSRSAN},
		{"extra dns", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}, DNSNames: []string{"cart.shop"}}), ErrCSRSAN},
		{"extra ip", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}}), ErrCSRSAN},
		{"extra email", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}, EmailAddresses: []string{"a@b.c"}}), ErrCSRSAN},
		{"two uris", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good), mustURL(t, "spiffe://cluster.local/ns/shop/sa/admin")}}), ErrCSRSAN},
		{"extra otherName", makeCSR(t, ecKey, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{sanExt(t, uriName(good), otherName)}}), ErrCSRSAN},
		{"extra directoryName", makeCSR(t, ecKey, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{sanExt(t, uriName(good), dirName)}}), ErrCSRSAN},
		{"two san extensions", makeCSR(t, ecKey, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{sanExt(t, uriName(good)), sanExt(t, uriName(good))}}), ErrCSRMalformed},
		{"https uri", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "https://cluster.local/ns/shop/sa/cart")}}), ErrCSRSAN},
		{"uri with query", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good+"?x=1")}}), ErrCSRSAN},
		{"other trust domain", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://evil.example/ns/shop/sa/cart")}}), ErrCSRTrustDomain},
		{"trust domain id", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local")}}), ErrCSRTrustDomain},
		{"bad path", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/shop/sa/cart/extra")}}), ErrCSRTrustDomain},
		{"bad namespace", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/Shop_1/sa/cart")}}), ErrCSRTrustDomain},
		{"ca true", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}, ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: caTrue}}}), ErrCSRCA},
		{"bad basic constraints", makeCSR(t, ecKey, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, good)}, ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Value: []byte{0x01}}}}), ErrCSRMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, id, err := ValidateCSR(tt.in, testTD)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("ValidateCSR: %v", err)
				}
				if id.String() != good || csr == nil {
					t.Fatalf("id = %s, want %s", id, good)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if csr != nil || !id.IsZero() {
				t.Fatalf("refused csr returned values: %v %v", csr, id)
			}
			if !strings.HasPrefix(err.Error(), tt.want.Error()+": ") {
				t.Fatalf("error %q does not explain itself", err)
			}
		})
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzValidateCSR(f *testing.F) {
	key := p256(f)
	good := makeCSR(f, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(f, "spiffe://cluster.local/ns/a/sa/b")}})
	f.Add(good)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good}))
	f.Add(makeCSR(f, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(f, "spiffe://cluster.local/ns/a/sa/b")}, DNSNames: []string{"x"}}))
	f.Add(makeCSR(f, key, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{sanExt(f, uriName("spiffe://cluster.local/ns/a/sa/b"), asn1.RawValue{Class: 2, Tag: 8, Bytes: []byte{1}})}}))
	f.Add([]byte{})
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, id, err := ValidateCSR(data, testTD)
		if err != nil {
			if csr != nil || !id.IsZero() {
				t.Fatalf("refused csr returned values")
			}
			return
		}
		// Accepted: every invariant the signer relies on holds.
		if len(csr.URIs) != 1 || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) != 0 {
			t.Fatalf("accepted csr with SANs %v %v %v %v", csr.URIs, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
		}
		if _, _, err := mesh.ParseWorkloadID(testTD, id); err != nil {
			t.Fatalf("accepted id %s: %v", id, err)
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted csr with bad signature: %v", err)
		}
	})
}
