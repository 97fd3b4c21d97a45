package agent

import (
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// sessionKey returns the node's session-cookie key, kept in path so that
// sticky sessions survive an agent restart. A missing key is created; a
// malformed one is an error (never silently replaced, which would break
// every session on the node).
func sessionKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != 32 {
			return nil, fmt.Errorf("session key %s: %d bytes, want 32 (remove it to generate a new one)", path, len(b))
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read session key: %w", err)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate session key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("session key dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return sessionKey(path) // another agent process won the race
	}
	if err != nil {
		return nil, fmt.Errorf("create session key: %w", err)
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("write session key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write session key: %w", err)
	}
	return key, nil
}
