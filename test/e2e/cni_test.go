package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weft-mesh/weft/test/echo"
)

// The lab's nodes each have their own CNI config dir (test/lab/node, "CNI").
func nodeConflist(node string) string {
	return filepath.Join(lab.Paths.NodesDir, node, "cni", "net.d", "10-weft-lab.conflist")
}

func nodeCNIBin(node string) string {
	return filepath.Join(lab.Paths.NodesDir, node, "cni", "bin")
}

// chained reports whether the node's conflist ends with weft-cni, after the
// lab's primary plugin (ptp), and names the node.
func chained(node string) string {
	data, err := os.ReadFile(nodeConflist(node))
	if err != nil {
		return err.Error()
	}
	var list struct {
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(data, &list); err != nil {
		return err.Error()
	}
	n := len(list.Plugins)
	if n < 2 || list.Plugins[0]["type"] != "ptp" || list.Plugins[n-1]["type"] != "weft-cni" || list.Plugins[n-1]["node"] != node {
		return fmt.Sprintf("%s: %s", nodeConflist(node), data)
	}
	if _, err := os.Stat(filepath.Join(nodeCNIBin(node), "weft-cni")); err != nil {
		return err.Error()
	}
	return ""
}

// testWeftCNIChained: the agents chained weft-cni into each node's CNI
// config, and put it back when the primary CNI rewrote its file.
func testWeftCNIChained(t *testing.T, e *env) {
	for _, node := range []string{"lab-node-1", "lab-node-2"} {
		e.eventually(30*time.Second, "weft-cni chained on "+node, func() string { return chained(node) })
	}
	// The primary CNI rewrites its config without weft-cni (as a CNI
	// upgrade does): the agent chains it again.
	node := "lab-node-2"
	data, err := os.ReadFile(nodeConflist(node))
	if err != nil {
		t.Fatal(err)
	}
	var list map[string]any
	if err := json.Unmarshal(data, &list); err != nil {
		t.Fatal(err)
	}
	list["plugins"] = list["plugins"].([]any)[:1]
	bare, _ := json.Marshal(list)
	if err := os.WriteFile(nodeConflist(node), bare, 0o644); err != nil {
		t.Fatal(err)
	}
	took := e.eventually(30*time.Second, "weft-cni chained again on "+node, func() string { return chained(node) })
	t.Logf("weft-cni re-chained %s after the primary config was rewritten", took.Round(time.Millisecond))
}

// testFirstConnectionMeshed: a new pod of an enrolled namespace whose init
// container opens a connection to a meshed Service as its very first
// instruction gets the mesh's answer (the namespace's consumer route sends
// it to color2, which kube-proxy never serves for color).
func testFirstConnectionMeshed(t *testing.T, e *env) {
	e.apply("cni-first.yaml")
	defer e.remove("cni-first.yaml")
	e.kubectl("-n", "cnistart", "wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
	e.eventually(30*time.Second, "the consumer route is in force for cnistart", func() string {
		r := e.client("cnistart", "--url", colorURL, "--count", "20")
		if v1, v2, _ := versions(r); v1 != 0 || v2 != 20 {
			return fmt.Sprintf("%+v", r)
		}
		return ""
	})
	const n = 5
	for i := range n {
		name := fmt.Sprintf("first-%d", i)
		node := []string{"lab-node-1", "lab-node-2"}[i%2]
		applyYAML(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: cnistart}
spec:
  nodeName: %s
  restartPolicy: Never
  initContainers:
  - name: first
    image: ghcr.io/weft-mesh/toolbox:dev
    args: [client, --url, %q, --count, "1"]
  containers:
  - {name: toolbox, image: ghcr.io/weft-mesh/toolbox:dev}
`, name, node, colorURL))
		e.kubectl("-n", "cnistart", "wait", "--for=condition=Ready", "pod/"+name, "--timeout=120s")
		out := e.kubectl("-n", "cnistart", "logs", name, "-c", "first")
		var r echo.Result
		if err := json.Unmarshal([]byte(strings.TrimSpace(lastLine(out))), &r); err != nil {
			t.Fatalf("%s: init container output %q: %v", name, out, err)
		}
		v1, v2, _ := versions(r)
		t.Logf("%s on %s: first connection answered by %v (errors %d)", name, node, r.Pods, r.Errors)
		if r.Errors != 0 || v2 != 1 || v1 != 0 {
			t.Errorf("%s on %s: the first connection did not go through the mesh: %+v (v1 answers mean it bypassed the proxy)", name, node, r)
		}
		e.kubectl("-n", "cnistart", "delete", "pod", name, "--wait=true")
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// cniRemoved: after uninstall, no node's conflist chains weft-cni and the
// plugin binary is gone.
func cniRemoved(t *testing.T, e *env) {
	for _, node := range []string{"lab-node-1", "lab-node-2"} {
		e.eventually(30*time.Second, "weft-cni removed from "+node, func() string {
			data, err := os.ReadFile(nodeConflist(node))
			if err != nil {
				return err.Error()
			}
			if strings.Contains(string(data), "weft-cni") {
				return string(data)
			}
			if _, err := os.Stat(filepath.Join(nodeCNIBin(node), "weft-cni")); err == nil {
				return "weft-cni binary left in " + nodeCNIBin(node)
			}
			return ""
		})
	}
}
