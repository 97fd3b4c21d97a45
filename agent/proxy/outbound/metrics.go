package outbound

import (
	"net/http"

	"github.com/weft-mesh/weft/agent/metrics"
)

// observe returns the writer to serve a captured client's request with:
// w itself when metrics are off, else a Recorder that done counts.
func (p *Proxy) observe(w http.ResponseWriter, info *connInfo) (http.ResponseWriter, *metrics.Recorder) {
	return p.cfg.Metrics.Record(w, info.callerN, info.caller.GetWorkload())
}

// done counts the request once its answer is written (or abandoned).
func (p *Proxy) done(e *metrics.Recorder, r *http.Request) { p.cfg.Metrics.Done(e, r) }

// destination records the Service a request was sent to.
func destination(e *metrics.Recorder, svc *Service) {
	if svc != nil {
		e.Destination(svc.Namespace, svc.Service)
	}
}
