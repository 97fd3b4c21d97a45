package outbound

import (
	"net/http"
	"strings"
	"time"

	"github.com/weft-mesh/weft/agent/metrics"
)

// exchange is the ResponseWriter of one request while metrics are on: it
// remembers the status the client was answered, and what the request is
// counted under once its answer is done.
type exchange struct {
	http.ResponseWriter
	start time.Time
	code  int
	peer  metrics.Peer
}

func (e *exchange) WriteHeader(code int) {
	if e.code == 0 && code >= 200 || code == http.StatusSwitchingProtocols {
		e.code = code
	}
	e.ResponseWriter.WriteHeader(code)
}

func (e *exchange) Write(b []byte) (int, error) {
	if e.code == 0 {
		e.code = http.StatusOK
	}
	return e.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer (Flush,
// Hijack, deadlines).
func (e *exchange) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// observe returns the writer to serve r with: w itself when metrics are
// off, else an exchange that done counts.
func (p *Proxy) observe(w http.ResponseWriter, info *connInfo) (http.ResponseWriter, *exchange) {
	if p.cfg.Metrics == nil {
		return w, nil
	}
	e := &exchange{ResponseWriter: w, start: time.Now()}
	e.peer.SourceNamespace = info.callerN
	e.peer.SourceWorkload = info.caller.GetWorkload()
	return e, e
}

// destination records the Service a request was sent to.
func (e *exchange) destination(svc *Service) {
	if e != nil && svc != nil {
		e.peer.DestNamespace, e.peer.DestService = svc.Namespace, svc.Service
	}
}

// routed records the route (empty: none applied) and the backend chosen.
func (e *exchange) routed(route, backend string) {
	if e != nil {
		e.peer.Route, e.peer.Backend = route, backend
	}
}

// done counts the request once its answer is written (or abandoned).
func (p *Proxy) done(e *exchange, r *http.Request) {
	if e == nil {
		return
	}
	p.cfg.Metrics.HTTPRequest(&e.peer, e.code, grpcStatus(r, e.Header(), e.code), time.Since(e.start))
}

// grpcStatus is the gRPC status a gRPC client was answered: the
// grpc-status the answer carried (a trailer, or a header in a
// trailers-only answer), else the one gRPC derives from the HTTP status
// (doc/http-grpc-status-mapping.md), as for the proxy's own answers. Empty
// for a request that is not gRPC or got no answer.
func grpcStatus(r *http.Request, h http.Header, code int) string {
	if code == 0 || r.ProtoMajor != 2 || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		return ""
	}
	if v, ok := h["Grpc-Status"]; ok && len(v) > 0 {
		return v[0]
	}
	if v, ok := h[http.TrailerPrefix+"Grpc-Status"]; ok && len(v) > 0 {
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
