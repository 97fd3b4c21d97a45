package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf/link"
)

// Cleanup detaches and unpins everything of cfg.Node's datapath (the
// `weft-agent cleanup` path). Other nodes' objects are not touched. It is
// idempotent; a running agent of that node should be stopped first (its
// open handles keep the objects alive until it exits).
func Cleanup(cfg Config) error {
	cfg = cfg.withDefaults()
	if err := validateNode(cfg.Node); err != nil {
		return err
	}
	dir := cfg.pinDir()
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pin dir %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if strings.HasPrefix(e.Name(), "link_") {
			if l, err := link.LoadPinnedLink(path, nil); err == nil {
				if err := l.Detach(); err != nil && !errors.Is(err, link.ErrNotSupported) {
					errs = append(errs, fmt.Errorf("detach %s: %w", path, err))
				}
				l.Close()
			}
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin %s: %w", path, err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
	}
	_ = os.Remove(cfg.PinRoot) // only succeeds when no other node is left
	return errors.Join(errs...)
}
