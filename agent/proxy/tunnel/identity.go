// Package tunnel carries connections between node proxies inside mutual TLS 1.3:
// one HTTP/2 CONNECT stream (the shape Istio calls HBONE) per proxied
// connection, multiplexed over pooled TLS connections per
// (source identity, destination node, destination identity).
//
// The source proxy presents the source workload's SVID and accepts only the
// SVID of the identity the controller listed for the chosen endpoint. The SNI
// of the handshake (ServerName) tells the destination proxy which of its local
// workload identities to present.
package tunnel

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Identities is what the proxy needs from the node's identity manager
// (package agent/proxy/identity implements it).
//
//   - SVID returns the current X.509 SVID of a workload identity that runs on
//     this node (private key included). It is called on every TLS handshake,
//     so rotation takes effect for new connections without any notification.
//     It returns an error wrapping ErrNoSVID when the identity has no SVID on
//     this node (not a local workload, or not issued yet).
//   - Bundle returns the trust bundles peers are verified against (the
//     controller's trust anchors for the trust domain). It is called on every
//     handshake too.
//
// Both must be safe for concurrent use and must not block on the network:
// return what is cached.
type Identities interface {
	SVID(id spiffeid.ID) (*x509svid.SVID, error)
	Bundle() *x509bundle.Set
}

// ErrNoSVID: the identity has no SVID on this node.
var ErrNoSVID = errors.New("no svid for identity")

// HeaderDestinationIdentity carries, on each CONNECT request, the SPIFFE ID the
// source expects the destination workload to have. The inbound side refuses
// the stream when it differs from the identity of the target pod.
const HeaderDestinationIdentity = "Weft-Destination-Identity"

// serverNameSuffix ends every tunnel ServerName.
const serverNameSuffix = ".weft.internal"

// ServerName is the TLS SNI a source sends to ask the destination proxy for
// the SVID of workload identity id: a hash of the ID (SPIFFE IDs are not valid
// host names), 32 hex digits + ".weft.internal".
func ServerName(id spiffeid.ID) string {
	sum := sha256.Sum256([]byte(id.String()))
	return hex.EncodeToString(sum[:16]) + serverNameSuffix
}

// svidSource adapts Identities to go-spiffe's x509svid.Source for one identity.
type svidSource struct {
	ids Identities
	id  spiffeid.ID
}

func (s svidSource) GetX509SVID() (*x509svid.SVID, error) {
	svid, err := s.ids.SVID(s.id)
	if err != nil {
		return nil, fmt.Errorf("svid of %s: %w", s.id, err)
	}
	return svid, nil
}

// bundleSource adapts Identities to go-spiffe's x509bundle.Source.
type bundleSource struct{ ids Identities }

func (b bundleSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	set := b.ids.Bundle()
	if set == nil {
		return nil, fmt.Errorf("no trust bundle for %s", td)
	}
	return set.GetX509BundleForTrustDomain(td)
}

// SVIDSource returns an x509svid.Source that asks ids for id's SVID on each call.
func SVIDSource(ids Identities, id spiffeid.ID) x509svid.Source { return svidSource{ids: ids, id: id} }

// BundleSource returns an x509bundle.Source reading ids.Bundle on each call.
func BundleSource(ids Identities) x509bundle.Source { return bundleSource{ids: ids} }
