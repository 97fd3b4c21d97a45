package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/api/mesh"
)

// MaxCSRSize bounds a CSR (PEM or DER) in bytes. A CSR for an RSA-4096 key
// with one URI SAN is about 1.7 KiB in PEM.
const MaxCSRSize = 8 << 10

// Errors of ValidateCSR; every refusal wraps exactly one of them.
var (
	ErrCSRTooLarge    = errors.New("csr too large")
	ErrCSRMalformed   = errors.New("malformed csr")
	ErrCSRSignature   = errors.New("csr signature invalid")
	ErrCSRKey         = errors.New("csr key type not allowed")
	ErrCSRSAN         = errors.New("csr subject alternative names not allowed")
	ErrCSRCA          = errors.New("csr requests a CA certificate")
	ErrCSRTrustDomain = errors.New("csr SPIFFE ID not in trust domain")
)

var (
	oidSAN              = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
)

// ValidateCSR parses a PEM or DER PKCS#10 request and checks it strictly:
// bounded size, valid self-signature, an allowed key (ECDSA P-256/P-384,
// RSA 2048-4096, Ed25519), exactly one subject alternative name which is a
// URI holding a workload SPIFFE ID of td, and no CA request. It returns the
// request and the ID. Pure; never panics on any input.
func ValidateCSR(data []byte, td spiffeid.TrustDomain) (*x509.CertificateRequest, spiffeid.ID, error) {
	var none spiffeid.ID
	if len(data) > MaxCSRSize {
		return nil, none, fmt.Errorf("%w: %d bytes, limit %d", ErrCSRTooLarge, len(data), MaxCSRSize)
	}
	der, err := csrDER(data)
	if err != nil {
		return nil, none, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, none, fmt.Errorf("%w: %v", ErrCSRMalformed, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, none, fmt.Errorf("%w: %v", ErrCSRSignature, err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, none, err
	}
	if err := checkExtensions(csr); err != nil {
		return nil, none, err
	}
	if len(csr.DNSNames) > 0 || len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 || len(csr.URIs) != 1 {
		return nil, none, fmt.Errorf("%w: want exactly one URI SAN, got %d URI, %d DNS, %d IP, %d email",
			ErrCSRSAN, len(csr.URIs), len(csr.DNSNames), len(csr.IPAddresses), len(csr.EmailAddresses))
	}
	id, err := spiffeIDFromURI(csr.URIs[0])
	if err != nil {
		return nil, none, err
	}
	if _, _, err := mesh.ParseWorkloadID(td, id); err != nil {
		return nil, none, fmt.Errorf("%w: %v", ErrCSRTrustDomain, err)
	}
	return csr, id, nil
}

func spiffeIDFromURI(u *url.URL) (spiffeid.ID, error) {
	// Round-trip through the string form: FromString rejects everything
	// the SPIFFE ID spec forbids (query, fragment, userinfo, port, ...).
	id, err := spiffeid.FromString(u.String())
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: URI SAN %q is not a SPIFFE ID: %v", ErrCSRSAN, u.String(), err)
	}
	return id, nil
}

// csrDER returns the DER bytes of a PEM (one CERTIFICATE REQUEST block and
// nothing else) or DER request.
func csrDER(data []byte) ([]byte, error) {
	trimmed := bytes.TrimSpace(data)
	if !bytes.HasPrefix(trimmed, []byte("-----BEGIN")) {
		if len(trimmed) == 0 {
			return nil, fmt.Errorf("%w: empty", ErrCSRMalformed)
		}
		return data, nil
	}
	block, rest := pem.Decode(trimmed)
	if block == nil {
		return nil, fmt.Errorf("%w: bad PEM", ErrCSRMalformed)
	}
	if block.Type != "CERTIFICATE REQUEST" && block.Type != "NEW CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: PEM block %q, want CERTIFICATE REQUEST", ErrCSRMalformed, block.Type)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return nil, fmt.Errorf("%w: data after the PEM block", ErrCSRMalformed)
	}
	return block.Bytes, nil
}

func checkKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("%w: ECDSA curve %s (want P-256 or P-384)", ErrCSRKey, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 4096 {
			return fmt.Errorf("%w: RSA %d bits (want 2048-4096)", ErrCSRKey, n)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: %T", ErrCSRKey, pub)
	}
	return nil
}

// checkExtensions refuses a CA request and any subject alternative name
// that is not a URI (Go's parser silently skips otherName, directoryName and
// registeredID entries, so the SAN extension is walked here).
func checkExtensions(csr *x509.CertificateRequest) error {
	sans := 0
	for _, ext := range csr.Extensions {
		switch {
		case ext.Id.Equal(oidBasicConstraints):
			var bc struct {
				IsCA       bool `asn1:"optional"`
				MaxPathLen int  `asn1:"optional,default:-1"`
			}
			rest, err := asn1.Unmarshal(ext.Value, &bc)
			if err != nil || len(rest) > 0 {
				return fmt.Errorf("%w: bad basicConstraints extension", ErrCSRMalformed)
			}
			if bc.IsCA {
				return fmt.Errorf("%w: basicConstraints CA:true", ErrCSRCA)
			}
		case ext.Id.Equal(oidSAN):
			sans++
			if sans > 1 {
				return fmt.Errorf("%w: more than one subjectAltName extension", ErrCSRSAN)
			}
			if err := onlyURISANs(ext.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

func onlyURISANs(der []byte) error {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return fmt.Errorf("%w: bad subjectAltName extension", ErrCSRMalformed)
	}
	entries := seq.Bytes
	for len(entries) > 0 {
		var gn asn1.RawValue
		entries, err = asn1.Unmarshal(entries, &gn)
		if err != nil {
			return fmt.Errorf("%w: bad subjectAltName entry", ErrCSRMalformed)
		}
		// GeneralName uniformResourceIdentifier is [6] IMPLICIT IA5String.
		if gn.Class != asn1.ClassContextSpecific || gn.Tag != 6 || gn.IsCompound {
			return fmt.Errorf("%w: %s entry (only one URI SAN is allowed)", ErrCSRSAN, generalNameKind(gn))
		}
	}
	return nil
}

func generalNameKind(gn asn1.RawValue) string {
	if gn.Class != asn1.ClassContextSpecific {
		return fmt.Sprintf("non-GeneralName (class %d tag %d)", gn.Class, gn.Tag)
	}
	names := []string{"otherName", "email", "DNS", "x400Address", "directoryName", "ediPartyName", "URI", "IP", "registeredID"}
	if gn.Tag >= 0 && gn.Tag < len(names) {
		return names[gn.Tag]
	}
	return fmt.Sprintf("unknown (tag %d)", gn.Tag)
}
