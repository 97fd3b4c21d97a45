package limits

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/weft-mesh/weft/api/logkey"
)

// Reason says why the proxy refused a connection or answered a request
// itself.
type Reason int

// Reasons. Handshake reasons are for :15008; the others for answers the
// proxy produced (the status is logged with them).
const (
	// NotTLS: the peer's first bytes are not a TLS handshake.
	NotTLS Reason = iota
	// NoClientCert: the peer presented no certificate.
	NoClientCert
	// UntrustedCert: the certificate does not chain to the trust bundle.
	UntrustedCert
	// BadSPIFFEID: the certificate has no valid SPIFFE ID, or one outside
	// the trust domain.
	BadSPIFFEID
	// UnknownServerName: the SNI names no local workload.
	UnknownServerName
	// HandshakeFailed: any other handshake failure (version, ALPN...).
	HandshakeFailed
	// BadRequest: a malformed request (400, 417, 505).
	BadRequest
	// Forbidden: a tunnel stream the identity checks refused (403).
	Forbidden
	// HeaderTooLarge: a request header over the limit (431).
	HeaderTooLarge
	// URITooLong: a request target too long for the route's regular
	// expressions to be matched within the limits (414).
	URITooLong
	// NoRoute: no rule of the routes on the Service port matches (404).
	NoRoute
	// BufferBudget: the node's or the pod's buffer budget is spent (503).
	BufferBudget
	// PodConns: a connection over its pod's connection limit (closed).
	PodConns
	// RetryUnbuffered: a body too large for the buffer budget is sent
	// once, without retries or mirrors (counted, not logged).
	RetryUnbuffered
	// Unauthorized: authorization policy refused a connection (403 to the
	// tunnel stream, closed) or a request (403, gRPC PERMISSION_DENIED).
	Unauthorized

	numReasons
)

var reasonNames = [numReasons]string{
	NotTLS: "not_tls", NoClientCert: "no_client_certificate", UntrustedCert: "untrusted_certificate",
	BadSPIFFEID: "bad_spiffe_id", UnknownServerName: "unknown_server_name", HandshakeFailed: "handshake_failed",
	BadRequest: "bad_request", Forbidden: "forbidden", HeaderTooLarge: "header_too_large",
	URITooLong: "uri_too_long", NoRoute: "no_route", BufferBudget: "buffer_budget", PodConns: "pod_connections", RetryUnbuffered: "retry_unbuffered",
	Unauthorized: "unauthorized",
}

// String is the reason's name as logged and exported.
func (r Reason) String() string {
	if r < 0 || r >= numReasons {
		return "unknown"
	}
	return reasonNames[r]
}

// Reasons lists every reason (for exporters).
func Reasons() []Reason {
	rs := make([]Reason, numReasons)
	for i := range rs {
		rs[i] = Reason(i)
	}
	return rs
}

// Refusals counts refusals per reason and logs them at Warn, at most
// Burst lines at once and Rate lines a second per reason; the next line
// let through says how many were suppressed. The zero value counts and
// does not log; a nil *Refusals does nothing.
type Refusals struct {
	log   *slog.Logger
	every rate.Limit
	burst int

	counts     [numReasons]atomic.Uint64
	suppressed [numReasons]atomic.Uint64
	once       sync.Once
	limiters   [numReasons]*rate.Limiter
}

// RefusalsConfig configures NewRefusals.
type RefusalsConfig struct {
	// Logger gets the lines; none when nil.
	Logger *slog.Logger
	// Rate is the steady lines per second per reason; 1 when zero.
	Rate rate.Limit
	// Burst is how many lines per reason may come at once; 10 when zero.
	Burst int
}

// NewRefusals returns Refusals logging to cfg.Logger.
func NewRefusals(cfg RefusalsConfig) *Refusals {
	if cfg.Rate == 0 {
		cfg.Rate = 1
	}
	if cfg.Burst == 0 {
		cfg.Burst = 10
	}
	return &Refusals{log: cfg.Logger, every: cfg.Rate, burst: cfg.Burst}
}

func (r *Refusals) init() {
	for i := range r.limiters {
		r.limiters[i] = rate.NewLimiter(r.every, r.burst)
	}
}

// Refuse counts one refusal and logs it (msg, the reason, attrs) unless
// its reason's rate is spent.
func (r *Refusals) Refuse(reason Reason, msg string, attrs ...slog.Attr) {
	if r == nil || reason < 0 || reason >= numReasons {
		return
	}
	r.counts[reason].Add(1)
	if r.log == nil || reason == RetryUnbuffered {
		return
	}
	r.once.Do(r.init)
	if !r.limiters[reason].AllowN(time.Now(), 1) {
		r.suppressed[reason].Add(1)
		return
	}
	attrs = append(attrs, slog.String(logkey.Reason, reason.String()))
	if n := r.suppressed[reason].Swap(0); n > 0 {
		attrs = append(attrs, slog.Uint64(logkey.Suppressed, n))
	}
	r.log.LogAttrs(context.Background(), slog.LevelWarn, msg, attrs...)
}

// Count is how many refusals of reason there were.
func (r *Refusals) Count(reason Reason) uint64 {
	if r == nil || reason < 0 || reason >= numReasons {
		return 0
	}
	return r.counts[reason].Load()
}

// Counts returns every reason's count by name.
func (r *Refusals) Counts() map[string]uint64 {
	m := make(map[string]uint64, numReasons)
	for _, reason := range Reasons() {
		m[reason.String()] = r.Count(reason)
	}
	return m
}
