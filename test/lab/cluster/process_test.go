package cluster

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestKillStaleEndsOnlyRecordedProcesses(t *testing.T) {
	dir := t.TempDir()
	victim, err := startProcess("victim", "/bin/sleep", []string{"60"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.stop(time.Second)
	// A process whose pid is recorded with another start time stands for a reused pid.
	bystander := exec.Command("/bin/sleep", "60")
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bystander.Process.Kill(); _ = bystander.Wait() }()
	if err := writePIDs(dir, []*process{victim}); err != nil {
		t.Fatal(err)
	}
	var recs []pidRecord
	b, _ := os.ReadFile(filepath.Join(dir, pidsFile))
	if err := json.Unmarshal(b, &recs); err != nil {
		t.Fatal(err)
	}
	recs = append(recs, pidRecord{Name: "bystander", PID: bystander.Process.Pid, Start: "1"})
	b, _ = json.Marshal(recs)
	if err := os.WriteFile(filepath.Join(dir, pidsFile), b, 0o644); err != nil {
		t.Fatal(err)
	}

	if err := KillStale(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case <-victim.done:
	case <-time.After(5 * time.Second):
		t.Fatal("recorded process still runs after KillStale")
	}
	if _, ok := ProcessStart(bystander.Process.Pid); !ok {
		t.Error("KillStale ended a process whose start time did not match")
	}
	if _, err := os.Stat(filepath.Join(dir, pidsFile)); !os.IsNotExist(err) {
		t.Errorf("%s not removed: %v", pidsFile, err)
	}
	if err := KillStale(dir); err != nil {
		t.Errorf("KillStale without a record: %v", err)
	}
}
