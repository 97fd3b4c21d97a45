package node

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestKeyToPaths(t *testing.T) {
	data := map[string][]byte{"ca.crt": []byte("PEM"), "other": []byte("x")}
	all, err := keyToPaths(data, nil, nil)
	if err != nil || len(all) != 2 || string(all["ca.crt"]) != "PEM" {
		t.Errorf("all keys: %v, %v", all, err)
	}
	some, err := keyToPaths(data, []corev1.KeyToPath{{Key: "ca.crt", Path: "certs/ca.pem"}}, nil)
	if err != nil || len(some) != 1 || string(some["certs/ca.pem"]) != "PEM" {
		t.Errorf("items: %v, %v", some, err)
	}
	if _, err := keyToPaths(data, []corev1.KeyToPath{{Key: "missing", Path: "m"}}, nil); err == nil {
		t.Error("missing key accepted")
	}
	opt := true
	if m, err := keyToPaths(data, []corev1.KeyToPath{{Key: "missing", Path: "m"}}, &opt); err != nil || len(m) != 0 {
		t.Errorf("optional missing key: %v, %v", m, err)
	}
}

func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	if err := writeFiles(dir, map[string][]byte{"token": []byte("a"), "sub/ca.crt": []byte("b"), "stale": []byte("c")}); err != nil {
		t.Fatal(err)
	}
	if err := writeFiles(dir, map[string][]byte{"token": []byte("a2"), "sub/ca.crt": []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "token")); string(b) != "a2" {
		t.Errorf("token = %q", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); err == nil {
		t.Error("a file no longer listed was kept")
	}
	if err := writeFiles(dir, map[string][]byte{"../escape": nil}); err == nil {
		t.Error("a path escaping the volume was accepted")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); err == nil {
		t.Error("escaping file written")
	}
}

func TestTokenDue(t *testing.T) {
	now := time.Now()
	tok := token{value: "t", issued: now, expires: now.Add(time.Hour)}
	if tok.due(now.Add(47 * time.Minute)) {
		t.Error("due before 80% of the lifetime")
	}
	if !tok.due(now.Add(49 * time.Minute)) {
		t.Error("not due after 80% of the lifetime")
	}
	if !(token{}).due(now) {
		t.Error("an empty token is not due")
	}
}
