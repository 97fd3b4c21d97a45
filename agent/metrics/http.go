package metrics

import (
	"net/http"
	"strings"
	"time"
)

// Recorder is the ResponseWriter of one request while metrics are on: it
// remembers the status the client was answered, and the Peer the request
// is counted under once its answer is done (Proxy.Done). Its methods are
// no-ops on a nil *Recorder (metrics off).
type Recorder struct {
	http.ResponseWriter
	start time.Time
	code  int
	peer  Peer
}

// Record returns the writer to serve r with: w itself and a nil Recorder
// when m is nil (metrics off), else a Recorder whose caller is
// sourceNamespace/sourceWorkload.
func (m *Proxy) Record(w http.ResponseWriter, sourceNamespace, sourceWorkload string) (http.ResponseWriter, *Recorder) {
	if m == nil {
		return w, nil
	}
	e := &Recorder{ResponseWriter: w, start: time.Now()}
	e.peer.SourceNamespace, e.peer.SourceWorkload = sourceNamespace, sourceWorkload
	return e, e
}

// WriteHeader records the first final status (or 101).
func (e *Recorder) WriteHeader(code int) {
	if e.code == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		e.code = code
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *Recorder) Write(b []byte) (int, error) {
	if e.code == 0 {
		e.code = http.StatusOK
	}
	return e.ResponseWriter.Write(b)
}

// Retried forgets the status of an answer begun and dropped (the request
// was sent again): the answer that replaces it is the one counted.
func (e *Recorder) Retried() {
	if e != nil {
		e.code = 0
	}
}

// Unwrap lets http.ResponseController reach the server's writer (Flush,
// Hijack, deadlines).
func (e *Recorder) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// Destination records the Service the request was sent to.
func (e *Recorder) Destination(namespace, service string) {
	if e != nil {
		e.peer.DestNamespace, e.peer.DestService = namespace, service
	}
}

// Routed records the route (empty: none applied) and the backend chosen
// (empty: none).
func (e *Recorder) Routed(route, backend string) {
	if e != nil {
		e.peer.Route, e.peer.Backend = route, backend
	}
}

// Done counts the request of e once its answer is written (or abandoned).
func (m *Proxy) Done(e *Recorder, r *http.Request) {
	if m == nil || e == nil {
		return
	}
	m.HTTPRequest(&e.peer, e.code, GRPCStatus(r, e.Header(), e.code), time.Since(e.start))
}

// GRPCStatus is the gRPC status a gRPC client was answered with h and the
// HTTP status code: the grpc-status the answer carried (a trailer, or a
// header in a trailers-only answer), else the one gRPC derives from the
// HTTP status (grpc/doc/http-grpc-status-mapping.md), as for the proxy's
// own answers. Empty for a request that is not gRPC or got no answer.
func GRPCStatus(r *http.Request, h http.Header, code int) string {
	if code == 0 || r.ProtoMajor != 2 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		return ""
	}
	if v := h["Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	if v := h[http.TrailerPrefix+"Grpc-Status"]; len(v) > 0 {
		return v[0]
	}
	switch code {
	case http.StatusBadRequest:
		return "13" // INTERNAL
	case http.StatusUnauthorized:
		return "16" // UNAUTHENTICATED
	case http.StatusForbidden:
		return "7" // PERMISSION_DENIED
	case http.StatusNotFound:
		return "12" // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "14" // UNAVAILABLE
	case http.StatusOK:
		return "13" // INTERNAL: a 200 without grpc-status
	}
	return "2" // UNKNOWN
}
