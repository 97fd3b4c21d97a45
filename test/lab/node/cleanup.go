package node

import (
	"github.com/weft-mesh/weft/agent/datapath"

	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Cleanup removes every netns, veth, cgroup, mount and process of the lab
// nodes whose state files lie in stateRoot (or up to three levels below),
// and the host link and its routes.
// It is idempotent and works after a crash: processes are found through the
// node cgroups, namespaces by name. A missing stateRoot is not an error.
func Cleanup(stateRoot string) error {
	states, err := findStates(stateRoot)
	if err != nil {
		return err
	}
	var errs []error
	for _, st := range states {
		if err := cleanupNode(st); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", st.Name, err))
		}
	}
	return errors.Join(errs...)
}

func findStates(root string) ([]nodeState, error) {
	var states []nodeState
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() && rel != "." && strings.Count(rel, string(filepath.Separator)) >= 3 {
			return filepath.SkipDir
		}
		if d.IsDir() || d.Name() != stateFile {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var st nodeState
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if !nodeNameRE.MatchString(st.Name) || !filepath.IsAbs(st.CgroupRoot) || (st.Host != nil && !linkNameRE.MatchString(st.Host.Name)) {
			return fmt.Errorf("read %s: bad node state %+v", p, st)
		}
		st.dir = filepath.Dir(p)
		states = append(states, st)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find lab state in %s: %w", root, err)
	}
	return states, nil
}

// cleanupNode kills the node's processes, then removes its cgroups and netns.
// A weft agent that ran on the node may have left its redirect pinned (it
// keeps pins across restarts by design): those are removed first, the way
// `weft-agent cleanup` does it.
func cleanupNode(st nodeState) error {
	var errs []error
	if err := datapath.Cleanup(datapath.Config{Node: st.Name,
		CgroupPath: filepath.Join(nodeCgroup(st.CgroupRoot, st.Name), "kubepods")}); err != nil {
		errs = append(errs, fmt.Errorf("remove weft redirect pins: %w", err))
	}
	// The agent DaemonSet keeps its state in the hostPath /var/lib/weft,
	// one directory per node (manifests/agent.yaml): the node's disk goes
	// with the node.
	if err := os.RemoveAll(filepath.Join("/var/lib/weft", st.Name)); err != nil {
		errs = append(errs, fmt.Errorf("remove weft agent state: %w", err))
	}
	// The node's CNI directories (config, plugins, IPAM state) are its
	// disk too.
	if st.dir != "" {
		if err := os.RemoveAll(filepath.Join(st.dir, "cni")); err != nil {
			errs = append(errs, fmt.Errorf("remove node CNI dirs: %w", err))
		}
	}
	if err := removeCgroupTree(nodeCgroup(st.CgroupRoot, st.Name)); err != nil {
		errs = append(errs, err)
	}
	if err := cleanupHostLink(st.hostLink()); err != nil {
		errs = append(errs, fmt.Errorf("remove host link: %w", err))
	}
	// With their processes gone, the image containers' overlays went with
	// their mount namespaces; their upper and work dirs remain.
	if err := removeContainerDirs(st.dir); err != nil {
		errs = append(errs, err)
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if ownedNetns(st.Name, e.Name()) || (st.Fabric != "" && e.Name() == st.Fabric) {
			if err := deleteNetns(e.Name()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Remove the parent weft-lab cgroup when this was its last node.
	_ = syscall.Rmdir(filepath.Join(st.CgroupRoot, cgroupTop))
	return errors.Join(errs...)
}

// removeContainerDirs removes the image containers' filesystems
// (<StateDir>/pods/*/containers) of a node.
func removeContainerDirs(stateDir string) error {
	if stateDir == "" {
		return nil
	}
	dirs, err := filepath.Glob(filepath.Join(stateDir, "pods", "*", "containers"))
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove container filesystems: %w", err))
		}
	}
	return errors.Join(errs...)
}

// deleteNetns removes a named netns (its links and routes go with it).
func deleteNetns(name string) error {
	if err := ip("netns", "delete", name); err != nil {
		// A file left without its bind mount: just remove it.
		_ = syscall.Unmount(netnsPath(name), syscall.MNT_DETACH)
		if rerr := os.Remove(netnsPath(name)); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fmt.Errorf("delete netns %s: %w", name, err)
		}
	}
	return nil
}

// removeCgroupTree kills every process in a cgroup subtree and removes it.
func removeCgroupTree(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := killCgroup(dir); err != nil {
		return err
	}
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var errs []error
	for _, d := range dirs {
		if err := rmdirRetry(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killCgroup SIGKILLs every process in a cgroup subtree and waits until it
// is empty.
func killCgroup(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644); err != nil {
		// Kernels before 5.14 have no cgroup.kill: kill the listed pids.
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				for _, pid := range cgroupPids(p) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil || strings.Contains(string(b), "populated 0") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s still has processes after SIGKILL", dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cgroupPids lists the processes directly in a cgroup.
func cgroupPids(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// rmdirRetry removes an empty cgroup directory; the kernel may report EBUSY
// briefly after the last process exited.
func rmdirRetry(d string) error {
	var err error
	for i := 0; i < 100; i++ {
		err = syscall.Rmdir(d)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("remove cgroup %s: %w", d, err)
}
