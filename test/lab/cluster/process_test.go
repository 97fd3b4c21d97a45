package cluster

import (
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weft-mesh/weft/test/syncbuf"
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
	if err := writePIDs(dir, []PIDRecord{{Name: "victim", PID: victim.cmd.Process.Pid}}); err != nil {
		t.Fatal(err)
	}
	recs, err := ReadPIDs(dir)
	if err != nil {
		t.Fatal(err)
	}
	recs = append(recs, PIDRecord{Name: "bystander", PID: bystander.Process.Pid, Start: "1"})
	b, _ := json.Marshal(recs)
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

// TestSupervisedRestartsAfterKill: a supervised process that is SIGKILLed is started
// again after the back-off, the restart is logged and counted, and after stop it is
// not restarted.
func TestSupervisedRestartsAfterKill(t *testing.T) {
	dir := t.TempDir()
	var logs syncbuf.Buffer
	restarted := make(chan struct{}, 4)
	s, err := supervise("sleeper", "/bin/sleep", []string{"60"}, dir, slog.New(slog.NewTextHandler(&logs, nil)), func() { restarted <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop(time.Second)
	first, _, _ := s.status()
	killed := time.Now()
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-restarted:
	case <-time.After(10 * time.Second):
		t.Fatalf("not restarted 10s after kill -9; log:\n%s", logs.String())
	}
	took := time.Since(killed)
	pid, restarts, last := s.status()
	if pid == 0 || pid == first || restarts != 1 {
		t.Fatalf("after restart: pid %d (was %d), restarts %d; want a new pid and 1 restart", pid, first, restarts)
	}
	if _, ok := ProcessStart(pid); !ok {
		t.Errorf("restarted pid %d does not run", pid)
	}
	if took < minBackoff {
		t.Errorf("restarted %s after the kill, before the %s back-off", took, minBackoff)
	}
	if !strings.Contains(last, "signal: killed") {
		t.Errorf("last exit = %q, want the SIGKILL", last)
	}
	for _, want := range []string{"control-plane process exited; restarting", "process=sleeper", "control-plane process restarted", "restarts=1"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "sleeper.log")); !strings.Contains(string(b), "--- weft-lab: restart 1") {
		t.Errorf("sleeper.log does not mark the restart: %q", b)
	}

	s.stop(time.Second)
	if _, ok := ProcessStart(pid); ok {
		t.Errorf("pid %d still runs after stop", pid)
	}
	time.Sleep(minBackoff + 500*time.Millisecond)
	if p, n, _ := s.status(); n != 1 {
		t.Errorf("restarted after stop: pid %d, restarts %d", p, n)
	}
	if !s.stopped() {
		t.Error("stopped() false after stop")
	}
}

// TestSupervisedBacksOff: a process that exits at once is restarted with a growing
// back-off, not in a tight loop.
func TestSupervisedBacksOff(t *testing.T) {
	dir := t.TempDir()
	var logs syncbuf.Buffer
	t0 := time.Now()
	s, err := supervise("crasher", "/bin/false", nil, dir, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop(time.Second)
	for {
		if _, n, _ := s.status(); n >= 2 {
			break
		}
		if time.Since(t0) > 20*time.Second {
			t.Fatalf("fewer than 2 restarts after 20s:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The back-offs so far were 1s and 2s; the next one is 4s.
	if took := time.Since(t0); took < 3*minBackoff {
		t.Errorf("2 restarts after %s, want at least 3s of back-off", took)
	}
	time.Sleep(3 * minBackoff)
	s.stop(time.Second)
	if _, n, last := s.status(); n != 2 || !strings.Contains(last, "exit status 1") {
		t.Errorf("%d restarts (last exit %q), want 2 during the 4s back-off", n, last)
	}
	for _, want := range []string{"backoff=1s", "backoff=2s"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}
