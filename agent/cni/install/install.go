package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/weft-mesh/weft/api/logkey"
)

// Config says where the node's CNI lives and what to install.
type Config struct {
	// ConfDir is the node's CNI config directory (/etc/cni/net.d).
	ConfDir string
	// BinDir is the node's CNI plugin directory (/opt/cni/bin).
	BinDir string
	// Plugin is the weft-cni binary to copy into BinDir.
	Plugin string
	// Entry is weft-cni's entry in the conflist (type, node, socket, ...).
	Entry map[string]any
	// Interval between checks that the entry is still there; default 2s.
	Interval time.Duration
	Logger   *slog.Logger
}

// ErrNoPrimary says the config directory holds no CNI config to chain into
// (the primary CNI has not written it yet).
var ErrNoPrimary = errors.New("no primary CNI config")

// primary is the config file the runtime uses: the first .conf, .conflist
// or .json file in name order (libcni.ConfFiles, as containerd and CRI-O).
func primary(dir string) (string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return "", fmt.Errorf("read CNI config dir %s: %w", dir, err)
	}
	if len(files) == 0 {
		return "", fmt.Errorf("%w in %s", ErrNoPrimary, dir)
	}
	return files[0], nil
}

// Install copies the plugin and chains the entry into the primary config.
// It is idempotent; changed says whether the config file was rewritten.
func Install(cfg Config) (changed bool, err error) {
	if err := copyPlugin(cfg.Plugin, filepath.Join(cfg.BinDir, PluginType)); err != nil {
		return false, err
	}
	path, err := primary(cfg.ConfDir)
	if err != nil {
		return false, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	out, changed, err := Insert(data, cfg.Entry)
	if err != nil {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	if !changed {
		return false, nil
	}
	target := path
	if filepath.Ext(path) == ".conf" || filepath.Ext(path) == ".json" {
		if !strings.Contains(string(data), `"plugins"`) {
			// A single-plugin config becomes a list, under a .conflist
			// name; the .conf goes once the list is in place.
			target = strings.TrimSuffix(path, filepath.Ext(path)) + ".conflist"
		}
	}
	if err := writeAtomic(target, out, 0o644); err != nil {
		return false, err
	}
	if target != path {
		if err := os.Remove(path); err != nil {
			return true, fmt.Errorf("remove converted %s: %w", path, err)
		}
	}
	return true, nil
}

// Uninstall removes the entry from every config of the directory that has
// one and removes the plugin binary. Missing files are not errors.
func Uninstall(cfg Config) error {
	var errs []error
	files, err := libcni.ConfFiles(cfg.ConfDir, []string{".conf", ".conflist", ".json"})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		out, changed, err := Remove(data)
		if err != nil || !changed {
			continue
		}
		errs = append(errs, writeAtomic(f, out, 0o644))
	}
	if err := os.Remove(filepath.Join(cfg.BinDir, PluginType)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Keep installs, then checks every Interval until ctx ends and installs
// again whenever the entry or the binary went (a primary CNI that rewrote
// its config, a config written only after the agent started).
func Keep(ctx context.Context, cfg Config) {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	var lastErr string
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		changed, err := Install(cfg)
		switch {
		case err != nil && err.Error() != lastErr:
			log.Warn("weft-cni not chained: new pods on this node cannot start until it is", logkey.Path, cfg.ConfDir, logkey.Error, err)
			lastErr = err.Error()
		case err == nil && changed:
			log.Info("weft-cni chained into the node's CNI config", logkey.Path, cfg.ConfDir)
			lastErr = ""
		case err == nil:
			lastErr = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// copyPlugin installs src at dst atomically, unless dst has the same bytes.
func copyPlugin(src, dst string) error {
	want, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read weft-cni binary: %w", err)
	}
	if have, err := os.ReadFile(dst); err == nil && string(have) == string(want) {
		return nil
	}
	return writeAtomic(dst, want, 0o755)
}

// writeAtomic writes data to a temporary file in path's directory and
// renames it over path, so a runtime never reads half a file.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".weft-tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, strings.NewReader(string(data))); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
