package node

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"

	corev1 "k8s.io/api/core/v1"
)

// containerImage is a container's image: binary-mapped (Config.Images, run
// on the host filesystem) or pulled into the image store.
type containerImage struct {
	Image               // entrypoint, cmd and, when mapped, PATH directories
	pulled *pulledImage // nil when mapped
}

// containerImage finds or pulls the image of c.
func (k *kubelet) containerImage(ctx context.Context, c corev1.Container) (containerImage, error) {
	if img, ok := k.cfg.Images[c.Image]; ok {
		return containerImage{Image: img}, nil
	}
	if k.store == nil {
		return containerImage{}, errNotMapped(c.Image, k.cfg.Images)
	}
	p, err := k.store.ensure(ctx, c.Image, defaultPullPolicy(c))
	if err != nil {
		return containerImage{}, err
	}
	return containerImage{Image: Image{Entrypoint: p.Config.Entrypoint, Cmd: p.Config.Cmd}, pulled: &p}, nil
}

// launchPlan is what one start of a container runs, where and as whom.
type launchPlan struct {
	argv, env []string
	workdir   string
	imageID   string       // containerStatus.imageID
	pulled    *pulledImage // nil: on the host filesystem, as the node's root
	sec       *procSecurity
	readOnly  bool // readOnlyRootFilesystem
}

// plan computes a start of c from its image; when that fails, reason is
// the kubelet's waiting reason (CreateContainerConfigError for what the
// kubelet checks, CreateContainerError for what the runtime finds).
func (w *podWorker) plan(c corev1.Container, img containerImage) (launchPlan, string, error) {
	argv, env, err := w.containerCommand(c, img)
	if err != nil {
		return launchPlan{}, "CreateContainerConfigError", err
	}
	if img.pulled == nil {
		return launchPlan{argv: argv, env: withDefault(env, "HOME", "/root"), workdir: cmp.Or(c.WorkingDir, "/"), imageID: c.Image}, "", nil
	}
	cfg, pod := img.pulled.Config, w.pod()
	if err := verifyRunAsNonRoot(pod, c, cfg.User); err != nil {
		return launchPlan{}, "CreateContainerConfigError", err
	}
	id, err := imageIdentity(img.pulled.Rootfs, containerUserSpec(pod, c, cfg.User))
	if err != nil {
		return launchPlan{}, "CreateContainerError", err
	}
	caps, privileged := containerCaps(c.SecurityContext)
	sc := c.SecurityContext
	return launchPlan{
		argv:     argv,
		env:      withDefault(mergeImageEnv(cfg.Env, env), "HOME", id.Home),
		workdir:  cmp.Or(c.WorkingDir, cfg.WorkingDir, "/"),
		imageID:  img.pulled.RepoDigest,
		pulled:   img.pulled,
		sec:      &procSecurity{ID: id, Caps: caps, Privileged: privileged, NoNewPrivs: sc != nil && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation},
		readOnly: sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem,
	}, "", nil
}

// imageIdentity resolves a container's user against the image's own
// /etc/passwd and /etc/group (as containerd does: not against volumes
// mounted over them).
func imageIdentity(rootfs string, s userSpec) (identity, error) {
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return identity{}, err
	}
	defer root.Close()
	passwd, _ := root.ReadFile("etc/passwd") // a missing file is an empty one
	group, _ := root.ReadFile("etc/group")
	return resolveIdentity(s, passwd, group)
}

// launch starts one process instance, logging to its own file.
func (c *container) launch(p launchPlan, instance int) (*exec.Cmd, chan struct{}, error) {
	if err := os.MkdirAll(filepath.Dir(c.logPath(instance)), 0o755); err != nil {
		return nil, nil, err
	}
	logf, err := os.OpenFile(c.logPath(instance), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, nil, err
	}
	defer devnull.Close()
	spec := procSpec{Argv: p.argv, Env: p.env, Dir: p.workdir, Netns: c.w.netns, Hostname: c.w.hostname(),
		Cgroup: c.w.cgroup, Stdin: devnull, Stdout: logf, Stderr: logf}
	var root *execRoot
	if p.pulled == nil {
		err = c.w.onHost(&spec, c.spec)
	} else {
		root, err = c.inImageRoot(&spec, p)
	}
	if err != nil {
		return nil, nil, err
	}
	cmd, err := startProc(spec)
	if err != nil {
		return nil, nil, err
	}
	exited := make(chan struct{})
	c.mu.Lock()
	c.cmd, c.env, c.root, c.exited, c.alive = cmd, p.env, root, exited, true
	c.mu.Unlock()
	if c.stopping() { // stop ran while this process started
		c.kill(syscall.SIGTERM)
	}
	return cmd, exited, nil
}

// onHost completes spec for a container on the host filesystem: the program
// from the image's and the node's PATH directories, volumes bound over host
// paths.
func (w *podWorker) onHost(spec *procSpec, c corev1.Container) error {
	path, err := lookPath(spec.Argv[0], w.k.cfg.pathDirs(c.Image))
	if err != nil {
		return err
	}
	spec.Argv = append([]string{path}, spec.Argv[1:]...)
	spec.Binds, err = w.binds(c)
	return err
}

// execRoot is where an exec into an image container runs.
type execRoot struct {
	merged  string // the root, valid inside the container's mount namespace
	workdir string
	sec     *procSecurity
}

// inImageRoot completes spec for an image container: a fresh overlay of the
// image (upper and work dirs are recreated on every start, as a runtime
// creates a new container) with the pod's files and volumes.
func (c *container) inImageRoot(spec *procSpec, p launchPlan) (*execRoot, error) {
	dir := filepath.Join(c.w.dir, "containers", c.spec.Name)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("remove the previous container filesystem: %w", err)
	}
	r := rootfs{Lower: p.pulled.Rootfs, Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"),
		Merged: filepath.Join(dir, "merged"), ReadOnly: p.readOnly, Privileged: p.sec.Privileged, Workdir: p.workdir}
	for _, d := range []string{r.Upper, r.Work, r.Merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// The overlay's root directory takes its owner and mode from upper.
	if st, err := os.Stat(r.Lower); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			_ = os.Chown(r.Upper, int(sys.Uid), int(sys.Gid))
		}
		_ = os.Chmod(r.Upper, st.Mode().Perm())
	}
	mounts, err := c.w.rootMounts(c.spec, p.readOnly)
	if err != nil {
		return nil, err
	}
	r.Mounts = mounts
	spec.Root, spec.Security = &r, p.sec
	return &execRoot{merged: r.Merged, workdir: p.workdir, sec: p.sec}, nil
}

// rootMounts lists an image container's mounts, targets inside the
// container: /etc/hosts, /etc/hostname and /etc/resolv.conf (read-only with
// readOnlyRootFilesystem, as containerd does; skipped when a volumeMount
// covers them), then the volumeMounts.
func (w *podWorker) rootMounts(c corev1.Container, readOnly bool) ([]bindMount, error) {
	vols, err := w.volumeMounts(c)
	if err != nil {
		return nil, err
	}
	var out []bindMount
	for _, m := range []bindMount{
		{Source: w.hostsFile, Target: "/etc/hosts", ReadOnly: readOnly},
		{Source: w.hostnameFile, Target: "/etc/hostname", ReadOnly: readOnly},
		{Source: cmp.Or(w.resolv, "/etc/resolv.conf"), Target: "/etc/resolv.conf", ReadOnly: readOnly},
	} {
		if !slices.ContainsFunc(vols, func(v bindMount) bool { return filepath.Clean(v.Target) == m.Target }) {
			out = append(out, m)
		}
	}
	return append(out, vols...), nil
}
