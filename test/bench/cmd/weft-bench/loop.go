package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// runLoop runs one hop of the event-loop floor (floor -loop): the floor's
// work (per client connection one upstream connection, TLS 1.3 with a client
// certificate between the hops, only message boundaries parsed) in nginx's
// shape instead of a goroutine per connection. One goroutine owns an epoll
// instance with every socket in it, edge-triggered; it reads what each ready
// socket holds, moves the complete messages to the other side with
// non-blocking writes (what a socket does not take waits for its EPOLLOUT)
// and parks in Go's poller, on the epoll descriptor, only when no socket is
// ready. crypto/tls runs over the non-blocking sockets: a read that finds
// nothing returns a temporary error, which tls.Conn does not keep. There are
// no goroutine hand-offs per request, only one wake-up per batch of ready
// sockets, as nginx's worker has.
//
// It exists to measure what the event loop's shape is worth in Go before a
// proxy is built that way. Connections are set up inside the loop, blocking
// it for the upstream dial and TLS handshake (the benchmark's connections are
// made at its warm-up); chunked bodies, pipelining past what the buffers hold
// and every other HTTP feature are out of scope.
func runLoop(ctx context.Context, c rpConfig) error {
	cert, pool, err := peerPKI(c.pki)
	if err != nil {
		return err
	}
	l := &evloop{role: c.role, upstream: c.upstream, sides: map[int32]*side{}, events: make([]syscall.EpollEvent, 128)}
	switch c.role {
	case "a":
		l.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "mesh", MinVersion: tls.VersionTLS13}
	case "b":
		l.tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	default:
		return fmt.Errorf("floor role %q", c.role)
	}
	if l.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		return err
	}
	if err := syscall.SetNonblock(l.epfd, true); err != nil {
		return err
	}
	// the epoll descriptor in Go's poller: the loop parks on it
	ep := os.NewFile(uintptr(l.epfd), "epoll")
	defer ep.Close()
	if l.rc, err = ep.SyscallConn(); err != nil {
		return err
	}
	if l.lfd, err = listenFD(c.listen); err != nil {
		return err
	}
	defer syscall.Close(l.lfd)
	if err := l.add(l.lfd, syscall.EPOLLIN); err != nil {
		return err
	}
	go func() { <-ctx.Done(); ep.SetReadDeadline(time.Now()) }()
	return l.run(ctx)
}

// listenFD returns a non-blocking listening socket on addr.
func listenFD(addr string) (int, error) {
	ap, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return -1, err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	sa := &syscall.SockaddrInet4{Port: ap.Port}
	copy(sa.Addr[:], ap.IP.To4())
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.Listen(fd, 1024); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

type evloop struct {
	role, upstream string
	tlsConf        *tls.Config
	epfd, lfd      int
	rc             syscall.RawConn
	sides          map[int32]*side
	events         []syscall.EpollEvent
	buf            []byte // plaintext read scratch
}

func (l *evloop) add(fd int, ev uint32) error {
	return syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: ev, Fd: int32(fd)})
}

// wait returns the ready events, parking in Go's poller while there are none.
func (l *evloop) wait() (int, error) {
	var n int
	var werr error
	err := l.rc.Read(func(uintptr) bool {
		n, werr = syscall.EpollWait(l.epfd, l.events, 0)
		return werr != nil || n > 0
	})
	if err != nil {
		return 0, err
	}
	if werr == syscall.EINTR {
		return 0, nil
	}
	return n, werr
}

func (l *evloop) run(ctx context.Context) error {
	l.buf = make([]byte, 64<<10)
	for {
		n, err := l.wait()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, ev := range l.events[:n] {
			if int(ev.Fd) == l.lfd {
				l.accept()
				continue
			}
			s := l.sides[ev.Fd]
			if s == nil {
				continue // closed by its peer earlier in this batch
			}
			if ev.Events&syscall.EPOLLOUT != 0 && s.nb.flush() != nil {
				l.closePair(s)
				continue
			}
			if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				s.nb.drained = false
				if l.readable(s) != nil {
					l.closePair(s)
				}
			}
		}
	}
}

// side is one socket of a relayed pair.
type side struct {
	nb   *nbConn
	tls  *tls.Conn // nil: plaintext
	in   []byte    // plaintext read, not yet a whole message
	peer *side
}

func (l *evloop) accept() {
	for {
		fd, _, err := syscall.Accept4(l.lfd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		if err != nil {
			return // EAGAIN: all taken
		}
		syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
		if err := l.setup(fd); err != nil {
			fmt.Fprintln(os.Stderr, "floor loop:", err)
			syscall.Close(fd)
		}
	}
}

// setup makes a relayed pair of an accepted socket: it dials the upstream and
// runs the TLS handshake (blocking the loop), then puts both in the loop.
func (l *evloop) setup(fd int) error {
	client := &side{nb: &nbConn{fd: fd}}
	up := &side{nb: &nbConn{fd: -1}}
	nc, err := net.Dial("tcp", l.upstream)
	if err != nil {
		return err
	}
	ufd, err := takeFD(nc)
	if err != nil {
		return err
	}
	up.nb.fd = ufd
	var hs *side // the side that speaks TLS
	var tc *tls.Conn
	if l.role == "a" {
		hs, tc = up, tls.Client(up.nb, l.tlsConf)
	} else {
		hs, tc = client, tls.Server(client.nb, l.tlsConf)
	}
	// the handshake blocks: through a Go connection on a duplicate of the socket
	dup, err := syscall.Dup(hs.nb.fd)
	if err != nil {
		syscall.Close(ufd)
		return err
	}
	f := os.NewFile(uintptr(dup), "hs")
	hc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		syscall.Close(ufd)
		return err
	}
	hs.nb.hs = hc
	hc.SetDeadline(time.Now().Add(5 * time.Second))
	err = tc.Handshake()
	hs.nb.hs = nil
	hc.Close()
	syscall.SetNonblock(hs.nb.fd, true)
	if err != nil {
		syscall.Close(ufd)
		return err
	}
	hs.tls = tc
	client.peer, up.peer = up, client
	for _, s := range []*side{client, up} {
		l.sides[int32(s.nb.fd)] = s
		if err := l.add(s.nb.fd, syscall.EPOLLIN|syscall.EPOLLOUT|syscall.EPOLLRDHUP|edgeTriggered); err != nil {
			l.closePair(client)
			return err
		}
	}
	// what arrived during the handshake raised no edge the loop saw
	if l.readable(client) != nil || l.readable(up) != nil {
		l.closePair(client)
	}
	return nil
}

// takeFD returns a non-blocking duplicate of a dialed connection's socket
// and closes the connection.
func takeFD(nc net.Conn) (int, error) {
	defer nc.Close()
	rc, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	rc.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) })
	if derr != nil {
		return -1, derr
	}
	syscall.CloseOnExec(fd)
	return fd, syscall.SetNonblock(fd, true)
}

func (l *evloop) closePair(s *side) {
	for _, x := range []*side{s, s.peer} {
		if x != nil && x.nb.fd >= 0 {
			delete(l.sides, int32(x.nb.fd))
			syscall.Close(x.nb.fd)
			x.nb.fd = -1
		}
	}
}

// readable reads what s holds and sends the whole messages to its peer.
func (l *evloop) readable(s *side) error {
	for {
		var n int
		var err error
		if s.tls != nil {
			n, err = s.tls.Read(l.buf)
		} else {
			n, err = s.nb.Read(l.buf)
		}
		s.in = append(s.in, l.buf[:n]...)
		if errors.Is(err, errWouldBlock) {
			break
		}
		if err != nil {
			return err
		}
	}
	end, err := wholeMessages(s.in)
	if err != nil || end == 0 {
		return err
	}
	p := s.peer
	if p.tls != nil {
		_, err = p.tls.Write(s.in[:end])
	} else {
		_, err = p.nb.Write(s.in[:end])
	}
	s.in = s.in[:copy(s.in, s.in[end:])]
	return err
}

var (
	crlf2 = []byte("\r\n\r\n")
	// errWouldBlock: a non-blocking read found nothing; tls.Conn keeps no
	// temporary error, so the read can be tried again at the next event
	errWouldBlock = &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.EAGAIN)}
)

// wholeMessages returns how many of b's bytes are whole HTTP/1.1 messages
// (a head and its Content-Length body).
func wholeMessages(b []byte) (int, error) {
	end := 0
	for {
		h := bytes.Index(b[end:], crlf2)
		if h < 0 {
			return end, nil
		}
		head := b[end : end+h+2]
		n := int64(0)
		for len(head) > 0 {
			line, rest, _ := bytes.Cut(head, []byte("\r\n"))
			head = rest
			if len(line) > len(contentLength) && bytes.EqualFold(line[:len(contentLength)], contentLength) {
				v, err := strconv.ParseInt(string(bytes.TrimSpace(line[len(contentLength):])), 10, 64)
				if err != nil {
					return 0, err
				}
				n = v
			}
			if len(line) > len(transferEncoding) && bytes.EqualFold(line[:len(transferEncoding)], transferEncoding) {
				return 0, errChunked
			}
		}
		m := end + h + 4 + int(n)
		if m > len(b) {
			return end, nil
		}
		end = m
	}
}

// nbConn is a non-blocking socket as a net.Conn for crypto/tls: Read takes
// what the socket holds or fails with errWouldBlock; Write never blocks (what
// the socket does not take waits in pending for EPOLLOUT). During the
// handshake (hs set) both go to hs instead.
type nbConn struct {
	fd int
	hs net.Conn
	// drained: the last read took less than it asked for, so the socket is
	// empty until the next EPOLLIN edge
	drained bool
	pending []byte
}

func (c *nbConn) Read(p []byte) (int, error) {
	if c.hs != nil {
		return c.hs.Read(p)
	}
	if c.drained || c.fd < 0 {
		return 0, errWouldBlock
	}
	n, err := syscall.Read(c.fd, p)
	switch {
	case err == syscall.EAGAIN:
		c.drained = true
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	case n == 0:
		return 0, io.EOF
	}
	c.drained = n < len(p)
	return n, nil
}

func (c *nbConn) Write(p []byte) (int, error) {
	if c.hs != nil {
		return c.hs.Write(p)
	}
	if len(c.pending) > 0 {
		c.pending = append(c.pending, p...)
		return len(p), nil
	}
	n, err := syscall.Write(c.fd, p)
	if err == syscall.EAGAIN {
		n, err = 0, nil
	}
	if err != nil {
		return 0, err
	}
	c.pending = append(c.pending, p[n:]...)
	return len(p), nil
}

// flush writes what waits in pending, as far as the socket takes it.
func (c *nbConn) flush() error {
	for len(c.pending) > 0 {
		n, err := syscall.Write(c.fd, c.pending)
		if err == syscall.EAGAIN {
			return nil
		}
		if err != nil {
			return err
		}
		c.pending = c.pending[:copy(c.pending, c.pending[n:])]
	}
	return nil
}

func (c *nbConn) Close() error                       { return nil }
func (c *nbConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *nbConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *nbConn) SetDeadline(t time.Time) error      { return nil }
func (c *nbConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *nbConn) SetWriteDeadline(t time.Time) error { return nil }

// edgeTriggered is EPOLLET as the uint32 EpollEvent.Events holds.
const edgeTriggered = 1 << 31
