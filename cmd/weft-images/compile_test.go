package main

import (
	"context"
	"debug/elf"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestGoBuild(t *testing.T) {
	tests := []struct {
		name string
		p    v1.Platform
		cmds []command
		args []string
		env  []string
	}{
		{"amd64 controller", amd64, []command{controllerCmd},
			[]string{"build", "-o", "out/", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -X main.version=v1", "./cmd/weft-controller"},
			[]string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOARM64=v8.0"}},
		{"arm64 agent and echo", arm64, []command{agentCmd, echoCmd},
			[]string{"build", "-o", "out/", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -X main.version=v1", "./cmd/weft-agent", "./test/echo/cmd/weft-echo"},
			[]string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64", "GOAMD64=v1", "GOARM64=v8.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := goBuildArgs("out", "v1", tt.cmds); !slices.Equal(got, tt.args) {
				t.Errorf("args %q, want %q", got, tt.args)
			}
			if got := goBuildEnv(tt.p); !slices.Equal(got, tt.env) {
				t.Errorf("env %q, want %q", got, tt.env)
			}
		})
	}
}

// TestRealControllerReproducible builds the real weft-controller for two
// platforms twice, from scratch directories: same index digest, static
// stripped binaries of the right architecture.
func TestRealControllerReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds weft-controller for two platforms twice: minutes with a cold build cache")
	}
	platforms := []v1.Platform{amd64, arm64}
	specs := imageSpecs(false)[:1]
	var digests []string
	for range 2 {
		bins, err := compile(context.Background(), "../..", t.TempDir(), "dev", platforms, commands(specs))
		if err != nil {
			t.Fatal(err)
		}
		checkELF(t, bins[amd64.String()]["weft-controller"], elf.EM_X86_64)
		checkELF(t, bins[arm64.String()]["weft-controller"], elf.EM_AARCH64)
		images, err := assemble(specs, platforms, bins, testSource)
		if err != nil {
			t.Fatal(err)
		}
		d, err := images[0].Index.Digest()
		if err != nil {
			t.Fatal(err)
		}
		digests = append(digests, d.String())
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of weft-controller: %s and %s", digests[0], digests[1])
	}
}

// checkELF fails unless path is a static, stripped binary for machine.
func checkELF(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s: machine %v, want %v", path, f.Machine, machine)
	}
	for _, name := range []string{".interp", ".dynamic", ".symtab"} {
		if f.Section(name) != nil {
			t.Errorf("%s: has %s (want static and stripped)", path, name)
		}
	}
}
