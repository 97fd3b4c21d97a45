package memlimit

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"
)

// fakeCgroup writes a cgroup tree under a temporary root: memory.max per
// directory ("" leaves the file out), and a /proc/self/cgroup file naming
// leaf.
func fakeCgroup(t *testing.T, leaf string, max map[string]string) Config {
	t.Helper()
	root := t.TempDir()
	for dir, v := range max {
		d := filepath.Join(root, dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if v != "" {
			if err := os.WriteFile(filepath.Join(d, "memory.max"), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	proc := filepath.Join(t.TempDir(), "cgroup")
	os.WriteFile(proc, []byte("0::"+leaf+"\n"), 0o644)
	return Config{Root: root, ProcSelfCgroup: proc}
}

func TestSet(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	leaf := "/kubepods/burstable/pod1/agent"
	for _, tc := range []struct {
		name string
		max  map[string]string
		env  string
		want int64
		err  error
	}{
		{"container limit", map[string]string{leaf: "536870912", "/kubepods/burstable/pod1": "max", "/": ""}, "", 483183820, nil},
		{"pod limit smaller", map[string]string{leaf: "536870912", "/kubepods/burstable/pod1": "268435456"}, "", 241591910, nil},
		{"no limit", map[string]string{leaf: "max", "/kubepods": "max"}, "", 0, ErrNoLimit},
		{"GOMEMLIMIT set", map[string]string{leaf: "536870912"}, "300MiB", 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetMemoryLimit(math.MaxInt64)
			cfg := fakeCgroup(t, leaf, tc.max)
			cfg.GOMEMLIMIT = tc.env
			got, err := Set(cfg)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Fatalf("Set = %d, %v; want %d, %v", got, err, tc.want, tc.err)
			}
			want := tc.want
			if want == 0 {
				want = math.MaxInt64 // untouched
			}
			if cur := debug.SetMemoryLimit(-1); cur != want {
				t.Fatalf("runtime limit %d, want %d", cur, want)
			}
		})
	}
}

func TestOwnCgroup(t *testing.T) {
	p, err := OwnCgroup([]byte("12:memory:/old\n0::/kubepods/pod1/c\n"))
	if err != nil || p != "/kubepods/pod1/c" {
		t.Fatalf("%q %v", p, err)
	}
	if _, err := OwnCgroup([]byte("4:cpu:/x\n")); err == nil {
		t.Fatal("cgroup v1 only: want an error")
	}
}
