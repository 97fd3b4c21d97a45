package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The lab's image registry: Serve runs one on the host's loopback (go-containerregistry's
// registry, blobs on disk under Paths.Dir), and the node runtimes pull from it as a
// kubelet pulls from any registry. Weft's own images are pushed there and installed
// with their references rewritten to it, so the lab runs the images users run.
const (
	RegistryAddr = "127.0.0.1:5050"
	// ImageRepo is the repository prefix Weft's images are pushed under; the Helm
	// value image.registry of a lab install.
	ImageRepo = RegistryAddr + "/weft-mesh"
)

// WeftImages are the images of Weft's components that an install runs.
var WeftImages = []string{"weft-controller", "weft-agent"}

// InstallMethod is how Weft is installed: as users install it.
type InstallMethod string

const (
	// Helm installs the chart manifests/chart as release "weft" in weft-system.
	Helm InstallMethod = "helm"
	// Kustomize applies manifests/ through an overlay that sets the image references.
	Kustomize InstallMethod = "kustomize"
)

// Release and Namespace of a lab install.
const (
	Release   = "weft"
	Namespace = "weft-system"
)

// InstallConfig configures Install and Uninstall.
type InstallConfig struct {
	Paths  Paths
	Method InstallMethod // default Helm
	Tag    string        // image tag pushed and installed; default "dev"
	// Layout is the OCI image layout holding the images (`make images` writes
	// .cache/images/oci); default that.
	Layout string
	// Set holds extra Helm values (key=value), e.g. "logLevel=debug".
	Set []string
	Out io.Writer // progress and command output; default os.Stderr
}

func (c *InstallConfig) defaults() {
	c.Method = InstallMethod(strings.ToLower(string(c.Method)))
	if c.Method == "" {
		c.Method = Helm
	}
	if c.Tag == "" {
		c.Tag = "dev"
	}
	if c.Layout == "" {
		c.Layout = c.Paths.ImageLayout()
	}
	if c.Out == nil {
		c.Out = os.Stderr
	}
}

// ImageLayout is the OCI layout `make images` writes.
func (p Paths) ImageLayout() string { return filepath.Join(p.Root, ".cache", "images", "oci") }

// TestImageLayout is the layout test suites build (host platform only, so they run the
// code under test without the second architecture's build).
func (p Paths) TestImageLayout() string { return filepath.Join(p.Dir, "images-oci") }

// registryDir holds the lab registry's blobs.
func (p Paths) registryDir() string { return filepath.Join(p.Dir, "registry") }

// imageStore is where the node runtimes keep pulled images.
func (p Paths) imageStore() string { return filepath.Join(p.Dir, "images") }

// BuildImages builds Weft's images for the host platform into layout with tag (and
// version, which changes the binaries: two builds with different versions are two
// releases), through cmd/weft-images as `make images` does.
func BuildImages(ctx context.Context, p Paths, layout, tag, version string, out io.Writer) error {
	args := []string{"run", "./cmd/weft-images", "build", "-out", layout,
		"-platforms", "linux/" + runtime.GOARCH, "-tag", tag}
	if version != "" {
		args = append(args, "-version", version)
	}
	return run(ctx, p.Root, out, "go", args...)
}

// PushImages pushes Weft's images of tag from layout into the lab registry and
// returns the tag they got there: tag-<12 hex of their digests>, one per build, as a
// CI pushes one tag per commit. Installing it rolls the pods exactly when an image
// changed (a reused tag would leave running pods on the image their node has).
func PushImages(ctx context.Context, p Paths, layout, tag string, out io.Writer) (string, error) {
	build, err := buildTag(layout, tag)
	if err != nil {
		return "", err
	}
	return build, run(ctx, p.Root, out, filepath.Join(p.BinDir, "weft-images"), "push", "-layout", layout,
		"-registry", ImageRepo, "-tag", tag, "-as", build, "-images", strings.Join(WeftImages, ","))
}

// layoutEntry is a descriptor in an OCI layout's index.json.
type layoutEntry struct {
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
}

// buildTag is tag-<the first 12 hex of the SHA-256 of Weft's image digests>, read
// from the layout's index.json (the OCI image layout spec; entries named <name>:<tag>).
func buildTag(layout, tag string) (string, error) {
	b, err := os.ReadFile(filepath.Join(layout, "index.json"))
	if err != nil {
		return "", fmt.Errorf("no OCI image layout at %s (run `make images`): %w", layout, err)
	}
	var idx struct {
		Manifests []layoutEntry `json:"manifests"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return "", fmt.Errorf("read %s/index.json: %w", layout, err)
	}
	h := sha256.New()
	for _, img := range WeftImages {
		i := slices.IndexFunc(idx.Manifests, func(m layoutEntry) bool {
			return m.Annotations["org.opencontainers.image.ref.name"] == img+":"+tag
		})
		if i < 0 {
			return "", fmt.Errorf("no image %s:%s in the layout %s (run `make images`)", img, tag, layout)
		}
		fmt.Fprintln(h, idx.Manifests[i].Digest)
	}
	return fmt.Sprintf("%s-%x", tag, h.Sum(nil)[:6]), nil
}

// Install pushes Weft's images into the lab registry, installs Weft with its image
// references rewritten to it, and waits until the controller and every agent are
// rolled out. Run again, it upgrades (Helm) or re-applies (Kustomize).
func Install(ctx context.Context, cfg InstallConfig) error {
	cfg.defaults()
	tag, err := PushImages(ctx, cfg.Paths, cfg.Layout, cfg.Tag, cfg.Out)
	if err != nil {
		return err
	}
	fmt.Fprintf(cfg.Out, "installing %s/{%s}:%s with %s\n", ImageRepo, strings.Join(WeftImages, ","), tag, cfg.Method)
	switch cfg.Method {
	case Helm:
		args := []string{"upgrade", "--install", Release, filepath.Join(cfg.Paths.Root, "manifests", "chart"),
			"-n", Namespace, "--create-namespace", "--kubeconfig", cfg.Paths.Kubeconfig,
			"--set", "image.registry=" + ImageRepo, "--set", "image.tag=" + tag}
		for _, s := range cfg.Set {
			args = append(args, "--set", s)
		}
		if err := run(ctx, cfg.Paths.Root, cfg.Out, helmPath(cfg.Paths), args...); err != nil {
			return err
		}
	case Kustomize:
		dir, err := writeOverlay(cfg.Paths, tag)
		if err != nil {
			return err
		}
		if err := kubectl(ctx, cfg, "apply", "--server-side", "--force-conflicts", "-k", dir); err != nil {
			return err
		}
	default:
		return fmt.Errorf("install method %q: want helm or kustomize", cfg.Method)
	}
	return WaitRollout(ctx, cfg)
}

// WaitRollout waits until the controller Deployment and the agent DaemonSet are
// rolled out.
func WaitRollout(ctx context.Context, cfg InstallConfig) error {
	cfg.defaults()
	for _, obj := range []string{"deployment/weft-controller", "daemonset/weft-agent"} {
		if err := kubectl(ctx, cfg, "-n", Namespace, "rollout", "status", obj, "--timeout=300s"); err != nil {
			return err
		}
	}
	return nil
}

// Uninstall removes what Install installed and waits for it to be gone. Helm keeps
// the CRDs (Helm's convention for a chart's crds/); Kustomize deletes them with the
// rest of manifests/.
func Uninstall(ctx context.Context, cfg InstallConfig) error {
	cfg.defaults()
	switch cfg.Method {
	case Helm:
		return run(ctx, cfg.Paths.Root, cfg.Out, helmPath(cfg.Paths), "uninstall", Release,
			"-n", Namespace, "--kubeconfig", cfg.Paths.Kubeconfig, "--wait", "--timeout", "5m")
	case Kustomize:
		dir, err := writeOverlay(cfg.Paths, cfg.Tag)
		if err != nil {
			return err
		}
		return kubectl(ctx, cfg, "delete", "--wait=true", "--ignore-not-found", "-k", dir)
	default:
		return fmt.Errorf("uninstall method %q: want helm or kustomize", cfg.Method)
	}
}

// writeOverlay writes a kustomization that applies manifests/ with Weft's image
// references set to the lab registry (what `kustomize edit set image` writes) and
// returns its directory.
func writeOverlay(p Paths, tag string) (string, error) {
	dir := filepath.Join(p.Dir, "install-kustomize")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base, err := filepath.Rel(dir, filepath.Join(p.Root, "manifests"))
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by the lab: manifests/ with Weft's images from the lab registry.\n")
	fmt.Fprintf(&b, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- %s\nimages:\n", base)
	for _, img := range WeftImages {
		fmt.Fprintf(&b, "- name: ghcr.io/weft-mesh/%s\n  newName: %s/%s\n  newTag: %s\n", img, ImageRepo, img, tag)
	}
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(b.String()), 0o644)
}

// helmPath is the helm that `make tools` installs (pinned), else the one on PATH.
func helmPath(p Paths) string {
	h := filepath.Join(p.Root, ".cache", "tools", "helm")
	if _, err := os.Stat(h); err == nil {
		return h
	}
	return "helm"
}

func kubectl(ctx context.Context, cfg InstallConfig, args ...string) error {
	return run(ctx, cfg.Paths.Root, cfg.Out, filepath.Join(cfg.Paths.K8sBinDir, "kubectl"),
		append([]string{"--kubeconfig", cfg.Paths.Kubeconfig}, args...)...)
}

// run runs a command in dir with its output to out (and in the error when it fails).
func run(ctx context.Context, dir string, out io.Writer, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=auto")
	var buf bytes.Buffer
	cmd.Stdout = io.MultiWriter(out, &buf)
	cmd.Stderr = cmd.Stdout
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(buf.String())
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		return fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, msg)
	}
	return nil
}
