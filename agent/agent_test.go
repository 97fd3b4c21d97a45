package agent

import (
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

func TestDesiredTakesWorkloadsAndEveryVIPPort(t *testing.T) {
	pol := &weftv1.NodePolicy{
		Workloads: []*weftv1.Workload{{Uid: "u1", Namespace: "a", Name: "p1"}, {Uid: "u2", Namespace: "a", Name: "p2"}},
		Services: []*weftv1.ServicePort{
			{Vips: []string{"10.96.0.10", "10.96.0.11"}, Port: 80},
			{Vips: []string{"10.96.0.12"}, Port: 9090},
			{Vips: []string{"not-an-ip"}, Port: 80},
			{Vips: []string{"10.96.0.13"}, Port: 70000},
		},
	}
	d, byUID := desired(pol)
	if len(d.Pods) != 2 || d.Pods[0].UID != "u1" || d.Pods[1].UID != "u2" || byUID["u2"].GetName() != "p2" {
		t.Fatalf("pods = %+v", d.Pods)
	}
	want := []netip.AddrPort{
		netip.MustParseAddrPort("10.96.0.10:80"),
		netip.MustParseAddrPort("10.96.0.11:80"),
		netip.MustParseAddrPort("10.96.0.12:9090"),
	}
	if len(d.Meshed) != len(want) {
		t.Fatalf("meshed = %v, want %v", d.Meshed, want)
	}
	for i := range want {
		if d.Meshed[i] != want[i] {
			t.Fatalf("meshed = %v, want %v", d.Meshed, want)
		}
	}
}

// A strict workload's mode and addresses reach the datapath (unparsable
// addresses are left out; the policy validator refuses them anyway).
func TestDesiredCarriesStrictMTLS(t *testing.T) {
	pol := &weftv1.NodePolicy{Workloads: []*weftv1.Workload{
		{Uid: "u1", Ips: []string{"10.244.1.5", "fd00::5", "bad"}, MtlsStrict: true},
		{Uid: "u2", Ips: []string{"10.244.1.6"}},
	}}
	d, _ := desired(pol)
	if len(d.Pods) != 2 || !d.Pods[0].Strict || d.Pods[1].Strict {
		t.Fatalf("pods = %+v", d.Pods)
	}
	if ips := d.Pods[0].IPs; len(ips) != 2 || ips[0] != netip.MustParseAddr("10.244.1.5") || ips[1] != netip.MustParseAddr("fd00::5") {
		t.Errorf("strict pod addresses = %v", ips)
	}
}

func TestEnrolledPatchSetsOnlyOurCondition(t *testing.T) {
	b, err := enrolledPatch(time.Unix(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Status struct {
			Conditions []map[string]any `json:"conditions"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Status.Conditions) != 1 || p.Status.Conditions[0]["type"] != string(mesh.ConditionEnrolled) || p.Status.Conditions[0]["status"] != "True" {
		t.Fatalf("patch = %s", b)
	}
}

func TestSessionKeySurvivesRestartAndRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "n1", "session.key")
	k1, err := sessionKey(path)
	if err != nil || len(k1) != 32 {
		t.Fatalf("first key: %x, %v", k1, err)
	}
	k2, err := sessionKey(path)
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("key changed across restarts: %x then %x (%v)", k1, k2, err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := sessionKey(path); err == nil {
		t.Fatal("a malformed key was accepted")
	}
}
