package controller

import (
	"testing"
	"time"
)

// TestDebounceWait: a change after a quiet spell (or the very first) is
// resolved at once; one within Debounce of the last round waits for the
// rest of it, so that it and every change after it are one round.
func TestDebounceWait(t *testing.T) {
	end := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	const d = 100 * time.Millisecond
	for _, tc := range []struct {
		name      string
		last, now time.Time
		want      time.Duration
	}{
		{"first round", time.Time{}, end, 0},
		{"quiet spell", end, end.Add(5 * time.Second), 0},
		{"exactly debounce later", end, end.Add(d), 0},
		{"just after a round", end, end, d},
		{"during the window", end, end.Add(30 * time.Millisecond), 70 * time.Millisecond},
	} {
		if got := debounceWait(d, tc.last, tc.now); got != tc.want {
			t.Errorf("%s: wait %v, want %v", tc.name, got, tc.want)
		}
	}
}
