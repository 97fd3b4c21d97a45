package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// binaries maps a platform ("linux/arm64") and a command name to a built file.
type binaries map[string]map[string]string

// compile cross-compiles static commands for each platform into dir/<os>_<arch>/.
func compile(ctx context.Context, src, dir, version string, platforms []v1.Platform, cmds []command) (binaries, error) {
	bins := binaries{}
	for _, p := range platforms {
		out := filepath.Join(dir, p.OS+"_"+p.Architecture)
		cmd := exec.CommandContext(ctx, "go", goBuildArgs(out, version, cmds)...)
		cmd.Dir = src
		cmd.Env = append(os.Environ(), goBuildEnv(p)...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("go build for %s: %w", p.String(), err)
		}
		bins[p.String()] = map[string]string{}
		for _, c := range cmds {
			bins[p.String()][c.Name] = filepath.Join(out, c.Name)
		}
	}
	return bins, nil
}

// goBuildArgs builds reproducible, stripped binaries: no paths of this
// machine, no VCS stamp (the image labels carry the revision), and the
// release version in main.version (weft-controller and weft-agent log it).
func goBuildArgs(out, version string, cmds []command) []string {
	args := []string{"build", "-o", out + string(filepath.Separator),
		"-trimpath", "-buildvcs=false", "-ldflags=-s -w -X main.version=" + version}
	for _, c := range cmds {
		args = append(args, c.Package)
	}
	return args
}

// goBuildEnv targets p with the baseline instruction set, whatever the
// caller's GOAMD64 or GOARM64, so the images run on every CPU of the arch.
func goBuildEnv(p v1.Platform) []string {
	return []string{"CGO_ENABLED=0", "GOOS=" + p.OS, "GOARCH=" + p.Architecture,
		"GOAMD64=v1", "GOARM64=v8.0"}
}
