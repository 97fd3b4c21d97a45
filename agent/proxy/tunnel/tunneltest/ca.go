// Package tunneltest provides a throwaway SPIFFE CA and a static
// tunnel.Identities for tests of the proxy's mTLS paths. Import it only from
// _test files.
package tunneltest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/agent/proxy/tunnel"
)

// CA is a self-signed root that issues X.509 SVIDs.
type CA struct {
	TD   spiffeid.TrustDomain
	Cert *x509.Certificate
	key  crypto.Signer
}

// NewCA returns a fresh CA for trust domain td ("cluster.local").
func NewCA(td string) (*CA, error) {
	trust, err := spiffeid.TrustDomainFromString(td)
	if err != nil {
		return nil, fmt.Errorf("trust domain %q: %w", td, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test ca " + td},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{trust.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{TD: trust, Cert: cert, key: key}, nil
}

// Bundle returns the CA as a bundle set.
func (c *CA) Bundle() *x509bundle.Set {
	return x509bundle.NewSet(x509bundle.FromX509Authorities(c.TD, []*x509.Certificate{c.Cert}))
}

var serial = struct {
	sync.Mutex
	n int64
}{n: 1}

// Issue signs an SVID for id valid in [notBefore, notAfter].
func (c *CA) Issue(id spiffeid.ID, notBefore, notAfter time.Time) (*x509svid.SVID, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial.Lock()
	serial.n++
	sn := serial.n
	serial.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(sn),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.Cert, key.Public(), c.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{cert}, PrivateKey: key}, nil
}

// MustIssue issues an SVID valid from an hour ago for a day, or panics.
func (c *CA) MustIssue(id spiffeid.ID) *x509svid.SVID {
	s, err := c.Issue(id, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		panic(err)
	}
	return s
}

// Identities is a static tunnel.Identities: a set of SVIDs and one bundle set.
type Identities struct {
	mu      sync.RWMutex
	svids   map[spiffeid.ID]*x509svid.SVID
	bundles *x509bundle.Set
}

var _ tunnel.Identities = (*Identities)(nil)

// NewIdentities holds the given SVIDs and trusts bundles.
func NewIdentities(bundles *x509bundle.Set, svids ...*x509svid.SVID) *Identities {
	ids := &Identities{svids: make(map[spiffeid.ID]*x509svid.SVID), bundles: bundles}
	for _, s := range svids {
		ids.svids[s.ID] = s
	}
	return ids
}

// Put adds or replaces an SVID.
func (i *Identities) Put(s *x509svid.SVID) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.svids[s.ID] = s
}

// SVID implements tunnel.Identities.
func (i *Identities) SVID(id spiffeid.ID) (*x509svid.SVID, error) {
	i.mu.RLock()
	defer i.mu.RUnlock()
	s, ok := i.svids[id]
	if !ok {
		return nil, fmt.Errorf("%s: %w", id, tunnel.ErrNoSVID)
	}
	return s, nil
}

// Bundle implements tunnel.Identities.
func (i *Identities) Bundle() *x509bundle.Set { return i.bundles }
