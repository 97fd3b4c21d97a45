// Package e2e proves the mesh on the lab, black-box: weft is installed from its
// images and its Helm chart exactly as a user installs it (the images built from the
// code under test, pushed to the lab's registry), and every check goes through
// kubectl-visible objects and real traffic sent from pods.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/api/mesh"
	"github.com/weft-mesh/weft/test/echo"
	weftlab "github.com/weft-mesh/weft/test/lab"
	"github.com/weft-mesh/weft/test/lab/labtest"
)

var lab *labtest.Lab

func TestMain(m *testing.M) {
	os.Exit(labtest.Main(m, labtest.Options{Nodes: 2, Build: []string{
		"./cmd/weft-lab", "./cmd/weft-images", "./cmd/weftctl",
		"./test/echo/cmd/weft-echo",
	}}, &lab))
}

// env is one suite's view of the lab with weft installed.
type env struct {
	t    *testing.T
	root string
}

var installed bool

// releaseTag is the image tag of the install under test; upgradeTag the release
// HelmUpgradeUnderTraffic upgrades to.
const (
	releaseTag = "dev"
	upgradeTag = "next"
)

// tlog writes command output into the test log.
type tlog struct{ t *testing.T }

func (w tlog) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// setup installs weft (once per process) and the faces example.
func setup(t *testing.T) *env {
	t.Helper()
	labtest.Require(t, lab)
	e := &env{t: t, root: lab.Paths.Root}
	if !installed {
		e.install()
		installed = true
	}
	return e
}

func (e *env) install() {
	e.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if err := lab.InstallWeft(ctx, weftlab.Helm, releaseTag, tlog{e.t}); err != nil {
		e.t.Fatalf("install weft: %v", err)
	}
	e.apply("faces.yaml")
	for _, d := range []string{"color", "color2"} {
		e.kubectl("-n", "faces", "rollout", "status", "deployment/"+d, "--timeout=180s")
	}
	e.kubectl("-n", "faces", "wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
	e.waitEnrolled("faces", "client")
	e.t.Logf("weft installed and faces deployed in %s", time.Since(start).Round(time.Millisecond))
}

func (e *env) kubectl(args ...string) string {
	e.t.Helper()
	out, err := e.kubectlErr(args...)
	if err != nil {
		e.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (e *env) kubectlErr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", lab.Kubeconfig()}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (e *env) apply(file string) {
	e.t.Helper()
	e.kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join("testdata", file))
}

func (e *env) remove(file string) {
	e.t.Helper()
	e.kubectl("delete", "--ignore-not-found", "--wait=true", "-f", filepath.Join("testdata", file))
}

// waitEnrolled waits until the agent has marked the pod enrolled.
func (e *env) waitEnrolled(ns, pod string) {
	e.t.Helper()
	e.kubectl("-n", ns, "wait", "--for=condition="+string(mesh.ConditionEnrolled), "pod/"+pod, "--timeout=120s")
}

// client runs weft-echo client in ns/client and returns its tally.
func (e *env) client(ns string, args ...string) echo.Result {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stdout, stderr, err := lab.Exec(ctx, ns, "client", append([]string{"weft-echo", "client"}, args...)...)
	if err != nil {
		e.t.Fatalf("weft-echo client %v in %s: %v\nstdout: %s\nstderr: %s", args, ns, err, stdout, stderr)
	}
	var r echo.Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(stdout)), &r); err != nil {
		e.t.Fatalf("weft-echo client output %q: %v", stdout, err)
	}
	return r
}

// exec runs a command in ns/pod.
func (e *env) exec(ns, pod string, cmd ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stdout, stderr, err := lab.Exec(ctx, ns, pod, cmd...)
	if err != nil {
		return stdout + stderr, err
	}
	return stdout, nil
}

// versions splits a tally into v1 (color-*) and v2 (color2-*) answers.
func versions(r echo.Result) (v1, v2, other int) {
	for pod, n := range r.Pods {
		switch {
		case strings.HasPrefix(pod, "color2-"):
			v2 += n
		case strings.HasPrefix(pod, "color-"):
			v1 += n
		default:
			other += n
		}
	}
	return v1, v2, other
}

// eventually polls f until it returns "" or the timeout passes.
func (e *env) eventually(timeout time.Duration, what string, f func() string) time.Duration {
	e.t.Helper()
	start := time.Now()
	last := ""
	for time.Since(start) < timeout {
		if last = f(); last == "" {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.t.Fatalf("%s: not true after %s: %s", what, timeout, last)
	return 0
}

// routeCondition reads one condition of our parent status on a route.
func (e *env) routeCondition(kind, ns, name, cond string) (status, reason, message string) {
	e.t.Helper()
	out := e.kubectl("-n", ns, "get", kind, name, "-o", "json")
	var obj struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Status   struct {
			Parents []struct {
				ControllerName string             `json:"controllerName"`
				Conditions     []metav1.Condition `json:"conditions"`
			} `json:"parents"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &obj); err != nil {
		e.t.Fatalf("decode %s %s/%s: %v", kind, ns, name, err)
	}
	for _, p := range obj.Status.Parents {
		if p.ControllerName != mesh.ControllerName {
			continue
		}
		for _, c := range p.Conditions {
			if c.Type == cond && c.ObservedGeneration == obj.Metadata.Generation {
				return string(c.Status), c.Reason, c.Message
			}
		}
	}
	return "", "", fmt.Sprintf("no current %s condition from weft", cond)
}

type echoResult = echo.Result

func parseResult(out string) echo.Result {
	var r echo.Result
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil {
		return echo.Result{Requests: 1, Errors: 1}
	}
	return r
}

var interruptSignal = os.Interrupt

// fabricNetns finds the lab's fabric namespace (the bridge between nodes).
func fabricNetns(t *testing.T) string {
	t.Helper()
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_fabric") {
			return e.Name()
		}
	}
	t.Fatal("no lab fabric namespace in /run/netns")
	return ""
}
