package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// rootfs is the root filesystem of an image container: an overlay of the
// stored image (Lower) with a per-container Upper/Work, mounted at Merged
// inside the container's private mount namespace, with the kernel
// filesystems and Mounts on top.
type rootfs struct {
	Lower, Upper, Work, Merged string
	ReadOnly                   bool // readOnlyRootFilesystem
	Privileged                 bool
	Mounts                     []bindMount // /etc files and volumes; Target is a path in the container
	Workdir                    string      // created when missing, as runc does
}

// defaultDevices are the host devices every container gets in its /dev.
var defaultDevices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// Paths runc masks or makes read-only in unprivileged containers.
var (
	maskedPaths   = []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// setupRootfs runs on the locked thread that forks the container process,
// after it entered a new mount namespace (a slave of the host's) and the
// pod's netns (sysfs shows the netns of its mounter). It leaves the thread
// chrooted into the container's root, in its working directory; the process
// forked next inherits both. Sources of bind mounts are opened before the
// chroot and mounted through /proc/self/fd, so they need not be visible
// inside the container.
func setupRootfs(r rootfs) error {
	srcs, err := openMountSources(r)
	if err != nil {
		return err
	}
	defer srcs.close()
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", r.Lower, r.Upper, r.Work)
	if err := unix.Mount("overlay", r.Merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay on %s (%s): %w", r.Merged, opts, err)
	}
	if err := unix.Chroot(r.Merged); err != nil {
		return fmt.Errorf("chroot %s: %w", r.Merged, err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := mountSystem(r.Privileged, srcs); err != nil {
		return err
	}
	for i, m := range r.Mounts {
		if err := bindInRoot(srcs.fds[i], srcs.dirs[i], m); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(r.Workdir, 0o755); err != nil {
		return fmt.Errorf("create working directory %s: %w", r.Workdir, err)
	}
	if r.ReadOnly {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount the root filesystem read-only: %w", err)
		}
	}
	if err := unix.Chdir(r.Workdir); err != nil {
		return fmt.Errorf("chdir to cwd (%q) set in the container failed: %w", r.Workdir, err)
	}
	return nil
}

// mountSources are O_PATH descriptors of the host paths a container's
// mounts come from: r.Mounts in order, then the devices.
type mountSources struct {
	fds     []int
	dirs    []bool
	devices map[string]int
	hostDev []hostDevice // privileged: every device node of the host
}

func openMountSources(r rootfs) (*mountSources, error) {
	s := &mountSources{devices: map[string]int{}}
	open := func(p string) (int, bool, error) {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, false, fmt.Errorf("open mount source %s: %w", p, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return -1, false, fmt.Errorf("stat mount source %s: %w", p, err)
		}
		return fd, st.Mode&unix.S_IFMT == unix.S_IFDIR, nil
	}
	for _, m := range r.Mounts {
		fd, dir, err := open(m.Source)
		if err != nil {
			s.close()
			return nil, err
		}
		s.fds, s.dirs = append(s.fds, fd), append(s.dirs, dir)
	}
	for _, d := range defaultDevices {
		fd, _, err := open("/dev/" + d)
		if err != nil {
			s.close()
			return nil, err
		}
		s.devices[d] = fd
	}
	if r.Privileged {
		s.hostDev = hostDevices()
	}
	return s, nil
}

func (s *mountSources) close() {
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	for _, fd := range s.devices {
		unix.Close(fd)
	}
}

// fdPath is the path through which the kernel reaches an open descriptor
// (the container's fresh /proc shows this process too: no PID namespace).
func fdPath(fd int) string { return fmt.Sprintf("/proc/self/fd/%d", fd) }

// mountSystem mounts /proc, /dev and /sys in the container root and, for
// unprivileged containers, masks and write-protects the paths runc does.
// /proc comes first: the other mounts reach their sources through it.
func mountSystem(privileged bool, srcs *mountSources) error {
	if err := mountFS("proc", "/proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := mountDev(srcs); err != nil {
		return err
	}
	sysFlags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !privileged {
		sysFlags |= unix.MS_RDONLY
	}
	if err := mountFS("sysfs", "/sys", sysFlags, ""); err != nil {
		return err
	}
	if privileged {
		return nil
	}
	for _, p := range readonlyPaths {
		if err := unix.Mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return fmt.Errorf("bind %s read-only: %w", p, err)
		}
		if err := unix.Mount("", p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", p, err)
		}
	}
	for _, p := range maskedPaths {
		if err := maskPath(p); err != nil {
			return err
		}
	}
	return nil
}

// maskPath hides a file under /dev/null and a directory under an empty
// read-only tmpfs.
func maskPath(p string) error {
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case st.IsDir():
		err = unix.Mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
	default:
		err = unix.Mount("/dev/null", p, "", unix.MS_BIND, "")
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	return nil
}

// mountFS mounts a fresh kernel or tmpfs filesystem, creating the mount point.
func mountFS(fstype, target string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create mount point %s: %w", target, err)
	}
	if err := unix.Mount(fstype, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
	}
	return nil
}

// mountDev gives the container a /dev of its own: a tmpfs with the default
// devices bind-mounted from the host (and every other host device node for
// privileged containers), a new devpts instance and a /dev/shm tmpfs.
func mountDev(srcs *mountSources) error {
	if err := mountFS("tmpfs", "/dev", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	for _, d := range defaultDevices {
		if err := bindFD(srcs.devices[d], false, "/dev/"+d); err != nil {
			return err
		}
	}
	for _, d := range srcs.hostDev {
		if err := d.create(); err != nil {
			return err
		}
	}
	if err := mountFS("devpts", "/dev/pts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"); err != nil {
		return err
	}
	if err := mountFS("tmpfs", "/dev/shm", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
		return err
	}
	for link, target := range map[string]string{"/dev/ptmx": "pts/ptmx", "/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, link); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", link, err)
		}
	}
	return nil
}

// bindInRoot bind-mounts an opened source at m.Target in the container,
// creating the mount point there (not on the host). Mounts are rprivate
// (mountPropagation None) unless m.Propagate asks for rslave
// (HostToContainer).
func bindInRoot(fd int, dir bool, m bindMount) error {
	if err := bindFD(fd, dir, m.Target); err != nil {
		return err
	}
	if m.ReadOnly {
		if err := unix.Mount("", m.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", m.Target, err)
		}
	}
	prop := uintptr(unix.MS_PRIVATE)
	if m.Propagate {
		prop = unix.MS_SLAVE
	}
	if err := unix.Mount("", m.Target, "", unix.MS_REC|prop, ""); err != nil {
		return fmt.Errorf("set propagation of %s: %w", m.Target, err)
	}
	return nil
}

// bindFD bind-mounts (recursively) what fd refers to at target.
func bindFD(fd int, dir bool, target string) error {
	if err := ensureMountPoint(target, dir); err != nil {
		return err
	}
	if err := unix.Mount(fdPath(fd), target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("error mounting %q to rootfs at %q: %w", mountSourceName(fd), target, err)
	}
	return nil
}

// mountSourceName is the host path of an open descriptor, for errors.
func mountSourceName(fd int) string {
	p, err := os.Readlink(fdPath(fd))
	if err != nil {
		return fdPath(fd)
	}
	return p
}

// hostDevice is a device node of the host's /dev.
type hostDevice struct {
	Path     string
	Mode     uint32
	Rdev     uint64
	UID, GID uint32
}

// hostDevices lists the character and block devices of the host's /dev
// (not in pts, shm or mqueue), as a privileged container gets them.
func hostDevices() []hostDevice {
	var out []hostDevice
	_ = filepath.WalkDir("/dev", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (p == "/dev/pts" || p == "/dev/shm" || p == "/dev/mqueue") {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if d.Type()&(fs.ModeDevice|fs.ModeCharDevice) == 0 || unix.Lstat(p, &st) != nil {
			return nil
		}
		out = append(out, hostDevice{Path: p, Mode: st.Mode, Rdev: st.Rdev, UID: st.Uid, GID: st.Gid})
		return nil
	})
	return out
}

// create makes the device node in the container's /dev (a bound default
// device stays as it is).
func (d hostDevice) create() error {
	if _, err := os.Lstat(d.Path); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(d.Path), 0o755); err != nil {
		return err
	}
	if err := unix.Mknod(d.Path, d.Mode, int(d.Rdev)); err != nil {
		return fmt.Errorf("create device %s: %w", d.Path, err)
	}
	return os.Lchown(d.Path, int(d.UID), int(d.GID))
}

// validOverlayPath reports whether p can appear in overlay mount options.
func validOverlayPath(p string) bool { return !strings.ContainsAny(p, ",:\\") }
