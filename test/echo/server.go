// Package echo is weft-echo, the lab's test application: an HTTP/1.1 + h2c + WebSocket
// and gRPC server that answers every request with the facts of that request and of the
// pod that answered, and a client that sends N requests and counts who answered.
package echo

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weft-mesh/weft/test/echo/echopb"
)

// Identity is who is answering: filled from the downward API by the command.
type Identity struct {
	Pod       string
	Namespace string
	Node      string
	Service   string
	Ingress   string // echo-basic's INGRESS_NAME
}

// Answer is the JSON body of every HTTP answer. The field names are those of the
// Gateway API conformance echo-basic server, so its assertions read the same way.
type Answer struct {
	Path      string              `json:"path"`
	Host      string              `json:"host"`
	Method    string              `json:"method"`
	Proto     string              `json:"proto"`
	Headers   map[string][]string `json:"headers"`
	Namespace string              `json:"namespace"`
	Ingress   string              `json:"ingress"`
	Service   string              `json:"service"`
	Pod       string              `json:"pod"`
	Node      string              `json:"node,omitempty"`
	Remote    string              `json:"remote,omitempty"`
}

// ServerConfig configures Serve.
type ServerConfig struct {
	Identity Identity
	HTTPAddr string // e.g. ":8080"
	GRPCAddr string // e.g. ":9090"
	Logger   *slog.Logger
}

// Serve runs the HTTP and gRPC servers until ctx is done, then shuts them down.
func Serve(ctx context.Context, cfg ServerConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	hl, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen http %s: %w", cfg.HTTPAddr, err)
	}
	gl, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		hl.Close()
		return fmt.Errorf("listen grpc %s: %w", cfg.GRPCAddr, err)
	}
	hs := NewHTTPServer(cfg.Identity)
	gs := NewGRPCServer(cfg.Identity)
	log.Info("weft-echo serving", "http", hl.Addr().String(), "grpc", gl.Addr().String(), "pod", cfg.Identity.Pod)

	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(hl) }()
	go func() { errc <- gs.Serve(gl) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("serve: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	gs.GracefulStop()
	return err
}

// NewHTTPServer returns the HTTP/1.1 + h2c server (not yet listening).
func NewHTTPServer(id Identity) *http.Server {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           Handler(id),
		Protocols:         p,
		ReadHeaderTimeout: 10 * time.Second,
	}
}

// Handler answers:
//   - /ws: a WebSocket that first sends the Answer of the upgrade request, then echoes
//     every message back;
//   - /status/<code>: the Answer with that HTTP status code;
//   - anything else: the Answer with 200.
//
// The query parameter delay=<duration> (at most 1m) delays the answer.
func Handler(id Identity) http.Handler {
	ws := websocket.Server{Handler: func(c *websocket.Conn) {
		defer c.Close()
		if err := websocket.JSON.Send(c, answerOf(c.Request(), id)); err != nil {
			return
		}
		for {
			var msg string
			if err := websocket.Message.Receive(c, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(c, msg); err != nil {
				return
			}
		}
	}}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ws" {
			ws.ServeHTTP(w, r)
			return
		}
		code := http.StatusOK
		if rest, ok := strings.CutPrefix(r.URL.Path, "/status/"); ok {
			c, err := strconv.Atoi(rest)
			if err != nil || c < 200 || c > 599 {
				http.Error(w, fmt.Sprintf("bad status code %q: want 200-599", rest), http.StatusBadRequest)
				return
			}
			code = c
		}
		if d := r.URL.Query().Get("delay"); d != "" {
			dur, err := time.ParseDuration(d)
			if err != nil || dur < 0 || dur > time.Minute {
				http.Error(w, fmt.Sprintf("bad delay %q: want a duration up to 1m", d), http.StatusBadRequest)
				return
			}
			select {
			case <-time.After(dur):
			case <-r.Context().Done():
				return
			}
		}
		body, err := json.Marshal(answerOf(r, id))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Echo-Pod", id.Pod)
		w.WriteHeader(code)
		_, _ = w.Write(append(body, '\n'))
	})
}

func answerOf(r *http.Request, id Identity) Answer {
	headers := make(map[string][]string, len(r.Header)+1)
	for k, v := range r.Header {
		headers[k] = v
	}
	return Answer{
		Path:      r.RequestURI,
		Host:      r.Host,
		Method:    r.Method,
		Proto:     r.Proto,
		Headers:   headers,
		Namespace: id.Namespace,
		Service:   id.Service,
		Pod:       id.Pod,
		Node:      id.Node,
		Remote:    r.RemoteAddr,
	}
}

// NewGRPCServer returns a gRPC server with the Echo service and the standard health
// service (reporting SERVING), not yet listening.
func NewGRPCServer(id Identity) *grpc.Server {
	s := grpc.NewServer()
	echopb.RegisterEchoServer(s, &grpcEcho{id: id})
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.SetServingStatus(echopb.Echo_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	return s
}
