package ca

import (
	"context"
	"testing"
	"time"
)

func TestNextStep(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	a := AutoRotation{RenewBefore: 30 * 24 * time.Hour, PropagationDelay: 10 * time.Minute}
	ttl := 24 * time.Hour
	fresh := Rotation{Managed: true, Anchors: 1, ActivatedAt: now.Add(-100 * 24 * time.Hour), SignerNotAfter: now.Add(200 * 24 * time.Hour)}
	tests := []struct {
		name  string
		r     Rotation
		acked bool
		want  string
	}{
		{"fresh root", fresh, true, stepNone},
		{"user managed near expiry", Rotation{Anchors: 1, SignerNotAfter: now.Add(time.Hour)}, true, stepNone},
		{"near expiry", Rotation{Managed: true, Anchors: 1, SignerNotAfter: now.Add(29 * 24 * time.Hour)}, true, stepStage},
		{"staged just now", Rotation{Managed: true, Staged: true, Anchors: 2, StagedAt: now.Add(-time.Minute)}, true, stepNone},
		{"staged, delay passed", Rotation{Managed: true, Staged: true, Anchors: 2, StagedAt: now.Add(-11 * time.Minute)}, true, stepActivate},
		{"staged, delay passed, not acked", Rotation{Managed: true, Staged: true, Anchors: 2, StagedAt: now.Add(-11 * time.Minute)}, false, stepNone},
		{"activated, svids of old root live", Rotation{Managed: true, Anchors: 2, ActivatedAt: now.Add(-23 * time.Hour), SignerNotAfter: now.Add(300 * 24 * time.Hour)}, true, stepNone},
		{"activated one svid lifetime ago", Rotation{Managed: true, Anchors: 2, ActivatedAt: now.Add(-ttl), SignerNotAfter: now.Add(300 * 24 * time.Hour)}, true, stepRetire},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextStep(tt.r, a, ttl, now, tt.acked); got != tt.want {
				t.Fatalf("nextStep = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRotateIfDueFullCycle(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := AutoRotation{}
	steps := []struct {
		advance time.Duration
		want    string
	}{
		{0, stepNone},
		{300 * 24 * time.Hour, stepStage}, // within a quarter of the 365-day root lifetime
		{time.Minute, stepNone},
		{10 * time.Minute, stepActivate},
		{time.Hour, stepNone},
		{24 * time.Hour, stepRetire},
		{time.Hour, stepNone},
	}
	for i, s := range steps {
		f.now = f.now.Add(s.advance)
		got, err := f.ca.RotateIfDue(ctx, a)
		if err != nil || got != s.want {
			t.Fatalf("step %d: RotateIfDue = %q, %v; want %q", i, got, err, s.want)
		}
	}
	if r := f.ca.RotationStatus(); r.Anchors != 1 || r.Staged || !r.SignerNotAfter.After(f.now.Add(300*24*time.Hour)) {
		t.Fatalf("after a full cycle: %+v", r)
	}
}
