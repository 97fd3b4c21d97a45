package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is one control-plane binary run as a child of the lab supervisor.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid once done is closed
}

// startProcess runs bin with args, stdout and stderr appended to logDir/name.log. The
// child gets SIGKILL if the supervisor dies (Pdeathsig), and its own process group.
func startProcess(name, bin string, args []string, logDir string) (*process, error) {
	logFile := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := spawn(cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// spawnReqs feeds the spawner thread.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

// spawn starts cmd from one OS thread that never exits. Pdeathsig fires when the
// thread that forked the child exits, not the process: Go may end a thread (a goroutine
// that locked it, e.g. to enter a network namespace, returns without unlocking), which
// would SIGKILL a control-plane process started from it.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: this thread lives as long as the process
			for r := range spawnReqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnReqs <- spawnReq{cmd: cmd, done: done}
	return <-done
}

// exited reports whether the process has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, fmt.Errorf("%s exited: %v (see %s.log)", p.name, p.err, p.name)
	default:
		return false, nil
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs and waits.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// pidRecord is what pids.json holds for each control-plane process, so a later run can
// end the processes of a crashed lab (and only those: pid and start time must match).
type pidRecord struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start string `json:"start"` // /proc/<pid>/stat start time
}

const pidsFile = "pids.json"

func writePIDs(stateDir string, procs []*process) error {
	recs := make([]pidRecord, 0, len(procs))
	for _, p := range procs {
		start, _ := ProcessStart(p.cmd.Process.Pid)
		recs = append(recs, pidRecord{Name: p.name, PID: p.cmd.Process.Pid, Start: start})
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(stateDir, pidsFile), b, 0o644)
}

// KillStale ends the control-plane processes a previous lab recorded in stateDir that
// are still running the recorded executable (SIGKILL: the lab is being thrown away), and
// waits until they are gone. A missing record is not an error.
func KillStale(stateDir string) error {
	b, err := os.ReadFile(filepath.Join(stateDir, pidsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pid record: %w", err)
	}
	var recs []pidRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return fmt.Errorf("parse %s: %w", pidsFile, err)
	}
	var alive []pidRecord
	for _, r := range recs {
		if runs(r) {
			_ = syscall.Kill(r.PID, syscall.SIGKILL)
			alive = append(alive, r)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range alive {
		for runs(r) {
			if time.Now().After(deadline) {
				return fmt.Errorf("stale %s (pid %d) did not exit after SIGKILL", r.Name, r.PID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return os.Remove(filepath.Join(stateDir, pidsFile))
}

// runs reports whether the recorded process still runs (a zombie has exited).
func runs(r pidRecord) bool {
	start, ok := ProcessStart(r.PID)
	return ok && r.Start != "" && start == r.Start
}

// ProcessStart returns the start time of pid (field 22 of /proc/<pid>/stat, clock ticks
// since boot) and whether it still runs. Together with the pid it identifies a process
// across pid reuse, and unlike /proc/<pid>/exe it stays readable until the process is
// gone: an exiting process drops its memory (and exe link) before it closes its files.
func ProcessStart(pid int) (start string, running bool) {
	if pid <= 0 {
		return "", false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", false
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return "", false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), f[19] field 22 (starttime).
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return "", false
	}
	return f[19], true
}
