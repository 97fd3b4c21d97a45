package node

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ip runs the ip(8) command.
func ip(args ...string) error {
	cmd := exec.Command("ip", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// netnsPath is the bind-mount path of a named netns.
func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

// inNetns runs fn on an OS thread that has joined the netns at path. The
// thread returns to the original netns afterwards (or is discarded when it
// cannot). Sockets opened by fn stay in the netns.
func inNetns(path string, fn func() error) error {
	target, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- fmt.Errorf("open current netns: %w", err)
			return // thread stays locked and is discarded
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- ferr // thread stays locked in the wrong netns and dies with this goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// writeSysctl writes a /proc/sys file inside a netns.
func writeSysctl(netns, key, value string) error {
	return inNetns(netns, func() error {
		p := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
		if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// dialInNetns dials from inside a netns.
func dialInNetns(ctx context.Context, netns, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(netns, func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	return conn, err
}

// listenInNetns opens a TCP listener inside a netns.
func listenInNetns(netns, addr string) (net.Listener, error) {
	var ln net.Listener
	err := inNetns(netns, func() error {
		var lc net.ListenConfig
		l, err := lc.Listen(context.Background(), "tcp", addr)
		ln = l
		return err
	})
	return ln, err
}

// bindMount is one bind mount set up in a process's private mount namespace.
type bindMount struct {
	Source, Target string
	ReadOnly       bool
	Propagate      bool // image containers: rslave (mountPropagation HostToContainer) instead of rprivate
}

// procSpec describes a process started inside lab namespaces.
type procSpec struct {
	Argv  []string
	Env   []string
	Dir   string
	Netns string // netns file to join; "" keeps the host netns
	Mntns string // mount namespace file to join (exec into a container); exclusive with Binds and Root
	// Chroot, with Mntns, is the root of an image container inside that
	// mount namespace (its overlay's merged directory): exec into it.
	Chroot string
	// Root gives the process a new mount namespace holding an image
	// container's root filesystem, and chroots into it; exclusive with Mntns
	// and Binds.
	Root *rootfs
	// Hostname, when set, gives the process a new UTS namespace with it.
	Hostname string
	Utsns    string // UTS namespace file to join (exec into a container)
	Binds    []bindMount
	Cgroup   string // cgroup v2 directory the process starts in
	// Security limits an image container's process; nil keeps the node's
	// identity and capabilities (containers on the host filesystem).
	Security *procSecurity
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	// WaitDelay bounds how long Wait waits for stdio copying after exit.
	WaitDelay time.Duration
}

// procSecurity is who an image container's processes run as and what they
// may do.
type procSecurity struct {
	ID         identity
	Caps       capSet // the bounding set; also the effective set of a root process
	Privileged bool   // every capability
	NoNewPrivs bool   // allowPrivilegeEscalation: false
}

// inRoot reports whether the process runs in an image container's root,
// where its program is looked up (with the PATH of Env).
func (s procSpec) inRoot() bool { return s.Root != nil || s.Chroot != "" }

// startProc starts a process in the namespaces and cgroup of spec. With Binds
// the process gets a new mount namespace (a slave of the host's) holding
// them; with Root one holding an image container's root filesystem; with
// Mntns it joins that one. The process is its own process group.
//
// All of it happens on a thread of onDisposableThread that forks the process
// and then ends (the runtime never clones a locked thread either): its
// namespaces, root directory and capability bounding set change for good,
// and the process inherits them.
func startProc(spec procSpec) (*exec.Cmd, error) {
	if len(spec.Argv) == 0 {
		return nil, fmt.Errorf("start process: empty command")
	}
	files, err := openProcFiles(spec)
	if err != nil {
		return nil, err
	}
	defer files.close()
	var cmd *exec.Cmd
	onDisposableThread(func() { cmd, err = forkIn(spec, files) })
	switch {
	case err != nil && spec.inRoot():
		return nil, fmt.Errorf("unable to start container process: %w", err)
	case err != nil:
		return nil, fmt.Errorf("start %s: %w", spec.Argv[0], err)
	}
	return cmd, nil
}

// onDisposableThread runs fn on an OS thread locked to it that ends when fn
// returns, so whatever fn changes about the thread (namespaces, root,
// capabilities) never reaches other goroutines. The main thread is never
// used: it cannot end (the runtime parks it for good) and /proc/self shows
// it, so the process would keep fn's namespaces alive and show them there.
func onDisposableThread(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// While this goroutine holds the main thread, the new one
			// cannot run on it.
			onDisposableThread(fn)
			runtime.UnlockOSThread()
			return
		}
		fn() // never unlocked: the runtime ends the thread with the goroutine
	}()
	<-done
}

// procFiles are the namespace and cgroup files a process starts in.
type procFiles struct {
	net, mnt, uts, cgroup *os.File
}

func openProcFiles(spec procSpec) (*procFiles, error) {
	f := &procFiles{}
	for _, o := range []struct {
		path, what string
		flags      int
		dst        **os.File
	}{
		{spec.Netns, "netns", os.O_RDONLY, &f.net},
		{spec.Mntns, "mount namespace", os.O_RDONLY, &f.mnt},
		{spec.Utsns, "uts namespace", os.O_RDONLY, &f.uts},
		{spec.Cgroup, "cgroup", os.O_RDONLY | syscall.O_DIRECTORY, &f.cgroup},
	} {
		if o.path == "" {
			continue
		}
		file, err := os.OpenFile(o.path, o.flags, 0)
		if err != nil {
			f.close()
			return nil, fmt.Errorf("open %s: %w", o.what, err)
		}
		*o.dst = file
	}
	return f, nil
}

func (f *procFiles) close() {
	for _, file := range []*os.File{f.net, f.mnt, f.uts, f.cgroup} {
		if file != nil {
			file.Close()
		}
	}
}

// forkIn runs on the locked thread of startProc: it moves the thread into
// the process's namespaces and root, looks the program up there, limits
// the thread's capabilities and forks.
func forkIn(spec procSpec, f *procFiles) (*exec.Cmd, error) {
	if err := enterNamespaces(spec, f); err != nil {
		return nil, err
	}
	path := spec.Argv[0]
	if spec.inRoot() {
		p, err := lookPathIn(path, envValue(spec.Env, "PATH"))
		if err != nil {
			return nil, err
		}
		path = p
	}
	if s := spec.Security; s != nil {
		if err := applyCaps(s.Caps, s.Privileged, s.NoNewPrivs); err != nil {
			return nil, err
		}
	}
	cmd := exec.Command(path, spec.Argv[1:]...)
	cmd.Args[0] = spec.Argv[0]
	cmd.Env = spec.Env
	if !spec.inRoot() {
		cmd.Dir = spec.Dir // an image container's is the thread's working directory already
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = spec.Stdin, spec.Stdout, spec.Stderr
	cmd.WaitDelay = spec.WaitDelay
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s := spec.Security; s != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: s.ID.UID, Gid: s.ID.GID, Groups: s.ID.Groups}
	}
	if f.cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(f.cgroup.Fd())
	}
	if err := cmd.Start(); err != nil {
		return nil, execError(path, err)
	}
	return cmd, nil
}

// enterNamespaces moves the calling (locked) thread into the namespaces of
// spec. The netns comes first: a sysfs mounted later shows its links.
func enterNamespaces(spec procSpec, f *procFiles) error {
	if f.mnt != nil || len(spec.Binds) > 0 || spec.Root != nil {
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			return fmt.Errorf("unshare fs: %w", err)
		}
	}
	if f.net != nil {
		if err := unix.Setns(int(f.net.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("join netns: %w", err)
		}
	}
	if err := enterMounts(spec, f); err != nil {
		return err
	}
	if f.uts != nil {
		if err := unix.Setns(int(f.uts.Fd()), unix.CLONE_NEWUTS); err != nil {
			return fmt.Errorf("join uts namespace: %w", err)
		}
	} else if spec.Hostname != "" {
		if err := unix.Unshare(unix.CLONE_NEWUTS); err != nil {
			return fmt.Errorf("unshare uts namespace: %w", err)
		}
		if err := unix.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("set hostname: %w", err)
		}
	}
	return nil
}

// enterMounts joins or creates the process's mount namespace and root.
func enterMounts(spec procSpec, f *procFiles) error {
	switch {
	case f.mnt != nil:
		if err := unix.Setns(int(f.mnt.Fd()), unix.CLONE_NEWNS); err != nil {
			return fmt.Errorf("join mount namespace: %w", err)
		}
		if spec.Chroot == "" {
			return nil
		}
		if err := unix.Chroot(spec.Chroot); err != nil {
			return fmt.Errorf("chroot %s: %w", spec.Chroot, err)
		}
		dir := cmp.Or(spec.Dir, "/")
		if err := unix.Chdir(dir); err != nil {
			return fmt.Errorf("chdir to cwd (%q) set in the container failed: %w", dir, err)
		}
	case spec.Root != nil:
		if err := privateMounts(nil); err != nil {
			return err
		}
		return setupRootfs(*spec.Root)
	case len(spec.Binds) > 0:
		return privateMounts(spec.Binds)
	}
	return nil
}

// privateMounts moves the calling thread into a new mount namespace whose
// mounts do not propagate back to the host and applies binds.
func privateMounts(binds []bindMount) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / rslave: %w", err)
	}
	for _, b := range binds {
		if err := unix.Mount(b.Source, b.Target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", b.Source, b.Target, err)
		}
		if b.ReadOnly {
			if err := unix.Mount("", b.Target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("remount %s read-only: %w", b.Target, err)
			}
		}
	}
	return nil
}
