package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/weft-mesh/weft/api/logkey"
)

// Handler is what the agent's socket serves (Enroller is the agent's).
type Handler interface {
	Add(ctx context.Context, r Request) (Reply, error)
	Del(ctx context.Context, r Request) error
	Check(ctx context.Context, r Request) (Reply, error)
	GC(ctx context.Context, valid []string) error
	// Ready is nil when the agent can enroll pods (CNI STATUS).
	Ready() error
}

// Server serves the agent's CNI socket.
type Server struct {
	node   string
	path   string
	h      Handler
	log    *slog.Logger
	srv    *http.Server
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	ln     net.Listener
	closed bool
}

// Serve listens on socket (mode 0600, a stale socket file replaced) and
// serves h for node until Close. While it serves, a socket file that
// disappears (an agent of the node that stopped and unlinked it, a cleanup)
// is bound again.
func Serve(socket, node string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("cni socket dir: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove stale cni socket: %w", err)
	}
	s := &Server{node: node, path: socket, h: h, log: log, stop: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathAdd, s.serveAdd)
	mux.HandleFunc("POST "+PathDel, s.serveDel)
	mux.HandleFunc("POST "+PathCheck, s.serveCheck)
	mux.HandleFunc("POST "+PathGC, s.serveGC)
	mux.HandleFunc("POST "+PathStatus, s.serveStatus)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if err := s.listen(); err != nil {
		return nil, err
	}
	s.wg.Add(1)
	go s.keep()
	return s, nil
}

// listen binds the socket file and serves it.
func (s *Server) listen() error {
	ln, err := net.Listen("unix", s.path)
	if err != nil {
		return fmt.Errorf("listen on cni socket: %w", err)
	}
	// The file outlives this listener: the next agent of the node may
	// have bound it by the time this one closes.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(s.path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("chmod cni socket: %w", err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(ln)
	}()
	return nil
}

// keep binds the socket again whenever its file is gone.
func (s *Server) keep() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if _, err := os.Stat(s.path); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		s.mu.Lock()
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return
		}
		if err := s.listen(); err != nil {
			s.log.Warn("cni socket gone and not bound again", logkey.Path, s.path, logkey.Error, err)
			continue
		}
		s.log.Info("cni socket was gone: bound again", logkey.Path, s.path)
	}
}

// Close stops serving. The socket file stays (another agent of the node may
// own it now); the agent removes it on uninstall.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	s.wg.Wait()
	return err
}

// decode reads a request body of at most 64 KiB and checks its node.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, node func() string) bool {
	data, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err == nil {
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		writeErr(w, types.NewError(types.ErrDecodingFailure, "weft agent: bad request", err.Error()))
		return false
	}
	if n := node(); n != s.node {
		writeErr(w, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("weft-cni config names node %q but this socket is the agent of node %q", n, s.node), ""))
		return false
	}
	return true
}

func (s *Server) serveAdd(w http.ResponseWriter, r *http.Request) {
	var req Request
	if !s.decode(w, r, &req, func() string { return req.Node }) {
		return
	}
	rep, err := s.h.Add(r.Context(), req)
	switch {
	case err != nil:
		s.log.Warn("cni ADD refused", logkey.Pod, req.Namespace+"/"+req.Name, logkey.Error, err)
	case rep.Enrolled:
		s.log.Info("cni ADD: enrolled", logkey.Pod, req.Namespace+"/"+req.Name, logkey.Cookie, rep.Cookie)
	default:
		s.log.Info("cni ADD: not enrolled", logkey.Pod, req.Namespace+"/"+req.Name, logkey.Reason, rep.Reason)
	}
	reply(w, rep, err)
}

func (s *Server) serveDel(w http.ResponseWriter, r *http.Request) {
	var req Request
	if !s.decode(w, r, &req, func() string { return req.Node }) {
		return
	}
	err := s.h.Del(r.Context(), req)
	s.log.Info("cni DEL", logkey.Pod, req.Namespace+"/"+req.Name, logkey.Error, err)
	reply(w, struct{}{}, err)
}

func (s *Server) serveCheck(w http.ResponseWriter, r *http.Request) {
	var req Request
	if !s.decode(w, r, &req, func() string { return req.Node }) {
		return
	}
	rep, err := s.h.Check(r.Context(), req)
	reply(w, rep, err)
}

func (s *Server) serveGC(w http.ResponseWriter, r *http.Request) {
	var req GCRequest
	if !s.decode(w, r, &req, func() string { return req.Node }) {
		return
	}
	reply(w, struct{}{}, s.h.GC(r.Context(), req.ContainerID))
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	var req struct{ Node string }
	if !s.decode(w, r, &req, func() string { return req.Node }) {
		return
	}
	err := s.h.Ready()
	if err != nil {
		err = types.NewError(types.ErrPluginNotAvailable, "weft agent not ready to enroll pods", err.Error())
	}
	reply(w, struct{}{}, err)
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		var te *types.Error
		if !errors.As(err, &te) {
			te = types.NewError(types.ErrInternal, "weft agent: "+err.Error(), "")
		}
		writeErr(w, te)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, te *types.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusConflict)
	_ = json.NewEncoder(w).Encode(WireError{Code: te.Code, Message: te.Msg, Details: te.Details})
}
