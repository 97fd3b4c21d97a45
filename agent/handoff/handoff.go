// Package handoff passes a node agent's listening sockets to the agent that
// replaces it, as Envoy's hot restart and HAProxy's seamless reload do. The
// successor receives the very same kernel sockets (SCM_RIGHTS over a unix
// socket in the node's state directory), so no connection is refused while
// agents change, and none waiting in an accept queue is lost.
//
// The agent that serves (the holder) offers its listeners with Hold. A
// starting agent Dials the same path; ErrNoHolder means nobody serves and it
// binds the addresses itself. Otherwise, once it can serve (policy applied,
// identities issued) it calls Take, starts accepting on what it got and
// calls Serving. Only then does the holder's Released channel close: the
// holder stops accepting (it closes its own descriptors; the sockets live on
// in the successor), drains and exits. Until Serving the holder keeps
// accepting, so a successor that dies halfway changes nothing.
//
// Besides its listeners a holder may pass state the successor needs to
// serve at once (Offer.State: the SVIDs the node holds, so that an agent
// restarted while the controller is unreachable can still do mTLS). The
// socket is 0600 in a 0700 directory and the holder only talks to peers
// of its own user (SO_PEERCRED).
//
// Sharing: a process that only keeps the sockets open (weft-agent hold,
// package sockholder) asks with Share instead of Take. It gets the same
// descriptors, the holder goes on as before (nothing is released) and
// needs no acknowledgement; any number of processes may share. That is how
// the listening sockets outlive an agent killed with SIGKILL: the kernel
// keeps a listening socket, and queues the connections it completes, for
// as long as any process holds a descriptor of it.
//
// Protocol, one JSON message per packet on a SOCK_SEQPACKET socket:
//
//	successor -> holder  {"op":"state"} (optional, before take)
//	holder -> successor  {"op":"record","data":..} per record, then
//	                     {"op":"state","count":n}
//	successor -> holder  {"op":"take"} or {"op":"share"}
//	holder -> successor  {"op":"listeners","listeners":[{"name":..,"addr":..},...]}
//	                     with one descriptor per listener (SCM_RIGHTS), in order,
//	                     or {"op":"refused","reason":..}
//	successor -> holder  {"op":"serving"} (after take only)
package handoff

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/api/logkey"
)

// Errors.
var (
	// ErrNoHolder: nobody serves the handoff socket (no socket file, or a
	// stale one left by an agent that crashed).
	ErrNoHolder = errors.New("no agent holds the listeners")
	// ErrRefused: the holder has no listeners to give (it handed them to
	// another successor, or it is stopping).
	ErrRefused = errors.New("holder refused the handoff")
	// ErrHolderGone: the holder closed the connection (it exited).
	ErrHolderGone = errors.New("holder went away")
)

// AckTimeout bounds how long a holder waits for Serving after it sent its
// listeners; it keeps serving either way.
const AckTimeout = 30 * time.Second

// MaxRecord is the largest state record a holder passes.
const MaxRecord = 64 << 10

const (
	maxMessage = 2 * MaxRecord // a record travels base64-encoded
	maxFDs     = 16
)

type message struct {
	Op        string     `json:"op"`
	Listeners []listener `json:"listeners,omitempty"`
	Reason    string     `json:"reason,omitempty"`
	Data      []byte     `json:"data,omitempty"`
	Count     int        `json:"count,omitempty"`

	fds []int // received with the message
}

type listener struct {
	Name string `json:"name"`
	Addr string `json:"addr"`
}

// Passable is a listener whose descriptor can be passed: *net.TCPListener
// and *net.UnixListener are.
type Passable interface {
	net.Listener
	syscall.Conn
}

// Offer is what a holder passes on.
type Offer struct {
	// Listeners by name; each must be Passable.
	Listeners map[string]net.Listener
	// State, when set, returns the records a successor that asks receives,
	// each at most MaxRecord bytes. It is called once per asking successor.
	State func() ([][]byte, error)
	// KeepSocketFile: Close leaves the socket file (a stale file reads as
	// ErrNoHolder). For a holder that is replaced by renaming over its
	// path without a release (weft-agent hold): removing the file on Close
	// could race with the replacement's rename.
	KeepSocketFile bool
}

// Holder offers its listeners to a successor.
type Holder struct {
	path  string
	ln    *net.UnixListener
	file  os.FileInfo // the socket file as bound, to remove only our own
	names []string
	ls    map[string]Passable
	state func() ([][]byte, error)
	keep  bool
	log   *slog.Logger

	handoff  sync.Mutex // one handoff at a time
	released chan struct{}

	mu     sync.Mutex
	closed bool
	conns  map[*net.UnixConn]struct{}
	wg     sync.WaitGroup
}

// Hold serves handoff requests for o on a unix socket at path until
// Close. The socket is bound under a temporary name and renamed over path,
// so a successor always finds one: an older holder's (until this one is
// in place) or this one; a stale file from a crashed agent is replaced.
func Hold(path string, o Offer, log *slog.Logger) (*Holder, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Holder{
		path:     path,
		ls:       make(map[string]Passable, len(o.Listeners)),
		state:    o.State,
		keep:     o.KeepSocketFile,
		log:      log,
		released: make(chan struct{}),
		conns:    map[*net.UnixConn]struct{}{},
	}
	for name, l := range o.Listeners {
		p, ok := l.(Passable)
		if !ok {
			return nil, fmt.Errorf("handoff: listener %s (%T) has no descriptor to pass", name, l)
		}
		h.ls[name] = p
		h.names = append(h.names, name)
	}
	slices.Sort(h.names)
	if len(h.names) > maxFDs {
		return nil, fmt.Errorf("handoff: %d listeners, at most %d", len(h.names), maxFDs)
	}
	tmp := path + ".new"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("handoff: remove %s: %w", tmp, err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: tmp, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("handoff: listen %s: %w", tmp, err)
	}
	ln.SetUnlinkOnClose(false) // the file is renamed; Close removes path if still ours
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("handoff: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("handoff: %w", err)
	}
	if h.file, err = os.Stat(path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("handoff: %w", err)
	}
	h.ln = ln
	h.wg.Add(1)
	go h.serve()
	return h, nil
}

// Released is closed once a successor serves on the listeners: the holder
// must stop accepting on them (closing them closes only its descriptors).
func (h *Holder) Released() <-chan struct{} { return h.released }

// Close stops offering the listeners (a connected successor sees its holder
// gone) and, unless a successor took them over (it puts its own socket file
// in place), removes the socket file if it is still this holder's. It does
// not close the listeners.
func (h *Holder) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	err := h.ln.Close()
	for c := range h.conns {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
	if h.keep {
		return err
	}
	select {
	case <-h.released:
		// A successor serves and puts its own socket at path, maybe this very
		// moment: checking then removing would race with its rename and
		// could remove its socket (a later agent would find no holder).
	default:
		if fi, serr := os.Stat(h.path); serr == nil && os.SameFile(fi, h.file) {
			os.Remove(h.path)
		}
	}
	return err
}

func (h *Holder) serve() {
	defer h.wg.Done()
	for {
		c, err := h.ln.AcceptUnix()
		if err != nil {
			h.mu.Lock()
			closed := h.closed
			h.mu.Unlock()
			if !closed {
				h.log.Error("handoff socket: accept", logkey.Error, err)
			}
			return
		}
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			c.Close()
			return
		}
		h.conns[c] = struct{}{}
		h.wg.Add(1)
		h.mu.Unlock()
		go func() {
			defer h.wg.Done()
			h.handle(c)
			h.mu.Lock()
			delete(h.conns, c)
			h.mu.Unlock()
			c.Close()
		}()
	}
}

// handle serves one successor: it may wait long (until the successor can
// serve) before asking for the listeners.
func (h *Holder) handle(c *net.UnixConn) {
	if err := sameUser(c); err != nil {
		h.log.Warn("handoff socket: peer refused", logkey.Error, err)
		return
	}
	var op string
	for op == "" {
		m, err := readMessage(c)
		if err != nil {
			return // gone before asking
		}
		closeFDs(m.fds)
		switch m.Op {
		case "take", "share":
			op = m.Op
		case "state":
			if err := h.sendState(c); err != nil {
				h.log.Warn("handoff: send state", logkey.Error, err)
				return
			}
		default:
			h.log.Warn("handoff socket: unexpected message", logkey.Op, m.Op)
			return
		}
	}
	h.handoff.Lock()
	defer h.handoff.Unlock()
	if !h.sendListeners(c) || op == "share" {
		return
	}
	c.SetReadDeadline(time.Now().Add(AckTimeout))
	ack, err := readMessage(c)
	if err != nil || ack.Op != "serving" {
		closeFDs(ack.fds)
		h.log.Warn("handoff: the successor did not take over; still serving", logkey.Error, err, logkey.Op, ack.Op)
		return
	}
	close(h.released)
	h.log.Info("handoff: listeners handed over", logkey.Listeners, h.names)
}

// sendListeners sends the listeners, unless they were handed over (the
// holder closes its descriptors then) or the holder is closing. Call with
// h.handoff held.
func (h *Holder) sendListeners(c *net.UnixConn) bool {
	select {
	case <-h.released:
		writeMessage(c, message{Op: "refused", Reason: "listeners already handed over"}, nil)
		return false
	default:
	}
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return false
	}
	var ps []Passable
	reply := message{Op: "listeners"}
	for _, name := range h.names {
		ps = append(ps, h.ls[name])
		reply.Listeners = append(reply.Listeners, listener{Name: name, Addr: h.ls[name].Addr().String()})
	}
	err := withFDs(ps, nil, func(fds []int) error { return writeMessage(c, reply, fds) })
	if err != nil {
		h.log.Warn("handoff: send listeners", logkey.Error, err)
		return false
	}
	return true
}

// sendState sends the holder's state records and the closing count.
func (h *Holder) sendState(c *net.UnixConn) error {
	var recs [][]byte
	if h.state != nil {
		var err error
		if recs, err = h.state(); err != nil {
			return err
		}
	}
	for i, r := range recs {
		if len(r) > MaxRecord {
			return fmt.Errorf("state record %d: %d bytes, at most %d", i, len(r), MaxRecord)
		}
	}
	for _, r := range recs {
		if err := writeMessage(c, message{Op: "record", Data: r}, nil); err != nil {
			return err
		}
	}
	return writeMessage(c, message{Op: "state", Count: len(recs)}, nil)
}

// sameUser checks that the peer of c runs as this process's user: the
// socket hands out listeners and keys.
func sameUser(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *syscall.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("peer pid %d runs as uid %d, not %d", cred.Pid, cred.Uid, os.Geteuid())
	}
	return nil
}

// withFDs calls f with the descriptors of ls, each kept open meanwhile.
// Taking the raw descriptor through SyscallConn leaves it non-blocking
// (os.File.Fd would switch the shared file description to blocking).
func withFDs(ls []Passable, fds []int, f func([]int) error) error {
	if len(ls) == 0 {
		return f(fds)
	}
	rc, err := ls[0].SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = withFDs(ls[1:], append(fds, int(fd)), f) }); err != nil {
		return err
	}
	return ferr
}

// Successor is a connection to the holder of this node's listeners.
type Successor struct {
	c      *net.UnixConn
	msgs   chan message
	gone   chan struct{}
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

// Dial connects to the holder serving path. The error wraps ErrNoHolder
// when nobody does.
func Dial(ctx context.Context, path string) (*Successor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPROTOTYPE) {
			return nil, fmt.Errorf("%w: %v", ErrNoHolder, err)
		}
		return nil, fmt.Errorf("handoff: %w", err)
	}
	s := &Successor{
		c:      conn.(*net.UnixConn),
		msgs:   make(chan message),
		gone:   make(chan struct{}),
		closed: make(chan struct{}),
	}
	s.wg.Add(1)
	go s.read()
	return s, nil
}

func (s *Successor) read() {
	defer s.wg.Done()
	defer close(s.gone)
	for {
		m, err := readMessage(s.c)
		if err != nil {
			return
		}
		select {
		case s.msgs <- m:
		case <-s.closed:
			closeFDs(m.fds)
			return
		}
	}
}

// Gone is closed when the holder closed the connection (or Close was
// called).
func (s *Successor) Gone() <-chan struct{} { return s.gone }

// next returns the holder's next message; the caller owns its descriptors.
func (s *Successor) next(ctx context.Context) (message, error) {
	select {
	case m := <-s.msgs:
		return m, nil
	case <-s.gone:
		return message{}, ErrHolderGone
	case <-ctx.Done():
		return message{}, ctx.Err()
	}
}

// State asks the holder for its state records (Offer.State). A holder
// that does not know the request closes the connection: ErrHolderGone.
func (s *Successor) State(ctx context.Context) ([][]byte, error) {
	if err := writeMessage(s.c, message{Op: "state"}, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHolderGone, err)
	}
	var recs [][]byte
	for {
		m, err := s.next(ctx)
		if err != nil {
			return nil, err
		}
		closeFDs(m.fds)
		switch m.Op {
		case "record":
			recs = append(recs, m.Data)
		case "state":
			if m.Count != len(recs) {
				return nil, fmt.Errorf("handoff: state of %d records, %d received", m.Count, len(recs))
			}
			return recs, nil
		default:
			return nil, fmt.Errorf("handoff: unexpected message %q", m.Op)
		}
	}
}

// Take asks for the listeners, by name. The holder keeps accepting on them
// too until Serving.
func (s *Successor) Take(ctx context.Context) (map[string]net.Listener, error) {
	return s.listeners(ctx, "take")
}

// Share asks for the listeners without taking them over: the holder goes
// on serving (or holding) them, and Serving must not be called. An agent
// that does not know "share" (an older release) closes the connection:
// ErrHolderGone.
func (s *Successor) Share(ctx context.Context) (map[string]net.Listener, error) {
	return s.listeners(ctx, "share")
}

func (s *Successor) listeners(ctx context.Context, op string) (map[string]net.Listener, error) {
	if err := writeMessage(s.c, message{Op: op}, nil); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHolderGone, err)
	}
	m, err := s.next(ctx)
	if err != nil {
		return nil, err
	}
	return fromMessage(m)
}

// fromMessage turns a "listeners" reply into listeners (each with a
// descriptor of its own); it closes every received descriptor on error.
func fromMessage(m message) (map[string]net.Listener, error) {
	switch {
	case m.Op == "refused":
		closeFDs(m.fds)
		return nil, fmt.Errorf("%w: %s", ErrRefused, m.Reason)
	case m.Op != "listeners":
		closeFDs(m.fds)
		return nil, fmt.Errorf("handoff: unexpected message %q", m.Op)
	case len(m.fds) != len(m.Listeners):
		closeFDs(m.fds)
		return nil, fmt.Errorf("handoff: %d descriptors for %d listeners", len(m.fds), len(m.Listeners))
	}
	ls := make(map[string]net.Listener, len(m.Listeners))
	for i, d := range m.Listeners {
		f := os.NewFile(uintptr(m.fds[i]), d.Name)
		l, err := net.FileListener(f) // a descriptor of its own
		f.Close()
		if err == nil {
			if _, dup := ls[d.Name]; dup {
				l.Close()
				err = errors.New("listed twice")
			}
		}
		if err != nil {
			closeFDs(m.fds[i+1:])
			for _, l := range ls {
				l.Close()
			}
			return nil, fmt.Errorf("handoff: listener %s (%s): %w", d.Name, d.Addr, err)
		}
		ls[d.Name] = l
	}
	return ls, nil
}

// Serving tells the holder that this agent accepts on the listeners now:
// the holder stops accepting and drains.
func (s *Successor) Serving() error {
	if err := writeMessage(s.c, message{Op: "serving"}, nil); err != nil {
		return fmt.Errorf("%w: %v", ErrHolderGone, err)
	}
	return nil
}

// Close closes the connection to the holder.
func (s *Successor) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		err = s.c.Close()
		s.wg.Wait()
	})
	return err
}

func writeMessage(c *net.UnixConn, m message, fds []int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = syscall.UnixRights(fds...)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// readMessage reads one packet and the descriptors that came with it
// (close-on-exec: Go reads with MSG_CMSG_CLOEXEC). The caller owns them.
func readMessage(c *net.UnixConn) (message, error) {
	buf := make([]byte, maxMessage)
	oob := make([]byte, syscall.CmsgSpace(maxFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	var m message
	if oobn > 0 {
		if cmsgs, perr := syscall.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for _, cm := range cmsgs {
				if fds, ferr := syscall.ParseUnixRights(&cm); ferr == nil {
					m.fds = append(m.fds, fds...)
				}
			}
		}
	}
	switch {
	case err != nil:
	case n == 0:
		err = ErrHolderGone // the peer closed (a packet socket reads 0 bytes)
	case flags&syscall.MSG_CTRUNC != 0:
		err = errors.New("handoff: descriptors truncated")
	case flags&syscall.MSG_TRUNC != 0:
		err = errors.New("handoff: message truncated")
	default:
		err = json.Unmarshal(buf[:n], &m)
	}
	if err != nil {
		closeFDs(m.fds)
		return message{}, err
	}
	return m, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}
