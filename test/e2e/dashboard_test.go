package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/test/browser"
)

// testDashboardShowsTheSplit runs weftctl dashboard against the lab, sends
// real traffic through a 70/30 route, loads the page in headless Chromium
// and compares the split it shows with what the client counted; the
// screenshot is kept ($WEFT_ARTIFACTS, else the test's temp dir).
func testDashboardShowsTheSplit(t *testing.T, e *env) {
	c, err := browser.Find()
	if err != nil {
		t.Skip(err)
	}
	applyYAML(t, `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: color-canary, namespace: faces}
spec:
  parentRefs: [{group: "", kind: Service, name: color, port: 80}]
  rules:
  - backendRefs: [{name: color, port: 80, weight: 70}, {name: color2, port: 80, weight: 30}]
`)
	e.eventually(30*time.Second, "70/30 route in force", func() string {
		r := e.client("faces", "--url", colorURL, "--count", "100", "--header", "traffic:test")
		if v1, v2, _ := versions(r); v1 < 50 || v2 < 10 {
			return fmt.Sprintf("v1=%d v2=%d", v1, v2)
		}
		return ""
	})
	dash := exec.Command(lab.Paths.BinDir+"/weftctl", "dashboard", "--kubeconfig="+lab.Kubeconfig(), "--addr=127.0.0.1:0", "--interval=1s")
	stdout, err := dash.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	dash.Stderr = tlog{t}
	if err := dash.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { dash.Process.Kill(); dash.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("weftctl dashboard: %v", err)
	}
	url := strings.TrimSpace(strings.TrimPrefix(line, "weftctl dashboard: ")) + "?route=faces/color-canary&window=1m"
	time.Sleep(3 * time.Second) // the dashboard's baseline sample comes before the traffic

	r := e.client("faces", "--url", colorURL, "--count", "600")
	if r.Errors != 0 {
		t.Fatalf("600 requests: %+v", r)
	}
	v1, v2, _ := versions(r)
	sent := map[string]int{"faces/color:80": v1, "faces/color2:80": v2}
	time.Sleep(3 * time.Second) // a sample after the traffic

	// weftctl stat answers from the agents' own history (no Prometheus).
	st, err := e.weftctl("stat", "-n", "faces", "--route", "faces/color-canary", "--window", "30s")
	if err != nil {
		t.Fatalf("weftctl stat: %v\n%s", err, st)
	}
	t.Logf("weftctl stat:\n%s", st)
	for b, n := range sent {
		if !regexp.MustCompile(regexp.QuoteMeta(b)+`\s+[0-9.]+\s+100\.00%.*\s`+`[0-9]+\n`).MatchString(st) || n == 0 {
			t.Errorf("weftctl stat has no row for %s with 100%% success", b)
		}
	}

	dom, err := c.DOM(url)
	if err != nil {
		t.Fatal(err)
	}
	rows := browser.Backends(dom)
	if len(rows) != 2 {
		t.Fatalf("the page shows %d backends, want 2:\n%s", len(rows), dom)
	}
	total := 0
	for _, row := range rows {
		total += row.Requests
		want := 100 * float64(sent[row.Name]) / float64(v1+v2)
		t.Logf("%s: page %.1f%% (%d requests), client %.1f%% (%d)", row.Name, row.Share, row.Requests, want, sent[row.Name])
		if row.Share < want-5 || row.Share > want+5 {
			t.Errorf("%s: the page shows %.1f%%, the client counted %.1f%%", row.Name, row.Share, want)
		}
	}
	if total != 600 {
		t.Errorf("the page counts %d requests in the window, the client sent 600 in it", total)
	}
	if !strings.Contains(string(dom), "Accepted=True") {
		t.Error("the page does not show the route's Accepted condition")
	}
	dir := os.Getenv("WEFT_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "dashboard-lab.png")
	if err := c.Screenshot(url, shot); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
}
