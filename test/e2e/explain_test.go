package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// weftctl runs the weftctl the suite built against the lab.
func (e *env) weftctl(args ...string) (string, error) {
	// --kubeconfig goes after the subcommand (each has its own flags).
	full := append([]string{args[0], "--kubeconfig=" + lab.Kubeconfig()}, args[1:]...)
	out, err := exec.Command(lab.Paths.BinDir+"/weftctl", full...).CombinedOutput()
	return string(out), err
}

// testExplainHeaderCanary asks weftctl explain, on the header canary that
// HeaderCanary left in place, where the faces client's requests go, with
// and without the header, and checks the answer is the one traffic got:
// the policy is read from the client's node and judged with the proxy's
// code.
func testExplainHeaderCanary(t *testing.T, e *env) {
	client := e.kubectl("get", "pod", "-n", "faces", "client", "-o", "jsonpath={.metadata.name} {.spec.nodeName}")
	name, node, _ := strings.Cut(client, " ")
	cases := []struct {
		args []string
		want []string
	}{
		{[]string{"-H", "traffic: test"}, []string{
			"decision  faces/color-canary rule 0",
			"MATCH: decides",
			"faces/color2:80",
		}},
		{nil, []string{
			"no: no header Traffic",
			"decision  faces/color-canary rule 1",
			"faces/color:80",
		}},
	}
	for _, c := range cases {
		args := append([]string{"explain", "--from", name + ".faces", colorURL}, c.args...)
		out, err := e.weftctl(args...)
		if err != nil {
			t.Fatalf("weftctl %v: %v\n%s", args, err, out)
		}
		t.Logf("weftctl %s:\n%s", strings.Join(args, " "), out)
		for _, w := range append(c.want, "node "+node) {
			if !strings.Contains(out, w) {
				t.Errorf("weftctl %v: no %q in the explanation", args, w)
			}
		}
	}
	if out, err := e.weftctl("explain", "--from", name+".faces", "http://nosuch.faces/"); err == nil || !strings.Contains(out, "no meshed Service port faces/nosuch:80") {
		t.Errorf("explain of an unknown Service: err %v, output %q", err, out)
	}
}
