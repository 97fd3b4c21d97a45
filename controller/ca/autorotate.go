package ca

import (
	"context"
	"errors"
	"time"

	"github.com/weft-mesh/weft/api/logkey"
)

// AutoRotation drives root rotation on a schedule (leader only).
type AutoRotation struct {
	// RenewBefore: stage a new root once the signer expires within this
	// (default: a quarter of the root lifetime, at least 2 SVID lifetimes
	// plus PropagationDelay).
	RenewBefore time.Duration
	// PropagationDelay: the least time between staging a root and signing
	// with it (default 10m).
	PropagationDelay time.Duration
	// BundleAcked, when set, must also report that every agent has
	// acknowledged a policy carrying the current bundle before the staged
	// root signs (the policy push server knows this).
	BundleAcked func() bool
	// Interval between checks (default 1m).
	Interval time.Duration
}

// Rotation steps nextStep can choose.
const (
	stepNone     = ""
	stepStage    = "stage"
	stepActivate = "activate"
	stepRetire   = "retire"
)

// nextStep decides the rotation step due at now. Pure.
func nextStep(r Rotation, a AutoRotation, svidTTL time.Duration, now time.Time, acked bool) string {
	switch {
	case !r.Managed:
		return stepNone
	case r.Staged:
		if !now.Before(r.StagedAt.Add(a.PropagationDelay)) && acked {
			return stepActivate
		}
	case r.Anchors > 1:
		if !r.ActivatedAt.IsZero() && !now.Before(r.ActivatedAt.Add(svidTTL)) {
			return stepRetire
		}
	case !now.Before(r.SignerNotAfter.Add(-a.RenewBefore)):
		return stepStage
	}
	return stepNone
}

func (c *CA) autoDefaults(a AutoRotation) AutoRotation {
	if a.PropagationDelay <= 0 {
		a.PropagationDelay = 10 * time.Minute
	}
	if a.RenewBefore <= 0 {
		a.RenewBefore = max(c.cfg.RootTTL/4, 2*c.cfg.SVIDTTL+a.PropagationDelay)
	}
	if a.Interval <= 0 {
		a.Interval = time.Minute
	}
	return a
}

// RotateIfDue performs the rotation step that is due, if any, and returns
// its name ("stage", "activate", "retire", or "" for none).
func (c *CA) RotateIfDue(ctx context.Context, a AutoRotation) (string, error) {
	a = c.autoDefaults(a)
	if !c.Ready() {
		return stepNone, nil
	}
	acked := a.BundleAcked == nil || a.BundleAcked()
	step := nextStep(c.RotationStatus(), a, c.cfg.SVIDTTL, c.cfg.Now(), acked)
	var err error
	switch step {
	case stepStage:
		err = c.StageRoot(ctx)
	case stepActivate:
		err = c.ActivateRoot(ctx)
	case stepRetire:
		err = c.RetireRoots(ctx)
	}
	return step, err
}

// RunAutoRotation calls RotateIfDue every a.Interval until ctx ends. Only
// the leader should run it.
func (c *CA) RunAutoRotation(ctx context.Context, a AutoRotation) error {
	a = c.autoDefaults(a)
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	for {
		step, err := c.RotateIfDue(ctx, a)
		switch {
		case err != nil && !errors.Is(err, ErrRetireTooEarly):
			c.log.Error("ca rotation step failed", "step", step, logkey.Error, err)
		case step != stepNone:
			c.log.Info("ca rotation step done", "step", step)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
