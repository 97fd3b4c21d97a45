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
	node string
	h    Handler
	log  *slog.Logger
	ln   net.Listener
	srv  *http.Server
	done chan error
}

// Serve listens on socket (mode 0600, a stale socket file replaced) and
// serves h for node until Close.
func Serve(socket, node string, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("cni socket dir: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove stale cni socket: %w", err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on cni socket: %w", err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod cni socket: %w", err)
	}
	s := &Server{node: node, h: h, log: log, ln: ln, done: make(chan error, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+PathAdd, s.serveAdd)
	mux.HandleFunc("POST "+PathDel, s.serveDel)
	mux.HandleFunc("POST "+PathCheck, s.serveCheck)
	mux.HandleFunc("POST "+PathGC, s.serveGC)
	mux.HandleFunc("POST "+PathStatus, s.serveStatus)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Close stops serving and removes the socket file.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	<-s.done
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
	s.log.Info("cni ADD", logkey.Pod, req.Namespace+"/"+req.Name, logkey.Cookie, rep.Cookie, "enrolled", rep.Enrolled, logkey.Reason, rep.Reason, logkey.Error, err)
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
