// Command weft-echo is the lab's test app (image ghcr.io/weft-mesh/echo:dev).
//
//	weft-echo serve [--http-port 8080] [--grpc-port 9090]
//	weft-echo client --url URL [--count N] [--header K:V]... [--cookies] [--grpc] [--h2c] [--keepalive] [--method M] [--timeout D]
//	weft-echo idle
//	weft-echo advanced [--port N]... [--grpc N]... [--tcp N]... [--tls N]... [--version V]
//	weft-echo advanced-client URL [--method=M] [-H K:V]... [--count=N]   (also run as "client")
//	weft-echo basic   (configured by echo-basic's environment: see test/echo/basic.go)
//
// serve answers HTTP/1.1, h2c and WebSocket (/ws) on the HTTP port and gRPC on the gRPC
// port with the facts of the request and of the pod (POD_NAME, NAMESPACE or POD_NAMESPACE,
// NODE_NAME, SERVICE_NAME). client prints one JSON object:
// {"requests":N,"errors":E,"pods":{"<pod>":count},"status":{"<code>":count}}.
// idle sleeps until SIGTERM (the toolbox image).
//
// advanced is the surface of the Gateway API conformance echo-advanced image: Key=Value
// answers on HTTP, gRPC and TCP echo ports; advanced-client is its exec'd client, and
// weft-echo started under the name "client" (a link on the image's PATH) is that client.
//
// basic is the Gateway API conformance echo-basic image: HTTP, gRPC, TCP or UDP echo
// servers chosen and configured by the container's environment, as that image is.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/test/echo"
)

func main() {
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == "client" {
		args = append([]string{"advanced-client"}, args...)
	}
	if err := run(args); err != nil {
		fmt.Fprintln(os.Stderr, "weft-echo:", err)
		if errors.Is(err, errUsage) || errors.Is(err, echo.ErrBadConfig) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: weft-echo serve|client|idle|advanced|advanced-client|basic [flags]")

func run(args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:])
	case "client":
		return client(ctx, args[1:])
	case "idle":
		<-ctx.Done()
		return nil
	case "advanced":
		cfg, err := echo.ParseAdvancedFlags(args[1:])
		if err != nil {
			return err
		}
		cfg.Identity = echo.Identity{Pod: echo.PodName(), Namespace: os.Getenv("POD_NAMESPACE")}
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		return echo.ServeAdvanced(ctx, cfg)
	case "basic":
		if len(args) > 1 {
			return fmt.Errorf("%w: basic takes no arguments (echo-basic is configured by its environment)", errUsage)
		}
		cfg, err := echo.ParseBasicEnv(os.Getenv)
		if err != nil {
			return err
		}
		cfg.Requests = os.Stdout
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
		return echo.ServeBasic(ctx, cfg)
	case "advanced-client":
		cfg, err := echo.ParseAdvancedClientArgs(args[1:])
		if err != nil {
			return err
		}
		return echo.RunAdvancedClient(ctx, cfg, os.Stdout)
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	httpPort := fs.Int("http-port", 8080, "HTTP/1.1, h2c and WebSocket port")
	grpcPort := fs.Int("grpc-port", 9090, "gRPC port")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ns := os.Getenv("NAMESPACE")
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	pod := os.Getenv("POD_NAME")
	if pod == "" {
		pod, _ = os.Hostname()
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	return echo.Serve(ctx, echo.ServerConfig{
		Identity: echo.Identity{Pod: pod, Namespace: ns, Node: os.Getenv("NODE_NAME"), Service: os.Getenv("SERVICE_NAME")},
		HTTPAddr: ":" + strconv.Itoa(*httpPort),
		GRPCAddr: ":" + strconv.Itoa(*grpcPort),
		Logger:   log,
	})
}

type headerFlags [][2]string

func (h *headerFlags) String() string { return fmt.Sprint(*h) }
func (h *headerFlags) Set(s string) error {
	kv, err := echo.ParseHeader(s)
	if err != nil {
		return err
	}
	*h = append(*h, kv)
	return nil
}

func client(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	var cfg echo.ClientConfig
	var headers headerFlags
	fs.StringVar(&cfg.URL, "url", "", "http://host[:port]/path, or host:port with --grpc")
	fs.IntVar(&cfg.Count, "count", 1, "number of requests")
	fs.Var(&headers, "header", "K:V header (gRPC: metadata) sent with every request; repeatable")
	fs.BoolVar(&cfg.Cookies, "cookies", false, "keep cookies the answers set and send them back")
	fs.BoolVar(&cfg.GRPC, "grpc", false, "call the gRPC Echo service at --url host:port")
	fs.BoolVar(&cfg.H2C, "h2c", false, "HTTP/2 without TLS instead of HTTP/1.1")
	fs.BoolVar(&cfg.KeepAlive, "keepalive", false, "reuse one HTTP connection (default: a new connection per request)")
	fs.StringVar(&cfg.Method, "method", "", "HTTP method (GET), or gRPC method Echo|Ping|Stream|/svc/method")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of each request")
	fs.Float64Var(&cfg.Rate, "rate", 0, "HTTP: start this many requests per second, each on a new connection, without waiting for earlier ones (0: one after the other)")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %s", errUsage, strings.Join(fs.Args(), " "))
	}
	cfg.Headers = headers
	res, err := echo.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
