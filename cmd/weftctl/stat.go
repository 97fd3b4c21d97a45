package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"sync"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/metrics/stat"
	"github.com/weft-mesh/weft/api/mesh"
)

// scraper reads every agent's request metrics through the API server's pod
// proxy (no port-forward, no Prometheus needed).
type scraper struct {
	kc kubernetes.Interface
}

// agentPods lists the running agents.
func (s scraper) agentPods(ctx context.Context) ([]string, error) {
	pods, err := s.kc.CoreV1().Pods(mesh.SystemNamespace).List(ctx, metav1.ListOptions{LabelSelector: mesh.LabelName + "=" + mesh.AgentName})
	if err != nil {
		return nil, fmt.Errorf("list agents: %w", err)
	}
	var out []string
	for _, p := range pods.Items {
		if p.Status.Phase == "Running" {
			out = append(out, p.Name)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no running weft-agent pod")
	}
	return out, nil
}

// get fetches path (with query) of an agent's metrics port.
func (s scraper) get(ctx context.Context, pod, path string, params map[string]string) ([]byte, error) {
	req := s.kc.CoreV1().RESTClient().Get().Namespace(mesh.SystemNamespace).Resource("pods").
		Name(pod + ":" + strconv.Itoa(mesh.MetricsPort)).SubResource("proxy").Suffix(path)
	for k, v := range params {
		req = req.Param(k, v)
	}
	b, err := req.DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("agent %s %s: %w", pod, path, err)
	}
	return b, nil
}

// now scrapes every agent's current metrics.
func (s scraper) now(ctx context.Context) (map[string]stat.Families, error) {
	pods, err := s.agentPods(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]stat.Families{}
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, pod := range pods {
		wg.Go(func() {
			b, err := s.get(ctx, pod, mesh.MetricsPath, nil)
			var f stat.Families
			if err == nil {
				f, err = stat.Parse(bytes.NewReader(b))
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			out[pod] = f
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// window pairs every agent's metrics now with its own sample of window
// ago (metrics.HistoryPath), so the answer covers the last window at once.
func (s scraper) window(ctx context.Context, window time.Duration) ([]stat.Pair, error) {
	now, err := s.now(ctx)
	if err != nil {
		return nil, err
	}
	var pairs []stat.Pair
	var errs []error
	for pod, f := range now {
		b, err := s.get(ctx, pod, metrics.HistoryPath, map[string]string{"ago": window.String()})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		then, age, err := stat.ParseHistory(bytes.NewReader(b))
		if err != nil {
			errs = append(errs, fmt.Errorf("agent %s: %w", pod, err))
			continue
		}
		pairs = append(pairs, stat.Pair{Now: f, Then: then, Seconds: age})
	}
	return pairs, errors.Join(errs...)
}

// statCmd prints requests per second, success rate and latency per route
// and backend over the last window, from every agent; --watch repeats.
func statCmd(args []string, w io.Writer) error {
	fs := flag.NewFlagSet("stat", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig")
	var f stat.Filter
	fs.StringVar(&f.Namespace, "n", "", "only Services of this namespace")
	fs.StringVar(&f.Route, "route", "", "only this route (NAMESPACE/NAME)")
	fs.StringVar(&f.SourceNamespace, "from-namespace", "", "only callers in this namespace")
	window := fs.Duration("window", time.Minute, "how far back (the agents keep 2m)")
	watch := fs.Bool("watch", false, "print again every --interval")
	interval := fs.Duration("interval", 2*time.Second, "with --watch: how often")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *window <= 0 || *window > 2*time.Minute {
		return errors.New("--window must be in (0, 2m]: the agents keep two minutes")
	}
	kc, _, err := clients(*kubeconfig)
	if err != nil {
		return err
	}
	s := scraper{kc: kc}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		pairs, err := s.window(ctx, *window)
		cancel()
		if err != nil && len(pairs) == 0 {
			return err
		}
		if *watch {
			fmt.Fprint(w, "\033[H\033[2J")
		}
		printStat(w, stat.Window(pairs, f), *window, len(pairs))
		if err != nil {
			fmt.Fprintln(os.Stderr, "weftctl: some agents were not read:", err)
		}
		if !*watch {
			return nil
		}
		time.Sleep(*interval)
	}
}

func printStat(w io.Writer, rows []stat.Row, window time.Duration, agents int) {
	fmt.Fprintf(w, "last %v, %d agents, %s\n", window, agents, time.Now().Format(time.TimeOnly))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tROUTE\tBACKEND\tRPS\tSUCCESS\tP50\tP99\tREQUESTS")
	for _, r := range rows {
		route := r.Route
		if route == "" {
			route = "-"
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%.0f\n", r.Namespace, r.Service, route, r.Backend,
			r.RPS, percent(r.Success), latency(r.P50), latency(r.P99), r.Requests)
	}
	tw.Flush()
}

func percent(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return strconv.FormatFloat(100*v, 'f', 2, 64) + "%"
}

func latency(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return time.Duration(v * float64(time.Second)).Round(10 * time.Microsecond).String()
}
