// Package memlimit sets the Go runtime's soft memory limit from the
// cgroup v2 memory limit of the process's own cgroup, so that the garbage
// collector works harder as a process (the agent, the controller) nears
// its container limit instead of the kernel killing it there.
package memlimit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/weft-mesh/weft/api/logkey"
)

// DefaultFraction is the share of the cgroup limit the Go limit is set to:
// the rest is for what the runtime does not count (stacks of blocked
// threads, cgo, BPF maps charged to the cgroup) and the page cache.
const DefaultFraction = 0.9

// ErrNoLimit: the cgroup and its ancestors set no memory limit.
var ErrNoLimit = errors.New("no cgroup memory limit")

// OwnCgroup returns the cgroup v2 path ("0::<path>" line) of
// /proc/self/cgroup's contents.
func OwnCgroup(procSelfCgroup []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(procSelfCgroup))
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
}

// Limit returns the smallest memory.max of the cgroup at path (relative
// to the cgroup2 mount root) and of its ancestors; ErrNoLimit when every
// one is "max" or absent.
func Limit(root, path string) (int64, error) {
	limit := int64(-1)
	for dir := filepath.Join(root, filepath.Clean("/"+path)); ; dir = filepath.Dir(dir) {
		b, err := os.ReadFile(filepath.Join(dir, "memory.max"))
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return 0, fmt.Errorf("read memory limit: %w", err)
		default:
			if v := strings.TrimSpace(string(b)); v != "max" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("parse %s/memory.max %q: %w", dir, v, err)
				}
				if limit < 0 || n < limit {
					limit = n
				}
			}
		}
		if len(dir) <= len(filepath.Clean(root)) {
			break
		}
	}
	if limit < 0 {
		return 0, ErrNoLimit
	}
	return limit, nil
}

// Config says where to look and how much to take.
type Config struct {
	// Root is the cgroup2 mount (/sys/fs/cgroup); ProcSelfCgroup the
	// process's cgroup file (/proc/self/cgroup).
	Root, ProcSelfCgroup string
	// GOMEMLIMIT is the environment variable's value: when set, the
	// runtime already applied it and nothing is changed.
	GOMEMLIMIT string
	// Fraction of the cgroup limit; DefaultFraction when zero.
	Fraction float64
}

// Set sets the Go memory limit to Fraction of the cgroup limit and returns
// it; 0 and no error when GOMEMLIMIT is set, ErrNoLimit when the cgroup
// has no limit.
func Set(cfg Config) (int64, error) {
	if cfg.GOMEMLIMIT != "" {
		return 0, nil
	}
	if cfg.Fraction <= 0 || cfg.Fraction > 1 {
		cfg.Fraction = DefaultFraction
	}
	b, err := os.ReadFile(cfg.ProcSelfCgroup)
	if err != nil {
		return 0, fmt.Errorf("own cgroup: %w", err)
	}
	path, err := OwnCgroup(b)
	if err != nil {
		return 0, err
	}
	limit, err := Limit(cfg.Root, path)
	if err != nil {
		return 0, err
	}
	n := int64(float64(limit) * cfg.Fraction)
	debug.SetMemoryLimit(n)
	return n, nil
}

// Apply is what a weft binary calls at start: Set with this host's cgroup
// paths, unless gomemlimit (the GOMEMLIMIT the caller read) is set, and a
// log line of what it did.
func Apply(log *slog.Logger, gomemlimit string) {
	n, err := Set(Config{Root: "/sys/fs/cgroup", ProcSelfCgroup: "/proc/self/cgroup", GOMEMLIMIT: gomemlimit})
	switch {
	case errors.Is(err, ErrNoLimit):
		log.Info("no cgroup memory limit: Go memory limit not set")
	case err != nil:
		log.Warn("Go memory limit not set from the cgroup", logkey.Error, err)
	case n > 0:
		log.Info("Go memory limit set from the cgroup", logkey.Bytes, n)
	}
}
