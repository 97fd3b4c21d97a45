package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// Rotation errors.
var (
	ErrUserManaged        = errors.New("ca root is user-provided: rotate it by editing the secret (add the new root to ca.crt, then switch tls.crt/tls.key, then drop the old root)")
	ErrRotationInProgress = errors.New("a staged root already exists: activate it first")
	ErrNoStagedRoot       = errors.New("no staged root to activate")
	ErrRetireTooEarly     = errors.New("svids of the previous root may still be valid")
	ErrNothingToRetire    = errors.New("no previous root to retire")
)

// Rotation is the state of a root rotation, as the Secret records it.
type Rotation struct {
	// Staged: a new root is in the bundle but not signing yet.
	Staged bool
	// ActivatedAt: when the current signer took over.
	ActivatedAt time.Time
	// RetireAfter: from then on the anchors the signer does not chain to
	// may be removed (every SVID they signed has expired).
	RetireAfter time.Time
	// Anchors is the number of roots in the bundle.
	Anchors int
	// Managed: weft created the root and may rotate it.
	Managed bool
	// StagedAt: when the staged root joined the bundle (zero when none).
	StagedAt time.Time
	// SignerNotAfter: expiry of the signing certificate.
	SignerNotAfter time.Time
}

// RotationStatus reports the loaded rotation state.
func (c *CA) RotationStatus() Rotation {
	l := c.state.Load()
	if l == nil {
		return Rotation{}
	}
	st := l.st
	r := Rotation{Staged: st.next != nil, ActivatedAt: st.activatedAt, Anchors: len(st.auth.Anchors), Managed: st.managed,
		StagedAt: st.stagedAt, SignerNotAfter: st.auth.Chain[0].NotAfter}
	if !st.activatedAt.IsZero() {
		r.RetireAfter = st.activatedAt.Add(c.cfg.SVIDTTL)
	}
	return r
}

// A root rotation has three steps, each written to the Secret by the
// leader and picked up by every replica through Watch:
//
//  1. StageRoot: a new root joins the trust bundle; the old root still signs.
//  2. ActivateRoot: the new root signs. Call it only once every agent has
//     acknowledged a policy carrying the new bundle, so every peer trusts
//     SVIDs of the new root before the first one is issued.
//  3. RetireRoots: the old root leaves the bundle, allowed once every SVID it
//     signed has expired (activation + SVID lifetime).
//
// At every point every valid SVID chains to a root in every agent's bundle,
// so no handshake fails.

// StageRoot generates a new root and adds it to the trust bundle.
func (c *CA) StageRoot(ctx context.Context) error {
	return c.update(ctx, func(st *rootState, now time.Time) error {
		if !st.managed {
			return ErrUserManaged
		}
		if st.next != nil {
			return ErrRotationInProgress
		}
		cert, key, err := GenerateRoot(c.td, now, c.cfg.RootTTL)
		if err != nil {
			return err
		}
		st.next, st.nextKey, st.stagedAt = cert, key, now
		st.auth.Anchors = append(st.auth.Anchors, cert)
		c.log.Info("ca rotation: new root staged in the bundle", "subject", cert.Subject.String())
		return nil
	})
}

// ActivateRoot makes the staged root the signer.
func (c *CA) ActivateRoot(ctx context.Context) error {
	return c.update(ctx, func(st *rootState, now time.Time) error {
		if st.next == nil {
			return ErrNoStagedRoot
		}
		st.auth.Chain = []*x509.Certificate{st.next}
		st.auth.Key = st.nextKey
		st.next, st.nextKey, st.stagedAt = nil, nil, time.Time{}
		st.activatedAt = now
		c.log.Info("ca rotation: staged root now signs", "subject", st.auth.Chain[0].Subject.String())
		return nil
	})
}

// RetireRoots removes from the bundle every root the signer does not chain
// to.
func (c *CA) RetireRoots(ctx context.Context) error {
	return c.update(ctx, func(st *rootState, now time.Time) error {
		if !st.managed {
			return ErrUserManaged
		}
		if st.next != nil {
			return ErrRotationInProgress
		}
		if after := st.activatedAt.Add(c.cfg.SVIDTTL); st.activatedAt.IsZero() || now.Before(after) {
			return fmt.Errorf("%w: wait until %s", ErrRetireTooEarly, after.UTC().Format(time.RFC3339))
		}
		keep := st.auth.Anchors[:0:0]
		for _, a := range st.auth.Anchors {
			if chainsTo(st.auth, a) {
				keep = append(keep, a)
			}
		}
		if len(keep) == len(st.auth.Anchors) {
			return ErrNothingToRetire
		}
		c.log.Info("ca rotation: previous roots removed from the bundle", "removed", len(st.auth.Anchors)-len(keep))
		st.auth.Anchors = keep
		return nil
	})
}

// chainsTo: the top of the signer's chain is anchor or is signed by it.
func chainsTo(a *Authority, anchor *x509.Certificate) bool {
	top := a.Chain[len(a.Chain)-1]
	return top.Equal(anchor) || top.CheckSignatureFrom(anchor) == nil
}

// update applies a change to the Secret as stored now (not the cached copy),
// with optimistic concurrency, then installs the result.
func (c *CA) update(ctx context.Context, change func(st *rootState, now time.Time) error) error {
	s, err := c.secrets().Get(ctx, c.cfg.SecretName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get ca secret %s/%s: %w", c.cfg.Namespace, c.cfg.SecretName, err)
	}
	now := c.cfg.Now()
	st, err := parseSecret(s, now)
	if err != nil {
		return err
	}
	if err := change(st, now); err != nil {
		return err
	}
	if err := st.auth.Check(now); err != nil {
		return fmt.Errorf("rotation would leave an unusable ca: %w", err)
	}
	data, ann, err := secretData(st)
	if err != nil {
		return err
	}
	s = s.DeepCopy()
	s.Data = data
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	delete(s.Annotations, mesh.AnnotationCAActivatedAt)
	delete(s.Annotations, mesh.AnnotationCAStagedAt)
	for k, v := range ann {
		s.Annotations[k] = v
	}
	updated, err := c.secrets().Update(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update ca secret %s/%s: %w", c.cfg.Namespace, c.cfg.SecretName, err)
	}
	return c.install(updated)
}
