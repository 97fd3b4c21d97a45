package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weft-mesh/weft/api/logkey"
)

// record is one exported SVID: its certificate chain and private key, DER.
type record struct {
	Chain []byte `json:"chain"` // concatenated DER certificates, leaf first
	Key   []byte `json:"key"`   // PKCS#8
}

// Export returns the unexpired SVIDs held now, one record each, for the
// agent that replaces this one on the node (package agent/handoff passes
// them over a unix socket: the keys stay on the node). With them the
// successor serves at once, even while the controller is unreachable.
func (m *Manager) Export() ([][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.cfg.Clock.Now()
	var out [][]byte
	for _, e := range m.entries {
		if e.svid == nil || !now.Before(e.svid.Certificates[0].NotAfter) {
			continue
		}
		chain, key, err := e.svid.MarshalRaw()
		if err != nil {
			return nil, fmt.Errorf("export %s: %w", e.svid.ID, err)
		}
		b, err := json.Marshal(record{Chain: chain, Key: key})
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Import takes SVIDs exported by the agent this one replaces. A record is
// taken when it parses, its key matches its certificate, it has not
// expired, it verifies against the current trust bundle, its identity is
// wanted (the policy restored from disk names it) and it outlives the SVID
// held for that identity, if any. It is rotated like a fetched one, at
// 40-50% of its lifetime. Records that are not taken are reported in the
// error; the others are taken regardless. It returns how many were taken.
func (m *Manager) Import(recs [][]byte) (int, error) {
	bundle := m.Bundle()
	now := m.cfg.Clock.Now()
	var errs []error
	parsed := make([]*x509svid.SVID, 0, len(recs))
	for i, b := range recs {
		var r record
		if err := json.Unmarshal(b, &r); err != nil {
			errs = append(errs, fmt.Errorf("record %d: %w", i, err))
			continue
		}
		svid, err := x509svid.ParseRaw(r.Chain, r.Key)
		if err != nil {
			errs = append(errs, fmt.Errorf("record %d: %w", i, err))
			continue
		}
		if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(now)); err != nil {
			errs = append(errs, fmt.Errorf("record %d (%s): %w", i, svid.ID, err))
			continue
		}
		parsed = append(parsed, svid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, svid := range parsed {
		id, leaf := svid.ID, svid.Certificates[0]
		if !m.wanted[id] {
			errs = append(errs, fmt.Errorf("%s: not an identity of this node's policy", id))
			continue
		}
		e := m.entries[id]
		if e == nil {
			e = &entry{}
			m.entries[id] = e
		}
		if e.svid != nil && !leaf.NotAfter.After(e.svid.Certificates[0].NotAfter) {
			continue // ours is as fresh
		}
		e.svid = svid
		e.failures, e.lastErr, e.retryAt = 0, "", now
		e.rotateAt = rotationTime(leaf, leaf.NotBefore, mathrand.Float64())
		n++
		m.log.Info("svid taken over from the previous agent", logkey.ID, id.String(), logkey.Serial, leaf.SerialNumber.Text(16),
			logkey.Expires, leaf.NotAfter, logkey.RotateAt, e.rotateAt)
	}
	if n > 0 {
		m.wake()
	}
	return n, errors.Join(errs...)
}
