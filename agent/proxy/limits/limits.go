// Package limits bounds what one client can make the node proxy hold: the
// request header size, the bytes of headers and bodies buffered at once
// (node-wide and per source pod), and the concurrent connections of one
// source pod. It also records the proxy's refusals: a rate-limited Warn
// line and a counter per reason.
//
// Budget and Refusals are safe for concurrent use; nothing here does I/O
// beyond the logger it is given.
package limits

// Defaults of Limits (README.md, "Limits").
const (
	// DefaultHeaderBytes is Envoy's default max_request_headers_kb (60 KiB).
	DefaultHeaderBytes = 60 << 10
	// DefaultTunnelHeaderBytes bounds a tunnel CONNECT header block (it
	// carries two fields).
	DefaultTunnelHeaderBytes = 16 << 10
	// DefaultBufferBytes is the node-wide budget of buffered request
	// header and body bytes.
	DefaultBufferBytes = 64 << 20
	// DefaultPodBufferBytes is one source pod's share of the budget.
	DefaultPodBufferBytes = 16 << 20
	// DefaultPodConns bounds one source pod's concurrent captured
	// connections.
	DefaultPodConns = 1024
	// DefaultRetryBodyBytes is the largest request body buffered so that
	// it can be retried or mirrored.
	DefaultRetryBodyBytes = 64 << 10
)

// Limits are the node proxy's request-time bounds; zero fields take the
// defaults above (WithDefaults).
type Limits struct {
	// HeaderBytes bounds a captured request's header (request line and
	// fields, HTTP/1.1 and HTTP/2 alike): a larger one is answered 431.
	HeaderBytes int
	// TunnelHeaderBytes bounds a tunnel CONNECT request's header block at
	// :15008; a larger one is answered 431.
	TunnelHeaderBytes int
	// BufferBytes is the node-wide budget of request header and body
	// bytes held at once; PodBufferBytes the share of it one source pod
	// may hold. A request whose header does not fit is answered 503; a
	// body that does not fit is not buffered (the request is sent once,
	// without retries or mirrors).
	BufferBytes    int64
	PodBufferBytes int64
	// PodConns bounds one source pod's concurrent captured connections;
	// one over it is closed as soon as it is accepted.
	PodConns int
	// RetryBodyBytes is the largest request body buffered to be replayed
	// (retries, mirrors); larger and unknown-length bodies stream once.
	RetryBodyBytes int64
}

// WithDefaults returns l with its zero (or negative) fields set to the
// defaults; a pod share larger than the node budget is cut to it.
func (l Limits) WithDefaults() Limits {
	l.HeaderBytes = orDefault(l.HeaderBytes, DefaultHeaderBytes)
	l.TunnelHeaderBytes = orDefault(l.TunnelHeaderBytes, DefaultTunnelHeaderBytes)
	l.BufferBytes = orDefault(l.BufferBytes, DefaultBufferBytes)
	l.PodBufferBytes = min(orDefault(l.PodBufferBytes, DefaultPodBufferBytes), l.BufferBytes)
	l.PodConns = orDefault(l.PodConns, DefaultPodConns)
	l.RetryBodyBytes = orDefault(l.RetryBodyBytes, DefaultRetryBodyBytes)
	return l
}

func orDefault[T int | int64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
