package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/weft-mesh/weft/bpf"
	weftlab "github.com/weft-mesh/weft/test/lab"
)

// testHelmUpgrade upgrades Weft with `helm upgrade` to the next build (images whose
// binaries carry another version, so other digests) while the faces client sends
// requests through the mesh: the controller rolls and every agent hands its listeners
// to its successor, and no request may fail.
func testHelmUpgrade(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if err := lab.BuildImages(ctx, upgradeTag, "upgrade-test", tlog{t}); err != nil {
		t.Fatalf("build the next release: %v", err)
	}
	var err error
	var took, gone time.Duration
	sent, failed, lastBad := e.underLoad("the upgrade", func() {
		start := time.Now()
		err = lab.InstallWeft(ctx, weftlab.Helm, upgradeTag, tlog{t})
		took = time.Since(start)
		if err != nil {
			return
		}
		// the load goes on until the old agents have drained and exited:
		// what they cut when their grace period ends is counted too
		e.eventually(2*time.Minute, "the old agents gone", func() string {
			pods := e.kubectl("-n", weftlab.Namespace, "get", "pods", "-l", "app.kubernetes.io/name=weft-agent", "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].image} {.metadata.deletionTimestamp}{"\n"}{end}`)
			for _, line := range strings.Split(strings.TrimSpace(pods), "\n") {
				if f := strings.Fields(line); len(f) != 2 || !strings.Contains(f[1], ":"+upgradeTag+"-") {
					return line
				}
			}
			return ""
		})
		gone = time.Since(start)
	})
	if err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	t.Logf("helm upgrade %s -> %s rolled out in %s, old agents gone after %s: %d requests, %d failed (HTTP/1.1 and gRPC; transport errors and answers other than 200 or OK; goal 0)",
		releaseTag, upgradeTag, took.Round(100*time.Millisecond), gone.Round(100*time.Millisecond), sent, failed)
	if failed != 0 {
		t.Errorf("%d of %d requests failed during the upgrade; last bad tally: %s", failed, sent, lastBad)
	}
	pods := e.kubectl("-n", weftlab.Namespace, "get", "pods", "-l", "app.kubernetes.io/part-of=weft", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.containers[0].image} {.status.phase}{"\n"}{end}`)
	want := fmt.Sprintf("%s/", weftlab.ImageRepo)
	for _, line := range strings.Split(strings.TrimSpace(pods), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || !strings.HasPrefix(f[1], want) || !strings.Contains(f[1], ":"+upgradeTag+"-") || f[2] != "Running" {
			t.Errorf("after the upgrade every weft pod runs %s*:%s-<build>: %q", want, upgradeTag, line)
		}
	}
	routeChangeTakesEffect(e, "route change reaches the upgraded agents")
}

// testUninstall removes weft the documented way (`helm uninstall`) and checks that it
// leaves nothing behind: no agent, no pinned BPF link or map and no BPF program or map
// of Weft's in the kernel, no object of the chart, no XMesh the controller created;
// the Gateway API CRDs stay (Helm's convention for a chart's crds/). Traffic then takes
// the ordinary path again.
func testUninstall(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := lab.UninstallWeft(ctx, weftlab.Helm, tlog{t}); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	installed = false
	e.eventually(2*time.Minute, "weft pods gone", func() string {
		out, _ := e.kubectlErr("get", "pods", "-A", "-l", "app.kubernetes.io/part-of=weft", "-o", "name")
		if strings.TrimSpace(out) != "" && !strings.Contains(out, "No resources") {
			return out
		}
		return ""
	})
	for _, node := range []string{"lab-node-1", "lab-node-2"} {
		pins := "/sys/fs/bpf/weft/" + node
		e.eventually(30*time.Second, "pins of "+node+" removed", func() string {
			if entries, err := os.ReadDir(pins); err == nil {
				return fmt.Sprintf("%s still holds %d pins", pins, len(entries))
			}
			return ""
		})
	}
	cniRemoved(t, e)
	e.eventually(30*time.Second, "Weft's BPF programs and maps freed", func() string {
		left, err := liveBPFObjects()
		if err != nil {
			return err.Error()
		}
		return strings.Join(left, ", ")
	})
	e.eventually(time.Minute, "the default XMesh garbage-collected", func() string {
		out, err := e.kubectlErr("get", "xmesh", "weft", "-o", "name", "--ignore-not-found")
		if err != nil || strings.TrimSpace(out) != "" {
			return fmt.Sprintf("%s %v", out, err)
		}
		return ""
	})
	for _, obj := range []string{"clusterrole/weft-controller", "clusterrole/weft-agent",
		"clusterrolebinding/weft-controller", "clusterrolebinding/weft-agent"} {
		if out, _ := e.kubectlErr("get", obj, "-o", "name", "--ignore-not-found"); strings.TrimSpace(out) != "" {
			t.Errorf("%s left behind by helm uninstall", obj)
		}
	}
	// What the controller created (CA Secret and bundle, Lease) goes with its
	// ClusterRole, through the garbage collector.
	e.eventually(time.Minute, "no weft object left in "+weftlab.Namespace, func() string {
		out, _ := e.kubectlErr("-n", weftlab.Namespace, "get", "all,configmaps,secrets,serviceaccounts,leases", "-o", "name")
		var left []string
		for _, obj := range strings.Fields(out) {
			if strings.Contains(obj, "weft") {
				left = append(left, obj)
			}
		}
		return strings.Join(left, " ")
	})
	if _, err := e.kubectlErr("get", "crd", "httproutes.gateway.networking.k8s.io"); err != nil {
		t.Errorf("the Gateway API CRDs must stay after helm uninstall (Helm's crds/ convention): %v", err)
	}
	r := e.client("faces", "--url", colorURL, "--count", "50")
	if r.Errors != 0 {
		t.Errorf("traffic after uninstall: %+v", r)
	}
	if v1, v2, _ := versions(r); v2 != 0 || v1 != 50 {
		t.Errorf("routes still applied after uninstall: %+v", r)
	}
}

// liveBPFObjects lists the BPF programs and maps in the kernel that carry the names of
// Weft's redirect object (the kernel keeps 15 characters of a name).
func liveBPFObjects() ([]string, error) {
	names := map[string]bool{}
	for _, n := range []string{bpf.RedirectMapEnrolled, bpf.RedirectMapMeshed, bpf.RedirectMapOrigDsts, bpf.RedirectMapPending,
		bpf.RedirectProgWeftConnect4, bpf.RedirectProgWeftConnect6, bpf.RedirectProgWeftGetpeername4,
		bpf.RedirectProgWeftGetpeername6, bpf.RedirectProgWeftSockops} {
		names[n[:min(len(n), 15)]] = true
	}
	var left []string
	for id := ebpf.MapID(0); ; {
		next, err := ebpf.MapGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("list maps: %w", err)
		}
		id = next
		if name := mapName(id); names[name] {
			left = append(left, fmt.Sprintf("map %s (id %d)", name, id))
		}
	}
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("list programs: %w", err)
		}
		id = next
		if name := progName(id); names[name] {
			left = append(left, fmt.Sprintf("program %s (id %d)", name, id))
		}
	}
	return left, nil
}

func mapName(id ebpf.MapID) string {
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		return "" // freed meanwhile
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return ""
	}
	return info.Name
}

func progName(id ebpf.ProgramID) string {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return ""
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ""
	}
	return info.Name
}
