// Command weft-images builds Weft's container images without a Docker daemon and
// pushes them to a registry:
//
//	weft-images build [-out DIR] [-platforms linux/amd64,linux/arm64] [-tag dev] [-version V]
//	weft-images push -registry HOST/PATH [-layout DIR] [-tag dev] [-images weft-agent,...]
//
// build cross-compiles static binaries (go build, CGO_ENABLED=0) from the module in the
// working directory and writes one OCI image layout at DIR holding a multi-arch image
// index per image (weft-controller, weft-agent, echo, toolbox), each listed in
// DIR/index.json as <name>:<tag>. Same source, same digests: every timestamp is
// SOURCE_DATE_EPOCH (default: the time of the last commit).
//
// Beside DIR it writes digests.txt and, for the host's architecture, <name>-<arch>.tar:
// a docker-archive (the `docker save` format, tag ghcr.io/weft-mesh/<name>:<tag>).
// `kind load image-archive` takes that file (a docker-archive or an OCI archive): kind
// streams it into `ctr images import` on every node.
//
// push copies each image index, all platforms, to HOST/PATH/<name>:<tag>. Credentials
// come from the docker config (docker login, crane auth login); registries on loopback
// addresses are spoken to in plain HTTP.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

var errUsage = errors.New("usage: weft-images build|push [flags] (-h for the flags)")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(2) // the flag package printed the usage
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "weft-images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errUsage
	}
	switch args[0] {
	case "build":
		cfg, err := parseBuild(args[1:])
		if err != nil {
			return err
		}
		return build(ctx, cfg, stdout)
	case "push":
		cfg, err := parsePush(args[1:])
		if err != nil {
			return err
		}
		return push(ctx, cfg, stdout)
	default:
		return errUsage
	}
}
