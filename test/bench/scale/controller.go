package scale

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"

	"github.com/weft-mesh/weft/controller"
	"github.com/weft-mesh/weft/controller/resolve"
)

// tokens authenticates simulated agent n by "tok-<n>".
type tokens struct{ nodes int }

func (t tokens) Authenticate(_ context.Context, token string) (string, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(token, "tok-"))
	if err != nil || n < 0 || n >= t.nodes || !strings.HasPrefix(token, "tok-") {
		return "", errors.New("unknown token")
	}
	return nodeName(n), nil
}

// Round is one resolution as the benchmark sees it: every version it
// pushes is above Base, and it saw the changes Seqs (SeqAnnotation).
type Round struct {
	Base uint64
	// Start and End of the resolution (Unix ns); the snapshot is taken
	// just before Start, the push made just after End.
	Start, End int64
	Seqs       []int
}

// ControllerConfig configures RunController.
type ControllerConfig struct {
	Kube  *rest.Config
	Nodes int
	// Debounce of the controller; its default when zero.
	Debounce time.Duration
	// Out receives "ADDR <grpc> <health>" once listening, then a line
	// "ROUND <base> <start> <end> <seq>..." per resolution and "STATS <status writes>
	// <resolutions>" every second.
	Out io.Writer
	Log *slog.Logger
}

// RunController runs weft's controller (controller.New, as weft-controller
// runs it, minus the CA) until ctx ends, reporting resolutions on Out.
func RunController(ctx context.Context, cfg ControllerConfig) error {
	var ctl atomic.Pointer[controller.Controller]
	var mu sync.Mutex
	seen := map[int]bool{}
	out := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(cfg.Out, format+"\n", args...)
	}
	wrapped := func(in resolve.Input) resolve.Output {
		start := time.Now().UnixNano()
		// versions this round pushes are above every version so far
		var base uint64
		if c := ctl.Load(); c != nil {
			for _, n := range c.Nodes() {
				base = max(base, n.Version)
			}
		}
		var seqs []string
		note := func(a map[string]string) {
			if v, ok := a[SeqAnnotation]; ok {
				if n, err := strconv.Atoi(v); err == nil && !seen[n] {
					seen[n] = true
					seqs = append(seqs, v)
				}
			}
		}
		for _, es := range in.EndpointSlices {
			note(es.Annotations)
		}
		for _, hr := range in.HTTPRoutes {
			note(hr.Annotations)
		}
		for i := range in.AuthorizationPolicies {
			note(in.AuthorizationPolicies[i].Annotations)
		}
		o := resolve.Resolve(in)
		out("ROUND %d %d %d %s", base, start, time.Now().UnixNano(), strings.Join(seqs, " "))
		return o
	}
	c, err := controller.New(controller.Config{
		Kube: cfg.Kube, GRPCAddr: "127.0.0.1:0", HealthAddr: "127.0.0.1:0",
		Authenticator: tokens{cfg.Nodes}, Debounce: cfg.Debounce, Resolve: wrapped,
		QPS: 2000, Burst: 4000, Logger: cfg.Log,
	})
	if err != nil {
		return err
	}
	ctl.Store(c)
	out("ADDR %s %s", c.GRPCAddr(), c.HealthAddr())
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				st := c.Stats()
				out("STATS %d %d", st.StatusWrites, st.Resolves)
			}
		}
	}()
	return c.Run(ctx)
}
