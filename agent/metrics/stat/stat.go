// Package stat turns two scrapes of the agents' request metrics into
// golden signals per route and backend over the time between them:
// requests per second, success rate and latency percentiles, as `linkerd
// viz stat` shows them. weftctl stat and weftctl dashboard use it. Pure.
//
// A request is a failure when its HTTP status is 5xx or its gRPC status is
// set and not 0 (OK); every other answer is a success. A series whose
// counter went down was reset by an agent restart: its current value is
// the increase.
package stat

import (
	"bufio"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/weft-mesh/weft/agent/metrics"
)

const (
	requestsName = "weft_http_requests_total"
	durationName = "weft_http_request_duration_seconds"
)

// Families is one parsed scrape.
type Families map[string]*dto.MetricFamily

// Parse reads the Prometheus text format.
func Parse(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// Pair is two scrapes of one agent, Seconds apart (Then is the older).
type Pair struct {
	Now, Then Families
	Seconds   float64
}

// Pairs pairs each agent's scrape in now with its scrape in then (keyed
// alike, by agent pod), seconds apart. An agent missing from then (it
// appeared since) pairs with nothing: all it counted is new.
func Pairs(then, now map[string]Families, seconds float64) []Pair {
	out := make([]Pair, 0, len(now))
	for pod, f := range now {
		out = append(out, Pair{Now: f, Then: then[pod], Seconds: seconds})
	}
	return out
}

// Key names a row: the Service called, the route that matched (empty:
// none) and the backend the request went to.
type Key struct {
	Namespace, Service string
	Route, Backend     string
}

// Filter keeps the series of one Service namespace, route or caller
// namespace; empty fields keep everything.
type Filter struct {
	Namespace, Route, SourceNamespace string
}

// Row is the signals of one Key over the window.
type Row struct {
	Key
	Requests, Failures float64
	// RPS: requests per second; Success: share of successes (NaN without
	// requests); P50, P99: latency in seconds (NaN without requests).
	RPS, Success, P50, P99 float64
}

type acc struct {
	requests, failures, seconds float64
	buckets                     map[float64]float64 // upper bound -> cumulative count increase
}

// Window sums the increases of every agent's pair per Key.
func Window(pairs []Pair, f Filter) []Row {
	rows := map[Key]*acc{}
	get := func(k Key) *acc {
		a := rows[k]
		if a == nil {
			a = &acc{buckets: map[float64]float64{}}
			rows[k] = a
		}
		return a
	}
	for _, p := range pairs {
		for _, m := range p.Now[requestsName].GetMetric() {
			l := labels(m)
			k, ok := f.key(l)
			if !ok {
				continue
			}
			d := increase(m.GetCounter().GetValue(), find(p.Then[requestsName], l, func(o *dto.Metric) float64 { return o.GetCounter().GetValue() }))
			a := get(k)
			a.requests += d
			a.seconds = max(a.seconds, p.Seconds)
			if failed(l[metrics.LabelCode], l[metrics.LabelGRPCStatus]) {
				a.failures += d
			}
		}
		for _, m := range p.Now[durationName].GetMetric() {
			l := labels(m)
			k, ok := f.key(l)
			if !ok {
				continue
			}
			a := get(k)
			old := findMetric(p.Then[durationName], l)
			// +Inf is the sample count (the text format lists it as a
			// bucket, Gather does not).
			prevCount := 0.0
			if old != nil {
				prevCount = float64(old.GetHistogram().GetSampleCount())
			}
			a.buckets[math.Inf(1)] += increase(float64(m.GetHistogram().GetSampleCount()), prevCount)
			for i, b := range m.GetHistogram().GetBucket() {
				if math.IsInf(b.GetUpperBound(), 1) {
					continue
				}
				prev := 0.0
				if old != nil && i < len(old.GetHistogram().GetBucket()) {
					prev = float64(old.GetHistogram().GetBucket()[i].GetCumulativeCount())
				}
				a.buckets[b.GetUpperBound()] += increase(float64(b.GetCumulativeCount()), prev)
			}
		}
	}
	out := make([]Row, 0, len(rows))
	for k, a := range rows {
		r := Row{Key: k, Requests: a.requests, Failures: a.failures, Success: math.NaN(), P50: math.NaN(), P99: math.NaN()}
		if a.seconds > 0 {
			r.RPS = a.requests / a.seconds
		}
		if a.requests > 0 {
			r.Success = (a.requests - a.failures) / a.requests
			r.P50, r.P99 = quantile(0.5, a.buckets), quantile(0.99, a.buckets)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Row) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Service, b.Service),
			cmp.Compare(a.Route, b.Route), cmp.Compare(a.Backend, b.Backend))
	})
	return out
}

func (f Filter) key(l map[string]string) (Key, bool) {
	if f.Namespace != "" && l[metrics.LabelDestNamespace] != f.Namespace ||
		f.Route != "" && l[metrics.LabelRoute] != f.Route ||
		f.SourceNamespace != "" && l[metrics.LabelSourceNamespace] != f.SourceNamespace {
		return Key{}, false
	}
	return Key{Namespace: l[metrics.LabelDestNamespace], Service: l[metrics.LabelDestService],
		Route: l[metrics.LabelRoute], Backend: l[metrics.LabelBackend]}, true
}

func failed(code, grpcStatus string) bool {
	if grpcStatus != "" && grpcStatus != "0" {
		return true
	}
	c, err := strconv.Atoi(code)
	return err != nil || c >= 500
}

// increase of a counter from old to now; a counter that went down was
// reset (the agent restarted) and now is the increase.
func increase(now, old float64) float64 {
	if now < old {
		return now
	}
	return now - old
}

func labels(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.GetLabel()))
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// findMetric returns the series of f with exactly the labels l.
func findMetric(f *dto.MetricFamily, l map[string]string) *dto.Metric {
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(l) {
			continue
		}
		same := true
		for _, p := range m.GetLabel() {
			if l[p.GetName()] != p.GetValue() {
				same = false
				break
			}
		}
		if same {
			return m
		}
	}
	return nil
}

func find(f *dto.MetricFamily, l map[string]string, v func(*dto.Metric) float64) float64 {
	if m := findMetric(f, l); m != nil {
		return v(m)
	}
	return 0
}

// quantile estimates the q-quantile from cumulative bucket counts the way
// Prometheus's histogram_quantile does: linear within the bucket, the
// highest finite bound when it falls in +Inf.
func quantile(q float64, buckets map[float64]float64) float64 {
	bounds := make([]float64, 0, len(buckets))
	for b := range buckets {
		bounds = append(bounds, b)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return math.NaN()
	}
	total := buckets[bounds[len(bounds)-1]]
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range bounds {
		c := buckets[b]
		if c >= rank {
			if math.IsInf(b, 1) {
				return lower
			}
			if c == below {
				return b
			}
			return lower + (b-lower)*(rank-below)/(c-below)
		}
		lower, below = b, c
	}
	return lower
}

// ErrNoAge: a history answer without its age line.
var ErrNoAge = errors.New("history answer without its age line")

// ParseHistory reads an answer of metrics.HistoryPath: the sample's age
// in seconds, then the families.
func ParseHistory(r io.Reader) (Families, float64, error) {
	br := bufio.NewReader(r)
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrNoAge, err)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(line), metrics.SampleAgeComment)
	if !ok {
		return nil, 0, ErrNoAge
	}
	age, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrNoAge, err)
	}
	f, err := Parse(br)
	return f, age, err
}
