package metrics

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// HistoryPath serves a past sample of the request metrics: weftctl stat
// subtracts it from /metrics to answer "over the last minute" at once,
// with no Prometheus in the cluster.
const HistoryPath = "/metrics/history"

// SampleAgeHeader carries the age, in seconds, of the sample HistoryPath
// answers with.
const SampleAgeHeader = "X-Weft-Sample-Age"

// SampleAgeComment starts the first line of a HistoryPath answer, followed
// by the same age.
const SampleAgeComment = "# weft sample age seconds"

// HistoryFamilies are the families a History keeps: the golden signals
// per route and backend.
var HistoryFamilies = []string{"weft_http_requests_total", "weft_http_request_duration_seconds", "weft_tcp_connections_total"}

// History keeps the last Span of a few metric families, sampled Every.
// Memory is bounded by Span/Every samples of those families' series.
type History struct {
	g        prometheus.Gatherer
	every    time.Duration
	keep     int
	families []string
	now      func() time.Time

	mu      sync.Mutex
	samples []sample // oldest first
}

type sample struct {
	at   time.Time
	fams []*dto.MetricFamily
}

// NewHistory samples g's HistoryFamilies every interval and keeps span of
// them.
func NewHistory(g prometheus.Gatherer, every, span time.Duration) *History {
	return &History{g: g, every: every, keep: int(span/every) + 1, families: HistoryFamilies, now: time.Now}
}

// Run samples until ctx is done.
func (h *History) Run(ctx context.Context) {
	t := time.NewTicker(h.every)
	defer t.Stop()
	for {
		h.Sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample takes one sample now.
func (h *History) Sample() {
	all, err := h.g.Gather()
	if err != nil && len(all) == 0 {
		return
	}
	var fams []*dto.MetricFamily
	for _, f := range all {
		if slices.Contains(h.families, f.GetName()) {
			fams = append(fams, f)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, sample{at: h.now(), fams: fams})
	if len(h.samples) > h.keep {
		h.samples = slices.Delete(h.samples, 0, len(h.samples)-h.keep)
	}
}

// at returns the newest sample taken at or before t, or the oldest one
// when none is that old.
func (h *History) at(t time.Time) (sample, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.samples) == 0 {
		return sample{}, false
	}
	best := h.samples[0]
	for _, s := range h.samples {
		if s.at.After(t) {
			break
		}
		best = s
	}
	return best, true
}

// ServeHTTP answers GET HistoryPath?ago=DURATION with the sample taken
// ago before now (the oldest kept when none is that old) in the
// Prometheus text format, and its age in SampleAgeHeader.
func (h *History) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ago, err := time.ParseDuration(r.URL.Query().Get("ago"))
	if err != nil || ago < 0 {
		http.Error(w, "want ?ago=DURATION (for example 60s)", http.StatusBadRequest)
		return
	}
	now := h.now()
	s, ok := h.at(now.Add(-ago))
	if !ok {
		http.Error(w, "no sample yet", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	w.Header().Set(SampleAgeHeader, strconv.FormatFloat(now.Sub(s.at).Seconds(), 'f', 3, 64))
	// The age again as a comment, for clients that see only the body
	// (the API server's pod proxy through client-go).
	fmt.Fprintf(w, "%s %s\n", SampleAgeComment, w.Header().Get(SampleAgeHeader))
	enc := expfmt.NewEncoder(w, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range s.fams {
		if err := enc.Encode(f); err != nil {
			panic(http.ErrAbortHandler) // the client gets a cut answer, not a wrong one
		}
	}
}
