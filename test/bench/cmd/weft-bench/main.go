// Command weft-bench runs the processes of the mesh-path benchmark
// (test/bench/run.sh): a backend, Weft's node proxy as a source or a
// destination node, a net/http/httputil.ReverseProxy hop and the floor hop
// (test/bench/floor.sh), plus the PKI they share. Each role runs until
// SIGTERM/SIGINT.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/weft-mesh/weft/agent/proxy"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: weft-bench pki|backend|weft|rp|floor [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	var err error
	switch os.Args[1] {
	case "pki":
		dir := fs.String("dir", "", "directory to write the PKI into")
		fs.Parse(os.Args[2:])
		err = writePKI(*dir)
	case "backend":
		listen := fs.String("listen", "127.0.0.1:18100", "listen address")
		size := fs.Int("size", 1024, "response body bytes")
		fs.Parse(os.Args[2:])
		err = runBackend(ctx, *listen, *size)
	case "weft":
		var c weftConfig
		fs.StringVar(&c.role, "role", "src", "src (outbound side), dst (inbound side) or node (one proxy doing both hops: the same-node path, and the shape of the nginx peer, one process with both server blocks)")
		fs.StringVar(&c.out, "out", "127.0.0.1:0", "outbound capture listen address")
		fs.StringVar(&c.in, "in", "127.0.0.1:0", "inbound tunnel listen address")
		fs.StringVar(&c.peer, "peer", "127.0.0.1:18212", "destination node's tunnel address")
		fs.StringVar(&c.backend, "backend", "127.0.0.1:18100", "backend pod address")
		fs.StringVar(&c.pki, "pki", "", "PKI directory (from weft-bench pki)")
		fs.StringVar(&c.proto, "proto", "http", "service protocol: http, h2c or grpc")
		fs.StringVar(&c.pprof, "pprof", "", "serve net/http/pprof on this address (profiling the proxy)")
		fs.StringVar(&c.metrics, "metrics", "", "turn the proxy's metrics on and serve them (/metrics) on this address; empty: metrics off")
		fs.IntVar(&c.loops, "loops", proxy.DefaultOutboundLoops(), "serve captured HTTP/1.1 clients in this many event loops, as the agent does (0: a goroutine per connection)")
		fs.Parse(os.Args[2:])
		err = runWeft(ctx, c)
	case "rp", "floor":
		var c rpConfig
		fs.StringVar(&c.role, "role", "a", "a: plaintext in, mTLS out; b: mTLS in, plaintext out")
		fs.StringVar(&c.listen, "listen", "", "listen address")
		fs.StringVar(&c.upstream, "upstream", "", "upstream address")
		fs.StringVar(&c.pki, "pki", "", "PKI directory")
		if os.Args[1] == "rp" {
			fs.Parse(os.Args[2:])
			err = runRP(ctx, c)
			break
		}
		fs.BoolVar(&c.handoff, "handoff", false, "hand each response from a reader goroutine to the request's goroutine")
		loop := fs.Bool("loop", false, "the event-loop floor: one goroutine, epoll, non-blocking sockets (see loop.go)")
		fs.Parse(os.Args[2:])
		if *loop {
			err = runLoop(ctx, c)
			break
		}
		err = runFloor(ctx, c)
	default:
		err = fmt.Errorf("unknown role %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-bench:", err)
		os.Exit(1)
	}
}
