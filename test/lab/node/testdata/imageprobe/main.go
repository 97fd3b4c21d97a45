// Command imageprobe is the program of the test images of the lab node's
// image containers (built statically by the tests). It reports what it
// sees from inside its container:
//
//	imageprobe serve          print the report as one JSON line, then sleep
//	imageprobe report         print the report and exit
//	imageprobe check FILE...  exit 0 when every FILE can be read
//
// PROBE_FILES (colon-separated paths) lists the files whose content the
// report holds; PROBE_WRITE lists paths it tries to write.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	mode := "serve"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "check":
		for _, f := range os.Args[2:] {
			if _, err := os.ReadFile(f); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
		}
	case "report":
		emit()
	case "serve":
		emit()
		for {
			time.Sleep(time.Hour)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", mode)
		os.Exit(2)
	}
}

func emit() {
	if err := json.NewEncoder(os.Stdout).Encode(report()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// result is what the tests check.
type result struct {
	UID, GID int
	Groups   []int
	Cwd      string
	Hostname string
	Status   map[string]string // CapEff, CapPrm, CapBnd, CapInh, CapAmb, NoNewPrivs of /proc/self/status
	Files    map[string]string // content, or "error: ..."
	Writes   map[string]string // "ok" or the error
	Env      []string
	Dev      []string
	HostPID1 bool // /proc/1 exists: the host's PIDs are visible
}

func report() result {
	r := result{UID: os.Getuid(), GID: os.Getgid(), Files: map[string]string{}, Writes: map[string]string{}, Status: map[string]string{}, Env: os.Environ()}
	r.Groups, _ = os.Getgroups()
	r.Cwd, _ = os.Getwd()
	r.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (strings.HasPrefix(k, "Cap") || k == "NoNewPrivs") {
				r.Status[k] = strings.TrimSpace(v)
			}
		}
	}
	for _, f := range split(os.Getenv("PROBE_FILES")) {
		b, err := os.ReadFile(f)
		if err != nil {
			r.Files[f] = "error: " + err.Error()
		} else {
			r.Files[f] = string(b)
		}
	}
	for _, f := range split(os.Getenv("PROBE_WRITE")) {
		r.Writes[f] = "ok"
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			r.Writes[f] = err.Error()
		}
	}
	if entries, err := os.ReadDir("/dev"); err == nil {
		for _, e := range entries {
			r.Dev = append(r.Dev, e.Name())
		}
	}
	_, err := os.Stat("/proc/1")
	r.HostPID1 = err == nil
	return r
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ":")
}
