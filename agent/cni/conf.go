package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// PluginType is the plugin's "type" in a conflist and its binary's name.
const PluginType = "weft-cni"

// DefaultTimeout bounds one call to the agent when the config sets none.
const DefaultTimeout = 10 * time.Second

// NetConf is weft-cni's entry in a conflist. The agent's installer writes
// it per node (install.Entry).
type NetConf struct {
	types.PluginConf
	// Node is the node this config was written for; the agent refuses
	// requests for another node.
	Node string `json:"node"`
	// Socket is the agent's CNI socket (absolute path).
	Socket string `json:"socket"`
	// Timeout bounds each call to the agent (Go duration); default 10s.
	Timeout string `json:"timeout,omitempty"`
	// ExcludeNamespaces are passed through without asking the agent: the
	// mesh's own namespace, whose pods (the controller) must start while
	// no agent serves the node. Never enrolled.
	ExcludeNamespaces []string `json:"excludeNamespaces,omitempty"`
	// LogLevel is debug, info, warn or error (default info); logs go to
	// stderr, which the runtime keeps with the error.
	LogLevel string `json:"logLevel,omitempty"`
}

// ErrInvalidConf says the network config is unusable.
var ErrInvalidConf = errors.New("invalid weft-cni config")

// ParseConf parses and validates stdin's network config.
func ParseConf(stdin []byte) (*NetConf, error) {
	var c NetConf
	if err := json.Unmarshal(stdin, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConf, err)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

func (c *NetConf) validate() error {
	var errs []error
	if c.Node == "" {
		errs = append(errs, errors.New("node is required"))
	}
	if !filepath.IsAbs(c.Socket) {
		errs = append(errs, fmt.Errorf("socket %q must be an absolute path", c.Socket))
	}
	if c.Timeout != "" {
		if d, err := time.ParseDuration(c.Timeout); err != nil || d <= 0 {
			errs = append(errs, fmt.Errorf("timeout %q must be a positive duration", c.Timeout))
		}
	}
	if _, err := c.level(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidConf, errors.Join(errs...))
	}
	return nil
}

// timeout is Timeout, or DefaultTimeout.
func (c *NetConf) timeout() time.Duration {
	if d, err := time.ParseDuration(c.Timeout); err == nil && d > 0 {
		return d
	}
	return DefaultTimeout
}

func (c *NetConf) level() (slog.Level, error) {
	var l slog.Level
	if c.LogLevel == "" {
		return slog.LevelInfo, nil
	}
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return l, fmt.Errorf("logLevel %q: %w", c.LogLevel, err)
	}
	return l, nil
}
