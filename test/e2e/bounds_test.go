package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// heavyRegexRoute is the route of issue #18 as a new user wrote it: 16 rules
// of 8 RegularExpression path matches, each a valid 1,021-character RE2
// pattern. Before the limits it was Accepted and took every agent from
// 44 MB to 1.45 GB, and the controllers to 0.8 of a core.
func heavyRegexRoute() string {
	pattern := strings.Repeat("(?:.?){1000}", 85) + "."
	var b strings.Builder
	b.WriteString(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: heavy-regex, namespace: faces}
spec:
  parentRefs:
  - {group: "", kind: Service, name: color2, port: 80}
  rules:
`)
	for range 16 {
		b.WriteString("  - matches:\n")
		for range 8 {
			fmt.Fprintf(&b, "    - path: {type: RegularExpression, value: %q}\n", pattern)
		}
		b.WriteString("    backendRefs: [{name: color2, port: 80}]\n")
	}
	return b.String()
}

// testHeavyRegexRoute applies that route: it is refused with a status that
// names the limit, the agents stay far below their memory limit, and an
// unrelated route change lands meanwhile.
func testHeavyRegexRoute(t *testing.T, e *env) {
	e.apply("canary.yaml")
	before := agentRSS(t)
	applyYAML(t, heavyRegexRoute())
	defer e.kubectl("-n", "faces", "delete", "httproute", "heavy-regex", "--ignore-not-found")

	e.eventually(30*time.Second, "the heavy route is refused", func() string {
		st, reason, msg := e.routeCondition("httproute", "faces", "heavy-regex", "Accepted")
		if st != "False" || !strings.Contains(msg, "exceeds the limit") {
			return fmt.Sprintf("Accepted=%s reason=%s message=%q", st, reason, msg)
		}
		t.Logf("heavy route: Accepted=%s reason=%s message=%.200s...", st, reason, msg)
		return ""
	})

	e.apply("header-canary.yaml")
	took := e.eventually(30*time.Second, "an unrelated route change lands", func() string {
		r := e.client("faces", "--url", colorURL, "--count", "20")
		if v1, v2, _ := versions(r); v1 != 20 || v2 != 0 || r.Errors != 0 {
			return fmt.Sprintf("%+v", r)
		}
		return ""
	})
	t.Logf("unrelated route change in force after %s with the heavy route present", took.Round(time.Millisecond))
	e.apply("canary.yaml")

	after := agentRSS(t)
	for pid, rss := range after {
		t.Logf("weft-agent pid %d: RSS %d MiB (before the route: %d MiB)", pid, rss>>20, before[pid]>>20)
		if rss > 256<<20 {
			t.Errorf("weft-agent pid %d uses %d MiB, over the DaemonSet's 256 MiB limit", pid, rss>>20)
		}
	}
}

// agentRSS reads the resident memory of every weft-agent process of the lab
// (pods are processes on this host), by pid.
func agentRSS(t *testing.T) map[int]int64 {
	t.Helper()
	out := map[int]int64{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		exe, err := os.Readlink(filepath.Join(p, "exe"))
		if err != nil || filepath.Base(exe) != "weft-agent" {
			continue
		}
		status, err := os.ReadFile(filepath.Join(p, "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				pid, _ := strconv.Atoi(filepath.Base(p))
				out[pid] = kb << 10
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no weft-agent process found")
	}
	return out
}
