package main

import (
	"archive/tar"
	"errors"
	"io"
	"testing"
	"time"
)

func TestBaseLayer(t *testing.T) {
	epoch := time.Unix(1700000000, 0).UTC()
	l, err := baseLayer(source{Epoch: epoch})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name     string
		typ      byte
		mode     int64
		uid, gid int
		data     string
	}{
		{"etc/", tar.TypeDir, 0o755, 0, 0, ""},
		{"etc/group", tar.TypeReg, 0o644, 0, 0, "root:x:0:\nnonroot:x:65532:\n"},
		{"etc/nsswitch.conf", tar.TypeReg, 0o644, 0, 0, "hosts: files dns\n"},
		{"etc/passwd", tar.TypeReg, 0o644, 0, 0, "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"},
		{"home/", tar.TypeDir, 0o755, 0, 0, ""},
		{"home/nonroot/", tar.TypeDir, 0o700, 65532, 65532, ""},
		{"tmp/", tar.TypeDir, 0o1777, 0, 0, ""},
	}
	got := readLayer(t, l)
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		h := got[i].hdr
		if h.Name != w.name || h.Typeflag != w.typ || h.Mode != w.mode || h.Uid != w.uid || h.Gid != w.gid || got[i].data != w.data {
			t.Errorf("entry %d: %s type %c mode %o owner %d:%d %q; want %s type %c mode %o owner %d:%d %q",
				i, h.Name, h.Typeflag, h.Mode, h.Uid, h.Gid, got[i].data, w.name, w.typ, w.mode, w.uid, w.gid, w.data)
		}
		checkTimes(t, h, epoch)
	}
}

// checkTimes fails unless the only time in h is the epoch.
func checkTimes(t *testing.T, h *tar.Header, epoch time.Time) {
	t.Helper()
	if !h.ModTime.Equal(epoch) || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() || len(h.PAXRecords) != 0 {
		t.Errorf("%s: mtime %v atime %v ctime %v pax %v; want mtime %v only", h.Name, h.ModTime, h.AccessTime, h.ChangeTime, h.PAXRecords, epoch)
	}
}

type tarFile struct {
	hdr  *tar.Header
	data string
}

// readLayer lists the uncompressed tar of l.
func readLayer(t *testing.T, l interface{ Uncompressed() (io.ReadCloser, error) }) []tarFile {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var out []tarFile
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarFile{h, string(b)})
	}
}
