package main

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/metrics/stat"
)

//go:embed dashboard.html
var dashboardFS embed.FS

// dashboard polls every agent's metrics and keeps the samples of the last
// span, so the page can show any window up to span (capped at how long
// the dashboard has run).
type dashboard struct {
	s     source
	gc    gwclient.Interface
	span  time.Duration
	every time.Duration

	mu      sync.Mutex
	samples []dashSample // oldest first
	lastErr error
}

type dashSample struct {
	at   time.Time
	pods map[string]stat.Families
}

// source reads every agent's metrics now (scraper; a fake in tests).
type source interface {
	now(ctx context.Context) (map[string]stat.Families, error)
}

// dashboardCmd serves the live canary view.
func dashboardCmd(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	addr := fs.String("addr", "127.0.0.1:7070", "where to serve the page (keep it on loopback)")
	every := fs.Duration("interval", 2*time.Second, "how often the agents are read")
	span := fs.Duration("span", 10*time.Minute, "how much history the page can show")
	if err := fs.Parse(args); err != nil {
		return err
	}
	kc, gc, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	d := &dashboard{s: scraper{kc: kc}, gc: gc, span: *span, every: *every}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "weftctl dashboard: http://%s/\n", l.Addr())
	return d.serve(context.Background(), l)
}

// serve polls the agents and serves the page on l until ctx is done.
func (d *dashboard) serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go d.poll(ctx)
	srv := &http.Server{Handler: d.mux(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (d *dashboard) mux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, _ := dashboardFS.ReadFile("dashboard.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		w.Write(b)
	})
	mux.HandleFunc("GET /api/routes", d.routes)
	mux.HandleFunc("GET /api/route", d.route)
	return mux
}

// poll reads the agents every interval until ctx is done.
func (d *dashboard) poll(ctx context.Context) {
	t := time.NewTicker(d.every)
	defer t.Stop()
	for {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		pods, err := d.s.now(c)
		cancel()
		d.mu.Lock()
		d.lastErr = err
		if len(pods) > 0 {
			for _, f := range pods {
				for name := range f {
					if !slices.Contains(metrics.HistoryFamilies, name) {
						delete(f, name)
					}
				}
			}
			now := time.Now()
			d.samples = append(d.samples, dashSample{at: now, pods: pods})
			for len(d.samples) > 1 && now.Sub(d.samples[0].at) > d.span {
				d.samples = d.samples[1:]
			}
		}
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pairsBetween pairs each agent's sample b with its sample a: the
// increase between them.
func pairsBetween(a, b dashSample) []stat.Pair {
	return stat.Pairs(a.pods, b.pods, b.at.Sub(a.at).Seconds())
}

// window returns the samples at the ends of the last window, and the
// samples inside it (for the chart).
func (d *dashboard) window(window time.Duration) ([]dashSample, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.samples) < 2 {
		if d.lastErr != nil {
			return nil, d.lastErr
		}
		return nil, errors.New("reading the agents: one more moment")
	}
	last := d.samples[len(d.samples)-1]
	i := len(d.samples) - 1
	for i > 0 && last.at.Sub(d.samples[i-1].at) <= window {
		i--
	}
	return slices.Clone(d.samples[i:]), nil
}

// routeView is what /api/route answers.
type routeView struct {
	Route      string        `json:"route"`
	Seconds    float64       `json:"seconds"`
	Backends   []backendView `json:"backends"`
	Conditions []condView    `json:"conditions"`
	// Series: per chart point (one per interval), each backend's share.
	Series []seriesPoint `json:"series"`
}

type backendView struct {
	Backend  string  `json:"backend"`
	Requests float64 `json:"requests"`
	Share    float64 `json:"share"`   // percent of the route's requests
	Success  float64 `json:"success"` // percent, -1 without requests
	RPS      float64 `json:"rps"`
	P50      float64 `json:"p50ms"` // -1 without requests
	P99      float64 `json:"p99ms"`
}

type condView struct {
	Parent, Type, Status, Reason, Message string
}

type seriesPoint struct {
	Seconds float64            `json:"t"` // before the newest sample
	Shares  map[string]float64 `json:"shares"`
}

func (d *dashboard) route(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	window, err := time.ParseDuration(r.URL.Query().Get("window"))
	if err != nil || window <= 0 {
		window = time.Minute
	}
	ns, n, ok := strings.Cut(name, "/")
	if !ok || ns == "" || n == "" {
		http.Error(w, "want ?name=NAMESPACE/ROUTE", http.StatusBadRequest)
		return
	}
	samples, err := d.window(window)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	first, last := samples[0], samples[len(samples)-1]
	f := stat.Filter{Route: name}
	v := routeView{Route: name, Seconds: last.at.Sub(first.at).Seconds()}
	v.Backends = backends(stat.Window(pairsBetween(first, last), f))
	for i := 1; i < len(samples); i++ {
		p := seriesPoint{Seconds: last.at.Sub(samples[i].at).Seconds(), Shares: map[string]float64{}}
		for _, b := range backends(stat.Window(pairsBetween(samples[i-1], samples[i]), f)) {
			if b.Requests > 0 {
				p.Shares[b.Backend] = b.Share
			}
		}
		if len(p.Shares) > 0 { // an interval without requests has no split
			v.Series = append(v.Series, p)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v.Conditions = d.conditions(ctx, ns, n)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// backends folds rows (one per Service and backend) into the route's
// backends with their share of its requests.
func backends(rows []stat.Row) []backendView {
	total := 0.0
	for _, r := range rows {
		total += r.Requests
	}
	var out []backendView
	for _, r := range rows {
		b := backendView{Backend: r.Backend, Requests: r.Requests, RPS: r.RPS, Success: -1, P50: -1, P99: -1}
		if total > 0 {
			b.Share = 100 * r.Requests / total
		} else if r.Requests == 0 {
			continue // a backend with no request in the window
		}
		if !math.IsNaN(r.Success) {
			b.Success, b.P50, b.P99 = 100*r.Success, 1000*r.P50, 1000*r.P99
		}
		out = append(out, b)
	}
	return out
}

// conditions reads the route's status (HTTPRoute, else GRPCRoute).
func (d *dashboard) conditions(ctx context.Context, ns, name string) []condView {
	var parents []gwv1.RouteParentStatus
	if hr, err := d.gc.GatewayV1().HTTPRoutes(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
		parents = hr.Status.Parents
	} else if gr, err := d.gc.GatewayV1().GRPCRoutes(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
		parents = gr.Status.Parents
	} else {
		return []condView{{Type: "Found", Status: "False", Reason: "NotFound", Message: err.Error()}}
	}
	var out []condView
	for _, p := range parents {
		for _, c := range p.Conditions {
			out = append(out, condView{Parent: parentName(ns, p.ParentRef), Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
		}
	}
	return out
}

// routes lists the HTTPRoutes and GRPCRoutes the page can show.
func (d *dashboard) routes(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	var names []string
	if hr, err := d.gc.GatewayV1().HTTPRoutes("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, x := range hr.Items {
			names = append(names, x.Namespace+"/"+x.Name)
		}
	}
	if gr, err := d.gc.GatewayV1().GRPCRoutes("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, x := range gr.Items {
			names = append(names, x.Namespace+"/"+x.Name)
		}
	}
	slices.Sort(names)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(slices.Compact(names))
}
