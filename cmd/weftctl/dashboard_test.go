package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwfake "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned/fake"

	"github.com/weft-mesh/weft/agent/metrics"
	"github.com/weft-mesh/weft/agent/metrics/stat"
	"github.com/weft-mesh/weft/api/promserve"
	"github.com/weft-mesh/weft/test/browser"
)

// registrySource serves one registry per fake agent, as the pod proxy
// would.
type registrySource struct {
	mu   sync.Mutex
	regs map[string]*prometheus.Registry
}

func (s *registrySource) now(context.Context) (map[string]stat.Families, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]stat.Families{}
	for pod, reg := range s.regs {
		fams, err := reg.Gather()
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
		for _, f := range fams {
			enc.Encode(f)
		}
		if out[pod], err = stat.Parse(&b); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TestDashboardInChromium drives requests through two fake agents' real
// metrics (70/30 over two backends, with failures and latency), loads the
// page in headless Chromium, reads the split the page shows and compares
// it with what was sent; it keeps a screenshot.
func TestDashboardInChromium(t *testing.T) {
	c, err := browser.Find()
	if err != nil {
		t.Skip(err)
	}
	src := &registrySource{regs: map[string]*prometheus.Registry{"weft-agent-a": promserve.Registry(), "weft-agent-b": promserve.Registry()}}
	proxies := map[string]*metrics.Proxy{}
	for pod, reg := range src.regs {
		proxies[pod] = metrics.NewProxy(reg, nil)
	}
	route := &gwv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: "faces", Name: "color-canary"}}
	route.Status.Parents = []gwv1.RouteParentStatus{{
		ParentRef:  gwv1.ParentReference{Group: ptrTo(gwv1.Group("")), Kind: ptrTo(gwv1.Kind("Service")), Name: "color"},
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", Message: "route is in force"}},
	}}
	d := &dashboard{s: src, gc: gwfake.NewSimpleClientset(route), span: time.Minute, every: 200 * time.Millisecond}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.serve(ctx, l)
	time.Sleep(500 * time.Millisecond) // a baseline sample before the traffic

	sent := map[string]int{}
	for i := range 400 {
		backend, d := "faces/color:80", 3*time.Millisecond
		if i%10 >= 7 {
			backend, d = "faces/color2:80", 30*time.Millisecond
		}
		code := 200
		if i%50 == 0 {
			code = 503
		}
		pod := "weft-agent-a"
		if i%2 == 1 {
			pod = "weft-agent-b"
		}
		proxies[pod].HTTPRequest(&metrics.Peer{SourceNamespace: "faces", SourceWorkload: "client", DestNamespace: "faces", DestService: "color", Route: "faces/color-canary", Backend: backend}, code, "", d)
		sent[backend]++
	}
	time.Sleep(600 * time.Millisecond)

	url := "http://" + l.Addr().String() + "/?route=faces/color-canary&window=1m"
	dom, err := c.DOM(url)
	if err != nil {
		t.Fatal(err)
	}
	rows := browser.Backends(dom)
	if len(rows) != 2 {
		t.Fatalf("the page shows %d backends, want 2:\n%s", len(rows), dom)
	}
	for _, r := range rows {
		want := 100 * float64(sent[r.Name]) / 400
		if r.Requests != sent[r.Name] || r.Share < want-5 || r.Share > want+5 {
			t.Errorf("%s: the page shows %d requests, %.1f%%; the client sent %d (%.1f%%)", r.Name, r.Requests, r.Share, sent[r.Name], want)
		}
	}
	if !bytes.Contains(dom, []byte("Accepted=True")) {
		t.Error("the page does not show the route's Accepted condition")
	}
	shot := filepath.Join(artifactDir(t), "dashboard.png")
	if err := c.Screenshot(url, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
}

// artifactDir is where tests keep what a person looks at afterwards:
// $WEFT_ARTIFACTS, else the test's temporary directory.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("WEFT_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

func ptrTo[T any](v T) *T { return &v }
