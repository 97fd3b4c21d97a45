package main

import (
	"errors"
	"log/slog"
	"os"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/memlimit"
)

// setMemoryLimit sets the Go memory limit to 90% of the controller's
// cgroup memory limit, unless GOMEMLIMIT is set (issue #17). The
// controller's heap is mostly informer caches that live for good; without
// a limit the collector lets garbage grow to as much again (GOGC=100)
// before it runs, which can take a container that holds the live heap
// over its limit.
func setMemoryLimit(log *slog.Logger) {
	n, err := memlimit.Set(memlimit.Config{Root: "/sys/fs/cgroup", ProcSelfCgroup: "/proc/self/cgroup", GOMEMLIMIT: os.Getenv("GOMEMLIMIT")})
	switch {
	case errors.Is(err, memlimit.ErrNoLimit):
		log.Info("no cgroup memory limit: Go memory limit not set")
	case err != nil:
		log.Warn("Go memory limit not set from the cgroup", logkey.Error, err)
	case n > 0:
		log.Info("Go memory limit set from the cgroup", logkey.Bytes, n)
	}
}
