// Package datapathtest supports the privileged tests of packages that open
// the datapath (agent/datapath, agent/cni). It imports no Weft package, so
// datapath's own tests can use it.
package datapathtest

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// BPFFS is where the datapath pins, as on a node.
const BPFFS = "/sys/fs/bpf"

// EnsureBPFFS makes BPFFS a bpffs when it is not one and the process is
// root, as the agent DaemonSet's init container does on a node (a fresh
// machine may have none: the datapath refuses to pin elsewhere). restore
// unmounts it again when EnsureBPFFS mounted it, so the host is left as it
// was found. Call it from TestMain around m.Run.
func EnsureBPFFS() (restore func(), err error) {
	var st unix.Statfs_t
	if os.Geteuid() != 0 || unix.Statfs(BPFFS, &st) == nil && st.Type == unix.BPF_FS_MAGIC {
		return func() {}, nil
	}
	if err := os.MkdirAll(BPFFS, 0o755); err != nil {
		return nil, err
	}
	if err := unix.Mount("bpf", BPFFS, "bpf", 0, "mode=0700"); err != nil {
		return nil, fmt.Errorf("mount bpffs at %s for the privileged tests: %w", BPFFS, err)
	}
	return func() { unix.Unmount(BPFFS, 0) }, nil
}
