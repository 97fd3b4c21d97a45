package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// ErrNoSnapshot is returned by Load when nothing was saved yet.
var ErrNoSnapshot = errors.New("no stored policy snapshot")

// Store keeps the last good snapshot in one file, replaced atomically.
type Store struct {
	Path string
}

// Save writes snap durably: a temporary file, fsync, rename.
func (s *Store) Save(snap *weftv1.PolicySnapshot) error {
	b, err := proto.Marshal(snap)
	if err != nil {
		return fmt.Errorf("encode snapshot: %w", err)
	}
	dir := filepath.Dir(s.Path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".policy-*")
	if err != nil {
		return fmt.Errorf("create temporary snapshot: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, s.Path); err != nil {
		return fmt.Errorf("replace %s: %w", s.Path, err)
	}
	return nil
}

// Load reads the stored snapshot.
func (s *Store) Load() (*weftv1.PolicySnapshot, error) {
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoSnapshot
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", s.Path, err)
	}
	snap := &weftv1.PolicySnapshot{}
	if err := proto.Unmarshal(b, snap); err != nil {
		return nil, fmt.Errorf("decode %s: %w", s.Path, err)
	}
	return snap, nil
}
