package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
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

// Restart back-off of a supervised process: the first restart waits minBackoff, each
// further one twice as long up to maxBackoff; a run that lasted resetAfter starts the
// count again (a kubelet does the same for a static pod, with longer times).
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
	resetAfter = time.Minute
)

// supervised keeps one control-plane binary running the way a kubelet keeps a static
// pod: when it exits, for whatever reason, it is started again with the same arguments
// after a back-off; every exit and restart is logged and counted. Only stop ends it.
type supervised struct {
	name, bin string
	args      []string
	logDir    string
	log       *slog.Logger
	started   func() // called after every restart (the control plane records the pids)

	mu       sync.Mutex
	run      *process // the current run; nil while waiting to restart after a failed start
	restarts int
	lastExit string // why the previous run ended

	stopc chan struct{} // closed by stop
	done  chan struct{} // closed when the restart loop has ended
}

// supervise starts bin (an error here is returned, not retried: the binary or its
// log cannot be used) and keeps it running until stop.
func supervise(name, bin string, args []string, logDir string, log *slog.Logger, started func()) (*supervised, error) {
	p, err := startProcess(name, bin, args, logDir)
	if err != nil {
		return nil, err
	}
	s := &supervised{
		name: name, bin: bin, args: args, logDir: logDir, log: log, started: started,
		run: p, stopc: make(chan struct{}), done: make(chan struct{}),
	}
	go s.loop(p)
	return s, nil
}

func (s *supervised) loop(p *process) {
	defer close(s.done)
	backoff := minBackoff
	for {
		t0 := time.Now()
		if p != nil {
			select {
			case <-s.stopc:
				return
			case <-p.done:
			}
			if time.Since(t0) >= resetAfter {
				backoff = minBackoff
			}
		}
		s.mu.Lock()
		if p != nil {
			s.lastExit = fmt.Sprintf("pid %d exited after %s: %v", p.cmd.Process.Pid, time.Since(t0).Round(time.Millisecond), p.err)
			s.run = nil
		}
		why, n := s.lastExit, s.restarts+1
		s.mu.Unlock()
		s.log.Warn("control-plane process exited; restarting", "process", s.name, "exit", why, "restart", n, "backoff", backoff.String())
		select {
		case <-s.stopc:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
		appendLog(s.logDir, s.name, fmt.Sprintf("--- weft-lab: restart %d (%s)", n, why))
		np, err := startProcess(s.name, s.bin, s.args, s.logDir)
		s.mu.Lock()
		s.restarts = n
		if err != nil {
			s.lastExit = err.Error()
		}
		s.run = np
		s.mu.Unlock()
		if err != nil {
			p = nil
			continue
		}
		p = np
		s.log.Info("control-plane process restarted", "process", s.name, "pid", np.cmd.Process.Pid, "restarts", n)
		if s.started != nil {
			s.started()
		}
	}
}

// current is the running process, or nil between an exit and the restart.
func (s *supervised) current() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run
}

// status returns the pid of the current run (0 if none), the restart count and why the
// last run ended.
func (s *supervised) status() (pid, restarts int, lastExit string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.run != nil {
		pid = s.run.cmd.Process.Pid
	}
	return pid, s.restarts, s.lastExit
}

// stop ends the restart loop, then the current run (SIGTERM, SIGKILL after grace).
func (s *supervised) stop(grace time.Duration) {
	select {
	case <-s.stopc:
	default:
		close(s.stopc)
	}
	<-s.done
	if p := s.current(); p != nil {
		p.stop(grace)
	}
}

// stopped reports whether stop was called.
func (s *supervised) stopped() bool {
	select {
	case <-s.stopc:
		return true
	default:
		return false
	}
}

// appendLog adds one line to logDir/name.log, so a process's own log shows where a
// restart begins.
func appendLog(logDir, name, line string) {
	f, err := os.OpenFile(filepath.Join(logDir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = fmt.Fprintln(f, line)
}

// PIDRecord is what pids.json holds for each control-plane process, so a later run can
// end the processes of a crashed lab (and only those: pid and start time must match),
// and `weft-lab status` and tests can find them. The supervisor rewrites the file
// after every restart.
type PIDRecord struct {
	Name     string `json:"name"`
	PID      int    `json:"pid"`
	Start    string `json:"start"` // /proc/<pid>/stat start time
	Restarts int    `json:"restarts,omitempty"`
	LastExit string `json:"lastExit,omitempty"`
}

const pidsFile = "pids.json"

func writePIDs(stateDir string, recs []PIDRecord) error {
	for i := range recs {
		recs[i].Start, _ = ProcessStart(recs[i].PID)
	}
	b, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(stateDir, pidsFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(stateDir, pidsFile))
}

// ReadPIDs returns the control-plane processes recorded in stateDir (the lab's
// .cache/lab/cp); a missing record gives os.ErrNotExist.
func ReadPIDs(stateDir string) ([]PIDRecord, error) {
	b, err := os.ReadFile(filepath.Join(stateDir, pidsFile))
	if err != nil {
		return nil, err
	}
	var recs []PIDRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return nil, fmt.Errorf("parse %s: %w", pidsFile, err)
	}
	return recs, nil
}

// Running reports whether the recorded process still runs (same pid and start time,
// not a zombie).
func (r PIDRecord) Running() bool {
	start, ok := ProcessStart(r.PID)
	return ok && r.Start != "" && start == r.Start
}

// KillStale ends the control-plane processes a previous lab recorded in stateDir that
// are still running the recorded executable (SIGKILL: the lab is being thrown away), and
// waits until they are gone. A missing record is not an error.
func KillStale(stateDir string) error {
	recs, err := ReadPIDs(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pid record: %w", err)
	}
	var alive []PIDRecord
	for _, r := range recs {
		if r.Running() {
			_ = syscall.Kill(r.PID, syscall.SIGKILL)
			alive = append(alive, r)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range alive {
		for r.Running() {
			if time.Now().After(deadline) {
				return fmt.Errorf("stale %s (pid %d) did not exit after SIGKILL", r.Name, r.PID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return os.Remove(filepath.Join(stateDir, pidsFile))
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
