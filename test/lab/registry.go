package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// startRegistry serves the lab's image registry on RegistryAddr (plain HTTP on the
// host loopback, as a kind cluster's local registry): blobs on disk in
// Paths.registryDir, manifests in memory, so images are pushed again after the lab
// restarts (Install always pushes). The node runtimes pull from it on the host.
func startRegistry(p Paths, logger *slog.Logger) (stop func(), err error) {
	if err := os.MkdirAll(p.registryDir(), 0o755); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", RegistryAddr)
	if err != nil {
		return nil, fmt.Errorf("lab registry: listen on %s: %w", RegistryAddr, err)
	}
	srv := &http.Server{
		Handler: registry.New(
			registry.WithBlobHandler(registry.NewDiskBlobHandler(p.registryDir())),
			registry.Logger(log.New(registryLog{logger}, "", 0)),
		),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("lab registry stopped", "error", err)
		}
	}()
	logger.Info("lab registry serving", "addr", RegistryAddr, "blobs", p.registryDir())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// registryLog sends the registry's request log to the lab log at debug level.
type registryLog struct{ l *slog.Logger }

func (r registryLog) Write(b []byte) (int, error) {
	r.l.Debug("lab registry", "request", string(b))
	return len(b), nil
}

// registryStatus is the registry line of `weft-lab status`: its address and the
// repositories pushed to it.
func registryStatus(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+RegistryAddr+"/v2/_catalog", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Sprintf("registry: %s: %v\n", RegistryAddr, err)
	}
	defer resp.Body.Close()
	var cat struct{ Repositories []string }
	if err := json.NewDecoder(resp.Body).Decode(&cat); err != nil {
		return fmt.Sprintf("registry: %s: catalog: %v\n", RegistryAddr, err)
	}
	if len(cat.Repositories) == 0 {
		return fmt.Sprintf("registry: %s, empty (`make lab-install` pushes Weft's images)\n", RegistryAddr)
	}
	return fmt.Sprintf("registry: %s: %s\n", RegistryAddr, strings.Join(cat.Repositories, ", "))
}
