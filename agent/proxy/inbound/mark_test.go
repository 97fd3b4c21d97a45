package inbound

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weft-mesh/weft/api/mesh"
)

// The inbound's default pod dialer marks its sockets before connecting, as
// the datapath's strict-mTLS check requires; setting a mark needs
// CAP_NET_ADMIN (root here).
func TestPrivilegedPodDialerMarks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (SO_MARK needs CAP_NET_ADMIN)")
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, mark := range []uint32{mesh.ProxyDialMark, 0} {
		d := PodDialer(time.Second, mark)
		var got int
		var gerr error
		c, err := d.Dial("tcp4", ln.Addr().String())
		if err != nil {
			t.Fatalf("mark %#x: dial: %v", mark, err)
		}
		rc, _ := c.(*net.TCPConn).SyscallConn()
		_ = rc.Control(func(fd uintptr) { got, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK) })
		c.Close()
		if gerr != nil || uint32(got) != mark {
			t.Errorf("socket mark %#x (%v), want %#x", got, gerr, mark)
		}
	}
}

// Without CAP_NET_ADMIN the dial fails and says why.
func TestMarkControlError(t *testing.T) {
	var rc fakeRawConn
	if err := markControl(mesh.ProxyDialMark)("tcp4", "10.0.0.1:80", rc); err == nil {
		t.Fatal("markControl on a closed socket succeeded")
	}
}

// fakeRawConn runs Control on an invalid fd: setsockopt fails (EBADF).
type fakeRawConn struct{}

func (fakeRawConn) Control(f func(fd uintptr)) error  { f(^uintptr(0)); return nil }
func (fakeRawConn) Read(func(fd uintptr) bool) error  { return nil }
func (fakeRawConn) Write(func(fd uintptr) bool) error { return nil }

var _ syscall.RawConn = fakeRawConn{}
