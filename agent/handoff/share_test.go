package handoff

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Any number of processes may share the listeners: each gets the same
// sockets, the holder is not released and keeps serving, and a take after
// the shares still works.
func TestShareReleasesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handoff.sock")
	ls := bind(t, "outbound", "inbound")
	serve(t, "A", ls)
	h := hold(t, path, ls)
	for range 2 {
		got, err := dial(t, path).Share(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		sameAddrs(t, got, ls)
		for _, l := range got {
			l.Close() // only the sharer's descriptor
		}
	}
	select {
	case <-h.Released():
		t.Fatal("a share released the holder")
	default:
	}
	if got, err := dialOnce(ls["outbound"].Addr().String()); err != nil || got != "A" {
		t.Fatalf("after two shares: %q, %v; want A still serving", got, err)
	}
	s := dial(t, path)
	taken := take(t, s)
	sameAddrs(t, taken, ls)
	if err := s.Serving(); err != nil {
		t.Fatal(err)
	}
	<-h.Released()
	if _, err := dial(t, path).Share(context.Background()); !errors.Is(err, ErrRefused) {
		t.Fatalf("share after a handoff: %v, want ErrRefused", err)
	}
	for _, l := range taken {
		l.Close()
	}
}

// A holder with KeepSocketFile leaves its file on Close: a stale file,
// which reads as ErrNoHolder.
func TestKeepSocketFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "holder.sock")
	ls := bind(t, "outbound")
	h, err := Hold(path, Offer{Listeners: ls, KeepSocketFile: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("socket file after Close: %v", err)
	}
	if _, err := Dial(context.Background(), path); !errors.Is(err, ErrNoHolder) {
		t.Fatalf("dial the left file: %v, want ErrNoHolder", err)
	}
}

// FuzzMessage: whatever a peer sends in one packet, readMessage and
// fromMessage return an error or a well-formed value and close every
// descriptor; nothing panics. Messages that writeMessage produces read
// back the same.
func FuzzMessage(f *testing.F) {
	for _, s := range []string{
		`{"op":"take"}`, `{"op":"share"}`, `{"op":"state"}`, `{"op":"serving"}`,
		`{"op":"listeners","listeners":[{"name":"outbound","addr":"10.0.0.1:15001"}]}`,
		`{"op":"record","data":"c2VjcmV0"}`, `{"op":"state","count":3}`, `{"op":"refused","reason":"x"}`,
		`{"op":"listeners","listeners":[{"name":"a"},{"name":"a"}]}`, `{`, ``, `null`, `[]`,
	} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, withFD bool) {
		a, b := seqpacketPair(t)
		var oob []byte
		if withFD {
			oob = syscall.UnixRights(int(os.Stdin.Fd()))
		}
		if len(data) > maxMessage+1 {
			data = data[:maxMessage+1]
		}
		if len(data) == 0 {
			data = []byte{0} // an empty packet reads as the peer closing
		}
		if _, _, err := a.WriteMsgUnix(data, oob, nil); err != nil {
			t.Skip(err)
		}
		m, err := readMessage(b)
		if err != nil {
			return
		}
		if ls, err := fromMessage(m); err == nil {
			if len(ls) != len(m.Listeners) {
				t.Fatalf("%d listeners from %d named", len(ls), len(m.Listeners))
			}
			for _, l := range ls {
				l.Close()
			}
		}
		// Round trip what was understood (descriptors aside).
		m.fds = nil
		if err := writeMessage(a, m, nil); err != nil {
			t.Fatal(err)
		}
		back, err := readMessage(b)
		if err != nil || back.Op != m.Op || back.Count != m.Count || back.Reason != m.Reason ||
			string(back.Data) != string(m.Data) || len(back.Listeners) != len(m.Listeners) {
			t.Fatalf("round trip of %+v: %+v, %v", m, back, err)
		}
	})
}

func seqpacketPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "seqpacket")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}
