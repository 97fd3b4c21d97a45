package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
)

// ErrImageNeverPull is reported (as ErrImageNeverPull) for an image that is
// not in the store when the container's imagePullPolicy is Never.
var ErrImageNeverPull = errors.New("image is not present with pull policy of Never")

// errInvalidImageName marks a reference that does not parse.
var errInvalidImageName = errors.New("invalid image name")

// imageStore keeps pulled images unpacked in a directory shared by the
// nodes of a lab:
//
//	<dir>/sha256-<hex>/rootfs       the flattened filesystem (an overlay lower dir)
//	<dir>/sha256-<hex>/config.json  the image config
//	<dir>/refs/<hash of ref>.json   what a reference resolved to when last pulled
//	<dir>/locks/                    flock files serializing pulls and unpacks
//
// <hex> is the digest of the image config (the image ID), so two references
// to one image share one filesystem.
type imageStore struct {
	dir string
}

// pulledImage is an image in the store.
type pulledImage struct {
	ID         string // sha256:<hex> of the image config
	RepoDigest string // <repository>@<digest the reference resolved to>, the kubelet's imageID
	Rootfs     string
	Config     v1.Config
}

// refRecord is the content of a refs/ file.
type refRecord struct {
	Ref        string `json:"ref"`
	ID         string `json:"id"`
	RepoDigest string `json:"repoDigest"`
}

// defaultPullPolicy is the apiserver's default for an empty
// imagePullPolicy: Always for :latest or no tag, else IfNotPresent.
func defaultPullPolicy(c corev1.Container) corev1.PullPolicy {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	ref, err := name.ParseReference(c.Image)
	if err != nil {
		return corev1.PullIfNotPresent
	}
	if t, ok := ref.(name.Tag); ok && t.TagStr() == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// parseRef parses an image reference; registries on loopback addresses are
// spoken to over plain HTTP (the lab's registry).
func parseRef(s string) (name.Reference, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errInvalidImageName, err)
	}
	host := ref.Context().RegistryStr()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); host == "localhost" || (err == nil && a.IsLoopback()) {
		return name.ParseReference(s, name.Insecure)
	}
	return ref, nil
}

// ensure makes the image of ref available as the kubelet's image manager
// does under policy: Always resolves the reference in the registry (and
// reuses an unpacked filesystem of the same image), IfNotPresent uses what
// the reference resolved to before and pulls otherwise, Never does not pull.
// Concurrent calls for one reference, in this process or another, pull once.
func (s *imageStore) ensure(ctx context.Context, ref string, policy corev1.PullPolicy) (pulledImage, error) {
	r, err := parseRef(ref)
	if err != nil {
		return pulledImage{}, err
	}
	if policy != corev1.PullAlways {
		if img, ok, err := s.lookup(r); err != nil || ok {
			return img, err
		}
		if policy == corev1.PullNever {
			return pulledImage{}, ErrImageNeverPull
		}
	}
	unlock, err := s.lock(ctx, "ref-"+refKey(r))
	if err != nil {
		return pulledImage{}, err
	}
	defer unlock()
	if policy != corev1.PullAlways { // pulled by someone else while we waited
		if img, ok, err := s.lookup(r); err != nil || ok {
			return img, err
		}
	}
	return s.pull(ctx, r)
}

// pull resolves r in its registry for linux/GOARCH, unpacks the image
// unless it is stored already, and records what r resolved to.
func (s *imageStore) pull(ctx context.Context, r name.Reference) (pulledImage, error) {
	desc, err := remote.Get(r,
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}),
		remote.WithUserAgent("weft-lab-node"))
	if err != nil {
		return pulledImage{}, err
	}
	img, err := desc.Image()
	if err != nil {
		return pulledImage{}, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return pulledImage{}, fmt.Errorf("read image config: %w", err)
	}
	if (cf.OS != "" && cf.OS != "linux") || (cf.Architecture != "" && cf.Architecture != runtime.GOARCH) {
		return pulledImage{}, fmt.Errorf("no match for platform in manifest: image is %s/%s, this node is linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	id, err := img.ConfigName()
	if err != nil {
		return pulledImage{}, err
	}
	if err := s.unpack(ctx, img, id); err != nil {
		return pulledImage{}, err
	}
	rec := refRecord{Ref: r.Name(), ID: id.String(), RepoDigest: r.Context().Digest(desc.Digest.String()).String()}
	if err := s.writeRef(r, rec); err != nil {
		return pulledImage{}, err
	}
	return s.load(rec)
}

// unpack writes the flattened filesystem and config of img into the store
// unless it is there already: into a temporary directory first, renamed
// into place when complete, under a lock per image.
func (s *imageStore) unpack(ctx context.Context, img v1.Image, id v1.Hash) error {
	final := s.imageDir(id)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	unlock, err := s.lock(ctx, dirName(id))
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	tmp := filepath.Join(s.dir, ".tmp-"+dirName(id))
	if err := os.RemoveAll(tmp); err != nil { // left by a crashed pull
		return fmt.Errorf("remove unfinished unpack: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(tmp, "rootfs"), 0o755); err != nil {
		return err
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("read image config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "config.json"), raw, 0o644); err != nil {
		return err
	}
	layers := mutate.Extract(img)
	defer layers.Close()
	if err := extractTar(layers, filepath.Join(tmp, "rootfs")); err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("unpack image %s: %w", id, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("store image %s: %w", id, err)
	}
	return nil
}

// lookup returns the image r resolved to when it was last pulled.
func (s *imageStore) lookup(r name.Reference) (pulledImage, bool, error) {
	b, err := os.ReadFile(s.refPath(r))
	if errors.Is(err, fs.ErrNotExist) {
		return pulledImage{}, false, nil
	}
	if err != nil {
		return pulledImage{}, false, err
	}
	var rec refRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return pulledImage{}, false, fmt.Errorf("read %s: %w", s.refPath(r), err)
	}
	img, err := s.load(rec)
	if errors.Is(err, fs.ErrNotExist) {
		return pulledImage{}, false, nil // the image was removed from the store
	}
	return img, err == nil, err
}

// load reads a stored image's config.
func (s *imageStore) load(rec refRecord) (pulledImage, error) {
	id, err := v1.NewHash(rec.ID)
	if err != nil {
		return pulledImage{}, fmt.Errorf("image id %q: %w", rec.ID, err)
	}
	f, err := os.Open(filepath.Join(s.imageDir(id), "config.json"))
	if err != nil {
		return pulledImage{}, err
	}
	defer f.Close()
	cf, err := v1.ParseConfigFile(f)
	if err != nil {
		return pulledImage{}, fmt.Errorf("parse config of image %s: %w", rec.ID, err)
	}
	return pulledImage{ID: rec.ID, RepoDigest: rec.RepoDigest, Rootfs: filepath.Join(s.imageDir(id), "rootfs"), Config: cf.Config}, nil
}

func (s *imageStore) writeRef(r name.Reference, rec refRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p := s.refPath(r)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}

// lock takes an exclusive flock on a lock file of the store, polling so
// that ctx can end the wait. flock excludes other open files of the same
// process too, so it serializes the nodes of one lab process as well.
func (s *imageStore) lock(ctx context.Context, key string) (func(), error) {
	dir := filepath.Join(s.dir, "locks")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *imageStore) imageDir(id v1.Hash) string { return filepath.Join(s.dir, dirName(id)) }

func (s *imageStore) refPath(r name.Reference) string {
	return filepath.Join(s.dir, "refs", refKey(r)+".json")
}

func dirName(id v1.Hash) string { return id.Algorithm + "-" + id.Hex }

// refKey names a reference in file names: a hash of its canonical form, so
// "nginx:1.27" and "index.docker.io/library/nginx:1.27" are one.
func refKey(r name.Reference) string {
	h := sha256.Sum256([]byte(r.Name()))
	return hex.EncodeToString(h[:16])
}
