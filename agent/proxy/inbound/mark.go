package inbound

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// PodDialer is the inbound's default way to reach a local pod: a dialer
// with timeout whose sockets carry SO_MARK mark (when non-zero) before they
// connect. The mark is the node proxy's proof to the datapath that a
// connect to a strict-mTLS pod is the inbound delivering a tunnelled,
// verified connection (mesh.ProxyDialMark; see agent/datapath strict.go).
// Setting a mark needs CAP_NET_ADMIN, which the agent has; without it the
// dial fails with a clear error rather than reach a strict pod unmarked.
func PodDialer(timeout time.Duration, mark uint32) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if mark != 0 {
		d.Control = markControl(mark)
	}
	return d
}

func markControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK %#x on the socket to the pod: %w", mark, serr)
		}
		return nil
	}
}
