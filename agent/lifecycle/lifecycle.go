// Package lifecycle starts a process's components in order and stops them
// in reverse, in the manner of Cilium's start and stop hooks: a component
// that another one uses starts before it and stops after it.
//
// It lives under agent/ because the repository has no top-level home shared
// by agent and controller other than api/, which holds contracts; the
// controller waits on its loops with an errgroup instead.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
)

// Hook is one component's start and stop. Either function may be nil.
type Hook struct {
	Name  string
	Start func(context.Context) error
	Stop  func(context.Context) error
}

// Lifecycle is an ordered list of hooks. The zero value is ready to use;
// it is not safe for concurrent use.
type Lifecycle struct {
	hooks   []Hook
	started int // hooks[:started] have started
}

// Append adds h after the hooks already added.
func (l *Lifecycle) Append(h Hook) { l.hooks = append(l.hooks, h) }

// Start runs the start functions in order. When one fails, Start stops the
// hooks that had started (in reverse) and returns the failure joined with
// any error of those stops.
func (l *Lifecycle) Start(ctx context.Context) error {
	for _, h := range l.hooks[l.started:] {
		if h.Start != nil {
			if err := h.Start(ctx); err != nil {
				err = fmt.Errorf("start %s: %w", h.Name, err)
				return errors.Join(err, l.Stop(context.WithoutCancel(ctx)))
			}
		}
		l.started++
	}
	return nil
}

// Stop runs the stop functions of the started hooks in reverse order, each
// even when an earlier one failed, and returns their errors joined.
func (l *Lifecycle) Stop(ctx context.Context) error {
	var errs []error
	for ; l.started > 0; l.started-- {
		h := l.hooks[l.started-1]
		if h.Stop == nil {
			continue
		}
		if err := h.Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", h.Name, err))
		}
	}
	return errors.Join(errs...)
}
