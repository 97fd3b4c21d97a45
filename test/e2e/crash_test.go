package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// load sends requests from a pod in a loop until stop; transport errors and answers
// other than 200 (HTTP) or OK (gRPC) count as failed.
type load struct {
	sent, failed atomic.Int64
	mu           sync.Mutex
	lastBad      string
	stopc        chan struct{}
	wg           sync.WaitGroup
}

// startLoad calls send (one weft-echo client run) in a loop until stop.
func startLoad(send func() echoResult) *load {
	l := &load{stopc: make(chan struct{})}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.stopc:
				return
			default:
			}
			r := send()
			bad := r.Errors
			for code, n := range r.Status {
				if code != "200" && code != "OK" { // HTTP, gRPC
					bad += n
				}
			}
			l.sent.Add(int64(r.Requests))
			l.failed.Add(int64(bad))
			if bad > 0 {
				l.mu.Lock()
				l.lastBad = fmt.Sprintf("%+v", r)
				l.mu.Unlock()
			}
		}
	}()
	return l
}

// stop ends the loop and returns the totals and the last tally with a failure.
func (l *load) stop() (sent, failed int64, lastBad string) {
	close(l.stopc)
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.sent.Load(), l.failed.Load(), l.lastBad
}

// testAPIServerCrash kills the lab's kube-apiserver with SIGKILL while the faces client
// sends requests through the mesh. The lab supervisor restarts it as a kubelet restarts
// a static pod; the data plane must not notice (0 failed requests), the nodes must
// heartbeat again, and a route change made after the recovery must land (the
// controller's watches resumed). The requests are sent with exec through the client
// node's kubelet API: `kubectl exec` itself needs the apiserver.
func testAPIServerCrash(t *testing.T, e *env) {
	e.apply("canary.yaml")
	node := strings.TrimSpace(e.kubectl("-n", "faces", "get", "pod", "client", "-o", "jsonpath={.spec.nodeName}"))
	container := strings.TrimSpace(e.kubectl("-n", "faces", "get", "pod", "client", "-o", "jsonpath={.spec.containers[0].name}"))
	send := func() echoResult {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, stderr, err := lab.ExecOnNode(ctx, node, "faces", "client", container, "weft-echo", "client", "--url", colorURL, "--count", "20")
		if err != nil {
			return echoResult{Requests: 1, Errors: 1, LastError: fmt.Sprintf("exec on %s: %v: %s", node, err, stderr)}
		}
		return parseResult(out)
	}
	e.eventually(2*time.Minute, "traffic flows before the crash", func() string {
		if r := send(); r.Errors != 0 || r.Status["200"] != 20 {
			return fmt.Sprintf("%+v", r)
		}
		return ""
	})
	apiserver := func() (pid, restarts int, running bool) {
		recs, err := lab.ControlPlane()
		if err != nil {
			t.Fatalf("read the lab's control-plane pids: %v", err)
		}
		for _, r := range recs {
			if r.Name == "kube-apiserver" {
				return r.PID, r.Restarts, r.PID != 0 && r.Running()
			}
		}
		t.Fatalf("no kube-apiserver in the lab's control-plane record: %+v", recs)
		return 0, 0, false
	}
	old, restarts, running := apiserver()
	if !running {
		t.Fatalf("kube-apiserver pid %d recorded by the lab does not run", old)
	}

	ld := startLoad(send)
	time.Sleep(3 * time.Second)
	killed := time.Now()
	sentBefore := ld.sent.Load()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		ld.stop()
		t.Fatalf("kill -9 kube-apiserver (pid %d): %v", old, err)
	}
	var now int
	e.eventually(2*time.Minute, "kube-apiserver restarted by the lab supervisor", func() string {
		pid, n, running := apiserver()
		if pid == old || n != restarts+1 || !running {
			return fmt.Sprintf("pid %d (killed %d), restarts %d (was %d), running %v", pid, old, n, restarts, running)
		}
		now = pid
		return ""
	})
	restartedAfter := time.Since(killed)
	e.eventually(2*time.Minute, "kube-apiserver ready", func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if body, err := lab.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			return fmt.Sprintf("/readyz: %v %s", err, body)
		}
		return ""
	})
	readyAfter := time.Since(killed)
	sentDown := ld.sent.Load() - sentBefore
	// The nodes heartbeat again: each renews its Lease after the apiserver is back.
	ready := time.Now()
	for i := 1; i <= lab.Nodes; i++ {
		name := fmt.Sprintf("lab-node-%d", i)
		e.eventually(time.Minute, name+" renews its lease", func() string {
			out, err := e.kubectlErr("-n", "kube-node-lease", "get", "lease", name, "-o", "jsonpath={.spec.renewTime}")
			if err != nil {
				return out
			}
			if ts, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(out)); err != nil || !ts.After(ready) {
				return fmt.Sprintf("renewTime %q, want after %s", out, ready.Format(time.RFC3339Nano))
			}
			return ""
		})
	}
	time.Sleep(3 * time.Second) // keep sending a little after the recovery
	sent, failed, lastBad := ld.stop()
	t.Logf("kube-apiserver kill -9 (pid %d -> %d): restarted after %s, /readyz after %s; %d requests, %d failed (%d sent while it was down)",
		old, now, restartedAfter.Round(10*time.Millisecond), readyAfter.Round(10*time.Millisecond), sent, failed, sentDown)
	if failed != 0 {
		t.Errorf("%d of %d requests failed across the apiserver crash; last bad tally: %s", failed, sent, lastBad)
	}
	if sentDown == 0 {
		t.Errorf("no request was sent while the apiserver was down: the step proves nothing")
	}

	// The restart is in the lab's log, and `weft-lab status` shows the new process.
	if b, err := os.ReadFile(lab.Paths.Log); err != nil || !strings.Contains(string(b), `msg="control-plane process restarted" process=kube-apiserver pid=`+fmt.Sprint(now)) {
		t.Errorf("supervisor log %s does not record the restart of kube-apiserver as pid %d (%v)", lab.Paths.Log, now, err)
	}
	status, err := exec.Command(lab.Paths.BinDir+"/weft-lab", "status", "--root", lab.Paths.Root).CombinedOutput()
	if want := fmt.Sprintf("kube-apiserver: pid %d, running, %d restarts", now, restarts+1); err != nil || !strings.Contains(string(status), want) {
		t.Errorf("weft-lab status (%v) lacks %q:\n%s", err, want, status)
	}

	routeChangeTakesEffect(e, "route change after the apiserver crash")
}
