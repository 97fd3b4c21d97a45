package node

import (
	"bytes"
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
}

// procSpec describes a process started inside lab namespaces.
type procSpec struct {
	Argv  []string
	Env   []string
	Dir   string
	Netns string // netns file to join; "" keeps the host netns
	Mntns string // mount namespace file to join (exec into a container); exclusive with Binds
	// Hostname, when set, gives the process a new UTS namespace with it.
	Hostname string
	Utsns    string // UTS namespace file to join (exec into a container)
	Binds    []bindMount
	Cgroup   string // cgroup v2 directory the process starts in
	Stdin    io.Reader
	Stdout   io.Writer
	Stderr   io.Writer
	// WaitDelay bounds how long Wait waits for stdio copying after exit.
	WaitDelay time.Duration
}

// startProc starts a process in the namespaces and cgroup of spec. With Binds
// the process gets a new mount namespace (a slave of the host's) holding
// them; with Mntns it joins that one. The process is its own process group.
func startProc(spec procSpec) (*exec.Cmd, error) {
	if len(spec.Argv) == 0 {
		return nil, fmt.Errorf("start process: empty command")
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	open := func(p string, flags int) (*os.File, error) {
		f, err := os.OpenFile(p, flags, 0)
		if err == nil {
			files = append(files, f)
		}
		return f, err
	}
	var netFD, mntFD, cgFD *os.File
	var err error
	if spec.Netns != "" {
		if netFD, err = open(spec.Netns, os.O_RDONLY); err != nil {
			return nil, fmt.Errorf("open netns: %w", err)
		}
	}
	if spec.Mntns != "" {
		if mntFD, err = open(spec.Mntns, os.O_RDONLY); err != nil {
			return nil, fmt.Errorf("open mount namespace: %w", err)
		}
	}
	var utsFD *os.File
	if spec.Utsns != "" {
		if utsFD, err = open(spec.Utsns, os.O_RDONLY); err != nil {
			return nil, fmt.Errorf("open uts namespace: %w", err)
		}
	}
	if spec.Cgroup != "" {
		if cgFD, err = open(spec.Cgroup, os.O_RDONLY|syscall.O_DIRECTORY); err != nil {
			return nil, fmt.Errorf("open cgroup: %w", err)
		}
	}
	cmd := exec.Command(spec.Argv[0], spec.Argv[1:]...)
	cmd.Env, cmd.Dir = spec.Env, spec.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = spec.Stdin, spec.Stdout, spec.Stderr
	cmd.WaitDelay = spec.WaitDelay
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if cgFD != nil {
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(cgFD.Fd())
	}
	errc := make(chan error, 1)
	go func() {
		// The thread's namespaces change for good: it stays locked and the
		// runtime ends it when this goroutine returns.
		runtime.LockOSThread()
		errc <- func() error {
			if mntFD != nil || len(spec.Binds) > 0 {
				if err := unix.Unshare(unix.CLONE_FS); err != nil {
					return fmt.Errorf("unshare fs: %w", err)
				}
			}
			if mntFD != nil {
				if err := unix.Setns(int(mntFD.Fd()), unix.CLONE_NEWNS); err != nil {
					return fmt.Errorf("join mount namespace: %w", err)
				}
			} else if len(spec.Binds) > 0 {
				if err := privateMounts(spec.Binds); err != nil {
					return err
				}
			}
			if utsFD != nil {
				if err := unix.Setns(int(utsFD.Fd()), unix.CLONE_NEWUTS); err != nil {
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
			if netFD != nil {
				if err := unix.Setns(int(netFD.Fd()), unix.CLONE_NEWNET); err != nil {
					return fmt.Errorf("join netns: %w", err)
				}
			}
			return cmd.Start()
		}()
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Argv[0], err)
	}
	return cmd, nil
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
