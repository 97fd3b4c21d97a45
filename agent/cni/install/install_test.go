package install

import (
	"os"
	"path/filepath"
	"testing"
)

// TestInstallUninstall runs the I/O side on a temporary node: a .conf
// primary config becomes a .conflist chaining weft-cni, a second install
// changes nothing, uninstall removes the entry and the binary.
func TestInstallUninstall(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{ConfDir: filepath.Join(dir, "net.d"), BinDir: filepath.Join(dir, "bin"), Plugin: filepath.Join(dir, "weft-cni"), Entry: entry}
	for _, d := range []string{cfg.ConfDir, cfg.BinDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Install(cfg); err == nil {
		t.Fatal("Install without a plugin binary or a primary config succeeded")
	}
	if err := os.WriteFile(cfg.Plugin, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile("testdata/insert-conf.in.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.ConfDir, "10-bridge.conf"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	other := []byte(`{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"ptp"}]}`)
	if err := os.WriteFile(filepath.Join(cfg.ConfDir, "20-other.conflist"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	changed, err := Install(cfg)
	if err != nil || !changed {
		t.Fatalf("Install: changed=%v %v", changed, err)
	}
	want, _ := os.ReadFile("testdata/insert-conf.out.json")
	got, err := os.ReadFile(filepath.Join(cfg.ConfDir, "10-bridge.conflist"))
	if err != nil || string(got) != string(want) {
		t.Fatalf("10-bridge.conflist = %s (%v), want %s", got, err, want)
	}
	if _, err := os.Stat(filepath.Join(cfg.ConfDir, "10-bridge.conf")); err == nil {
		t.Error("the converted .conf is still there (the runtime would read it first)")
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.ConfDir, "20-other.conflist")); string(b) != string(other) {
		t.Error("a config that is not the primary one was changed")
	}
	if b, err := os.ReadFile(filepath.Join(cfg.BinDir, "weft-cni")); err != nil || string(b) != "binary" {
		t.Errorf("plugin binary: %q %v", b, err)
	}
	if changed, err := Install(cfg); err != nil || changed {
		t.Errorf("second Install: changed=%v %v", changed, err)
	}
	if err := Uninstall(cfg); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(cfg.ConfDir, "10-bridge.conflist")); Has(b) {
		t.Errorf("weft-cni still chained after Uninstall: %s", b)
	}
	if _, err := os.Stat(filepath.Join(cfg.BinDir, "weft-cni")); err == nil {
		t.Error("plugin binary left after Uninstall")
	}
	if err := Uninstall(cfg); err != nil {
		t.Errorf("second Uninstall: %v", err)
	}
	left, _ := filepath.Glob(filepath.Join(cfg.ConfDir, ".*weft-tmp*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
