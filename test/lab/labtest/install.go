package labtest

import (
	"context"
	"io"
	"sync"

	"github.com/weft-mesh/weft/test/lab"
)

var built sync.Map // tags built into the test layout by this process

// BuildImages builds Weft's images for the host platform from the code under test into
// the lab's test layout (lab.Paths.TestImageLayout), tagged tag. A version makes the
// binaries differ from another tag's: a second release to upgrade to.
func (l *Lab) BuildImages(ctx context.Context, tag, version string, out io.Writer) error {
	if err := lab.BuildImages(ctx, l.Paths, l.Paths.TestImageLayout(), tag, version, out); err != nil {
		return err
	}
	built.Store(tag, true)
	return nil
}

// InstallWeft installs (or upgrades to) the images of tag, with method, as a user does:
// see lab.Install. A tag this process has not built yet is built first, from the code
// under test. Extra Helm values go in set.
func (l *Lab) InstallWeft(ctx context.Context, method lab.InstallMethod, tag string, out io.Writer, set ...string) error {
	if _, ok := built.Load(tag); !ok {
		if err := l.BuildImages(ctx, tag, "", out); err != nil {
			return err
		}
	}
	return lab.Install(ctx, lab.InstallConfig{
		Paths: l.Paths, Method: method, Tag: tag, Layout: l.Paths.TestImageLayout(), Set: set, Out: out,
	})
}

// UninstallWeft removes an install made with method.
func (l *Lab) UninstallWeft(ctx context.Context, method lab.InstallMethod, out io.Writer) error {
	return lab.Uninstall(ctx, lab.InstallConfig{Paths: l.Paths, Method: method, Out: out})
}
