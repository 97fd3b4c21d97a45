package route

import (
	"slices"
	"time"
)

// Default and cap of the retry backoff (GEP-1731 leaves both to the
// implementation; these are Envoy's: 25ms base, capped at 10x the base).
const (
	DefaultRetryBackoff = 25 * time.Millisecond
	retryBackoffCapMult = 10
)

// RetryPolicy is a compiled weftv1.Retry (GEP-1731).
type RetryPolicy struct {
	// Codes are the HTTP status codes that are retried. For gRPC the code
	// is the HTTP status of the response (GEP-1731 has no gRPC status
	// codes; a gRPC error with HTTP 200 is not retried).
	Codes []int
	// Attempts is the number of retries after the first try; 0 disables.
	Attempts int
	// Backoff is the base interval (DefaultRetryBackoff when unset).
	Backoff time.Duration
}

// ShouldRetry reports whether a response with status after attempt
// retries already made (0 after the first try) is retried, and the wait
// before the retry: Backoff * 2^attempt, capped at 10x Backoff. Callers
// may add jitter and must stop when the rule's RequestTimeout is reached.
func (p *RetryPolicy) ShouldRetry(status int, attempt int) (bool, time.Duration) {
	if p == nil || attempt < 0 || attempt >= p.Attempts || !slices.Contains(p.Codes, status) {
		return false, 0
	}
	return true, p.backoff(attempt)
}

// ShouldRetryConnect is ShouldRetry for a try that never reached the
// backend application (connect refused or timed out, TLS handshake failed,
// HTTP/2 REFUSED_STREAM, gRPC UNAVAILABLE before any response header): the
// GEP's "SHOULD retry" case, safe whatever the method. A failure after the
// request may have been processed (reset mid-response) is never retried.
func (p *RetryPolicy) ShouldRetryConnect(attempt int) (bool, time.Duration) {
	if p == nil || attempt < 0 || attempt >= p.Attempts {
		return false, 0
	}
	return true, p.backoff(attempt)
}

func (p *RetryPolicy) backoff(attempt int) time.Duration {
	base := p.Backoff
	if base <= 0 {
		base = DefaultRetryBackoff
	}
	limit := base * retryBackoffCapMult
	d := base
	for i := 0; i < attempt && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
