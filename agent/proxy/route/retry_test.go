package route

import (
	"testing"
	"time"
)

func TestShouldRetry(t *testing.T) {
	p := &RetryPolicy{Codes: []int{500, 503}, Attempts: 3, Backoff: 100 * time.Millisecond}
	cases := []struct {
		status, attempt int
		retry           bool
		wait            time.Duration
	}{
		{503, 0, true, 100 * time.Millisecond},
		{500, 1, true, 200 * time.Millisecond},
		{503, 2, true, 400 * time.Millisecond},
		{503, 3, false, 0}, // three retries made: stop
		{502, 0, false, 0}, // not listed
		{200, 0, false, 0},
		{503, -1, false, 0},
	}
	for _, c := range cases {
		retry, wait := p.ShouldRetry(c.status, c.attempt)
		if retry != c.retry || wait != c.wait {
			t.Errorf("status %d attempt %d: %v %v, want %v %v", c.status, c.attempt, retry, wait, c.retry, c.wait)
		}
	}
}

func TestShouldRetryBackoffCapAndDefault(t *testing.T) {
	p := &RetryPolicy{Codes: []int{503}, Attempts: 100}
	_, w0 := p.ShouldRetry(503, 0)
	_, w50 := p.ShouldRetry(503, 50)
	if w0 != DefaultRetryBackoff || w50 != 10*DefaultRetryBackoff {
		t.Fatalf("waits %v %v, want %v and the 10x cap", w0, w50, DefaultRetryBackoff)
	}
}

func TestShouldRetryDisabled(t *testing.T) {
	var nilPolicy *RetryPolicy
	if ok, _ := nilPolicy.ShouldRetry(503, 0); ok {
		t.Error("nil policy retried")
	}
	// An explicit zero disables retries (GEP-1731).
	zero := &RetryPolicy{Codes: []int{503}, Attempts: 0}
	if ok, _ := zero.ShouldRetry(503, 0); ok {
		t.Error("attempts 0 retried")
	}
	if ok, _ := zero.ShouldRetryConnect(0); ok {
		t.Error("attempts 0 retried a connect failure")
	}
}

func TestShouldRetryConnect(t *testing.T) {
	// Connect failures are retried even when no code is listed.
	p := &RetryPolicy{Attempts: 1, Backoff: time.Second}
	if ok, w := p.ShouldRetryConnect(0); !ok || w != time.Second {
		t.Errorf("first: %v %v", ok, w)
	}
	if ok, _ := p.ShouldRetryConnect(1); ok {
		t.Error("retried past attempts")
	}
}
