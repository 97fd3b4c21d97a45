package handoff

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain runs the test binary as the helper of
// TestPrivilegedOtherUserRefused when HANDOFF_PATH is set: it asks the
// holder there for its state and prints what it got.
func TestMain(m *testing.M) {
	if path := os.Getenv("HANDOFF_PATH"); path != "" {
		fmt.Println(askState(path))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func askState(path string) string {
	s, err := Dial(context.Background(), path)
	if err != nil {
		return fmt.Sprintf("RESULT dial: %v", err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := s.State(ctx)
	if errors.Is(err, ErrHolderGone) {
		return "RESULT refused"
	}
	return fmt.Sprintf("RESULT got %d records, err %v", len(recs), err)
}

// The handoff socket hands out listeners and keys: a process of another
// user that reaches it (the file mode is opened up here on purpose) gets
// nothing.
func TestPrivilegedOtherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a helper as another user")
	}
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary, where the other user can run it.
	bin := filepath.Join(dir, "helper.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	src.Close()
	dst.Close()

	path := filepath.Join(dir, "handoff.sock")
	ls := bind(t, "outbound")
	serve(t, "A", ls)
	h, err := Hold(path, Offer{Listeners: ls, State: func() ([][]byte, error) { return [][]byte{[]byte("secret")}, nil }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	run := func(uid uint32) string {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "HANDOFF_PATH="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as uid %d: %v\n%s", uid, err, out)
		}
		return string(out)
	}
	if out := run(0); !strings.Contains(out, "RESULT got 1 records, err <nil>") {
		t.Fatalf("the same user should get the state:\n%s", out)
	}
	if out := run(65534); !strings.Contains(out, "RESULT refused") {
		t.Fatalf("another user should be refused:\n%s", out)
	}
}
