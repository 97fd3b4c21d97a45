package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Strict mTLS on the lab (issue #15, e2e step c): in a namespace annotated
// weft.dev/mtls: strict, a plaintext connection from a non-enrolled pod (on
// the same node, on another node, hostNetwork), to a strict pod's IP or
// through its Service, is refused by the datapath and the backend accepts
// none of them (SYN-ACKs counted in the pod's netns; a hostNetwork caller
// shares the node's address with the proxy, so only its client side is
// checked); a meshed caller is served through the Service; the kubelet's
// readiness probe keeps the pods Ready.

const safeURL = "http://safe.vault.svc.cluster.local:8080/"

// strictPod is one backend of vault/safe.
type strictPod struct{ name, uid, node, ip string }

func (e *env) strictPods() []strictPod {
	e.t.Helper()
	out := e.kubectl("-n", "vault", "get", "pods", "-l", "app=safe", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.spec.nodeName} {.status.podIP}{"\n"}{end}`)
	var pods []strictPod
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 4 {
			pods = append(pods, strictPod{f[0], f[1], f[2], f[3]})
		}
	}
	if len(pods) != 2 || pods[0].node == pods[1].node {
		e.t.Fatalf("vault/safe pods %+v, want one on each node", pods)
	}
	return pods
}

// synAcks counts, inside a pod's network namespace, the SYN-ACKs the pod
// sends: one per connection it accepts, by destination address. A SYN the
// datapath drops, or a connect it refuses, never gets one.
type synAcks struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	to   map[string]int
}

func countSynAcks(t *testing.T, p strictPod) *synAcks {
	t.Helper()
	ns := "wl-" + p.node + "_" + p.uid
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	filter := fmt.Sprintf("src host %s and tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)", p.ip)
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "tcpdump", "-i", "any", "-nn", "-l", "-q", filter)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("tcpdump in %s: %v", ns, err)
	}
	s := &synAcks{cmd: cmd, done: make(chan struct{}), to: map[string]int{}}
	go func() {
		defer close(s.done)
		defer cancel()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			// "12:00:00.000000 eth0 Out IP 10.244.1.5.8080 > 172.30.0.11.40000: tcp 0"
			f := strings.Fields(sc.Text())
			for i, w := range f {
				if w == ">" && i+1 < len(f) {
					dst := strings.TrimSuffix(f[i+1], ":")
					if j := strings.LastIndexByte(dst, '.'); j > 0 {
						dst = dst[:j]
					}
					s.mu.Lock()
					s.to[dst]++
					s.mu.Unlock()
				}
			}
		}
	}()
	time.Sleep(time.Second) // tcpdump is listening
	return s
}

func (s *synAcks) stop() map[string]int {
	time.Sleep(time.Second)
	s.cmd.Process.Signal(interruptSignal)
	<-s.done
	s.cmd.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.to
}

// podIP reads a pod's IP.
func (e *env) podIP(ns, pod string) string {
	e.t.Helper()
	return strings.TrimSpace(e.kubectl("-n", ns, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"))
}

// echoFrom runs weft-echo client in ns/pod against url.
func (e *env) echoFrom(ns, pod, url string, count int) echoResult {
	e.t.Helper()
	out, err := e.exec(ns, pod, "weft-echo", "client", "--url", url, "--count", fmt.Sprint(count))
	if err != nil && !strings.HasPrefix(strings.TrimSpace(out), "{") {
		e.t.Fatalf("weft-echo client in %s/%s: %v: %s", ns, pod, err, out)
	}
	return parseResult(out)
}

func testStrictMTLS(t *testing.T, e *env) {
	e.kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join("testdata", "strict", "vault.yaml"))
	defer e.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", filepath.Join("testdata", "strict", "vault.yaml"))
	e.kubectl("-n", "vault", "rollout", "status", "deployment/safe", "--timeout=180s")
	e.kubectl("-n", "vault", "wait", "--for=condition=Ready", "pod/caller", "--timeout=120s")
	e.waitEnrolled("vault", "caller")
	for _, p := range []string{"intruder-1", "intruder-2", "intruder-host"} {
		e.kubectl("-n", "outside", "wait", "--for=condition=Ready", "pod/"+p, "--timeout=120s")
	}
	pods := e.strictPods()
	for _, p := range pods {
		e.waitEnrolled("vault", p.name)
	}
	// the meshed caller is served through the Service (once the policy is in force)
	e.eventually(60*time.Second, "the meshed caller is served by vault/safe", func() string {
		if r := e.echoFrom("vault", "caller", safeURL, 10); r.Status["200"] != 10 {
			return fmt.Sprintf("caller %+v", r)
		}
		return ""
	})
	// plaintext from outside the mesh: the strict entries are in force once
	// the same-node intruder is refused straight away
	e.eventually(30*time.Second, "a plaintext connect to a strict pod refused", func() string {
		if r := e.echoFrom("outside", "intruder-1", "http://"+pods[0].ip+":8080/", 1); r.Errors != 1 {
			return fmt.Sprintf("intruder-1 -> %s: %+v", pods[0].ip, r)
		}
		return ""
	})

	captures := make([]*synAcks, len(pods))
	for i, p := range pods {
		captures[i] = countSynAcks(t, p)
	}
	intruders := map[string]string{} // pod -> IP (hostNetwork: the node's)
	for _, name := range []string{"intruder-1", "intruder-2", "intruder-host"} {
		intruders[name] = e.podIP("outside", name)
		for _, p := range pods {
			r := e.echoFrom("outside", name, "http://"+p.ip+":8080/", 2)
			if r.Errors != 2 || len(r.Status) != 0 {
				t.Errorf("%s (plaintext) -> strict pod %s on %s: %+v, want every connection refused", name, p.name, p.node, r)
			}
		}
		if r := e.echoFrom("outside", name, safeURL, 2); r.Errors != 2 || len(r.Status) != 0 {
			t.Errorf("%s (plaintext) -> Service vault/safe: %+v, want every connection refused", name, r)
		}
	}
	if r := e.echoFrom("vault", "caller", safeURL, 20); r.Status["200"] != 20 || len(r.Pods) != 2 {
		t.Errorf("meshed caller through the Service: %+v, want 20 answered 200 by both pods", r)
	}
	for i, c := range captures {
		to := c.stop()
		t.Logf("SYN-ACKs sent by %s (%s): %v", pods[i].name, pods[i].node, to)
		for _, name := range []string{"intruder-1", "intruder-2"} {
			if n := to[intruders[name]]; n != 0 {
				t.Errorf("strict pod %s accepted %d plaintext connections from %s (%s)", pods[i].name, n, name, intruders[name])
			}
		}
		if len(to) == 0 {
			t.Errorf("strict pod %s accepted no connection at all during the capture: the meshed caller's (through the node proxy) and the kubelet's probes should be there", pods[i].name)
		}
	}
	// the kubelet's readiness probe (every second, 2 failures to NotReady)
	// kept reaching the pods through all of it
	for _, p := range pods {
		out := e.kubectl("-n", "vault", "get", "pod", p.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if strings.TrimSpace(out) != "True" {
			t.Errorf("strict pod %s Ready=%q, want True (kubelet probes must pass)", p.name, out)
		}
	}
}
