// Command weft-lab runs the local lab cluster (see package test/lab).
//
//	weft-lab up [--nodes N] [--timeout D]   start a lab (default 2 nodes); returns when every node and CoreDNS is Ready
//	weft-lab down                           stop the lab and remove everything it created
//	weft-lab status                         supervisor, memory and nodes
//	weft-lab kubeconfig                     print the admin kubeconfig path
//	weft-lab serve --nodes N                the supervisor `up` starts (foreground)
//	weft-lab install [--method helm|kustomize] [--tag T] [--layout DIR] [--set k=v]...
//	                                        push Weft's images (from `make images`) to the lab
//	                                        registry and install Weft from them; again upgrades
//	weft-lab uninstall [--method helm|kustomize]
//
// Run it from inside the repository (or pass --root); it needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/weft-mesh/weft/test/lab"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "weft-lab:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage: weft-lab up [--nodes N] | down | status | kubeconfig | serve --nodes N | install [--method helm|kustomize] [--tag T] [--layout DIR] [--set k=v] | uninstall [--method M]")

// setFlags collects repeated --set values.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

func run(args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	root := fs.String("root", "", "repository root (default: found from the working directory)")
	nodes := fs.Int("nodes", 2, "number of nodes (up, serve)")
	timeout := fs.Duration("timeout", 3*time.Minute, "how long up waits for Ready, and down for the supervisor")
	method := fs.String("method", string(lab.Helm), "install, uninstall: helm (the chart) or kustomize (manifests/)")
	tag := fs.String("tag", "dev", "install: the image tag to push and install")
	layout := fs.String("layout", "", "install: the OCI image layout (default .cache/images/oci, written by `make images`)")
	var set setFlags
	fs.Var(&set, "set", "install: a Helm value, key=value (repeatable)")
	if err := fs.Parse(args[1:]); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected %v", errUsage, fs.Args())
	}
	if *root == "" {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		if *root, err = lab.FindRoot(wd); err != nil {
			return fmt.Errorf("%w (run weft-lab inside the weft repository or pass --root)", err)
		}
	}
	abs, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	p := lab.PathsFor(abs)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	switch args[0] {
	case "up":
		if os.Geteuid() != 0 {
			return errors.New("the lab needs root (network namespaces, cgroups)")
		}
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		t0 := time.Now()
		started, err := lab.Up(ctx, lab.UpConfig{
			Paths: p, Nodes: *nodes, Timeout: *timeout,
			Supervisor: []string{exe, "serve", "--root", abs},
			Progress:   os.Stderr,
		})
		if err != nil {
			return err
		}
		verb := "is up"
		if started {
			verb = fmt.Sprintf("came up in %s", time.Since(t0).Round(100*time.Millisecond))
		}
		fmt.Printf("lab %s: %d nodes Ready, CoreDNS Ready\nexport KUBECONFIG=%s\n", verb, *nodes, p.Kubeconfig)
		return nil
	case "down":
		if err := lab.Down(p, *timeout); err != nil {
			return err
		}
		fmt.Println("lab is down")
		return nil
	case "status":
		s, err := lab.Status(ctx, p)
		if err != nil {
			return err
		}
		fmt.Print(s)
		if s != "" && s[len(s)-1] != '\n' {
			fmt.Println()
		}
		return nil
	case "kubeconfig":
		fmt.Println(p.Kubeconfig)
		return nil
	case "install", "uninstall":
		cfg := lab.InstallConfig{Paths: p, Method: lab.InstallMethod(*method), Tag: *tag, Layout: *layout, Set: set}
		if args[0] == "uninstall" {
			return lab.Uninstall(ctx, cfg)
		}
		if err := lab.Install(ctx, cfg); err != nil {
			return err
		}
		fmt.Printf("weft installed (%s) from %s\n", cfg.Method, lab.ImageRepo)
		return nil
	case "serve":
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		slog.SetDefault(log) // the node runtimes log through the default logger
		return lab.Serve(ctx, lab.ServeConfig{Paths: p, Nodes: *nodes, Logger: log})
	default:
		return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
	}
}
