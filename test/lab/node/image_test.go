package node

import (
	"archive/tar"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
)

// storeTestImage has two layers: the second deletes a file (whiteout),
// makes a directory opaque and adds a setuid file.
func storeTestImage(t *testing.T, arch, marker string) v1.Image {
	base := testLayer(t,
		tarFile{Name: "etc/", Type: tar.TypeDir},
		tarFile{Name: "etc/passwd", Body: "root:x:0:0:root:/root:/bin/sh\n"},
		tarFile{Name: "bin/", Type: tar.TypeDir},
		tarFile{Name: "bin/app", Body: "#!/bin/sh\n", Mode: 0o755},
		tarFile{Name: "bin/app-link", Type: tar.TypeLink, Link: "bin/app"},
		tarFile{Name: "gone", Body: "deleted above"},
		tarFile{Name: "opaque/", Type: tar.TypeDir},
		tarFile{Name: "opaque/old", Body: "hidden above"},
		tarFile{Name: "usr/lib/", Type: tar.TypeDir},
		tarFile{Name: "usr/lib/libx.so", Body: "lib"},
		tarFile{Name: "lib", Type: tar.TypeSymlink, Link: "usr/lib"},
		tarFile{Name: "abs", Type: tar.TypeSymlink, Link: "/etc/passwd"},
	)
	top := testLayer(t,
		tarFile{Name: ".wh.gone"},
		tarFile{Name: "opaque/", Type: tar.TypeDir},
		tarFile{Name: "opaque/.wh..wh..opq"},
		tarFile{Name: "opaque/new", Body: "new"},
		tarFile{Name: "srv/data/marker", Body: marker},
		tarFile{Name: "bin/su", Body: "x", Mode: 0o4755},
	)
	return testImage(t, arch, v1.Config{Entrypoint: []string{"/bin/app"}, User: "65532", Env: []string{"PATH=/bin"}}, base, top)
}

func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func TestImageStorePullsAndUnpacks(t *testing.T) {
	reg := testRegistry(t)
	ref := reg + "/lab/app:v1"
	digest := pushIndex(t, ref, storeTestImage(t, otherArch(), "wrong"), storeTestImage(t, runtime.GOARCH, "right"))
	s := &imageStore{dir: t.TempDir()}
	img, err := s.ensure(t.Context(), ref, corev1.PullIfNotPresent)
	if err != nil {
		t.Fatal(err)
	}
	if img.RepoDigest != reg+"/lab/app@"+digest.String() || img.Config.User != "65532" || img.Config.Entrypoint[0] != "/bin/app" {
		t.Errorf("pulled %+v, want repo digest %s", img, digest)
	}
	read := func(p string) string { b, _ := os.ReadFile(filepath.Join(img.Rootfs, p)); return string(b) }
	if read("srv/data/marker") != "right" || read("etc/passwd") == "" || read("opaque/new") != "new" || read("lib/libx.so") != "lib" {
		t.Errorf("unpacked filesystem is wrong: marker %q", read("srv/data/marker"))
	}
	for _, p := range []string{"gone", "opaque/old"} {
		if _, err := os.Lstat(filepath.Join(img.Rootfs, p)); err == nil {
			t.Errorf("%s survived its whiteout", p)
		}
	}
	if l, _ := os.Readlink(filepath.Join(img.Rootfs, "abs")); l != "/etc/passwd" {
		t.Errorf("absolute symlink = %q", l)
	}
	var a, b os.FileInfo
	if a, err = os.Stat(filepath.Join(img.Rootfs, "bin/app")); err == nil {
		b, err = os.Stat(filepath.Join(img.Rootfs, "bin/app-link"))
	}
	if err != nil || !os.SameFile(a, b) || a.Mode().Perm() != 0o755 {
		t.Errorf("bin/app and its hard link: %v", err)
	}
	if st, err := os.Stat(filepath.Join(img.Rootfs, "bin/su")); err != nil || st.Mode()&os.ModeSetuid == 0 {
		t.Errorf("setuid bit lost: %v", err)
	}
	if entries, _ := filepath.Glob(filepath.Join(s.dir, "*")); len(entries) != 3 { // the image, refs, locks
		t.Errorf("store holds %v", entries)
	}
}

func TestImageStoreConcurrentPullsShareOneImage(t *testing.T) {
	reg := testRegistry(t)
	ref := reg + "/lab/app:v1"
	pushIndex(t, ref, storeTestImage(t, runtime.GOARCH, "x"))
	s := &imageStore{dir: t.TempDir()}
	var wg sync.WaitGroup
	ids := make([]string, 6)
	errs := make([]error, 6)
	for i := range ids {
		wg.Go(func() {
			// A store value per goroutine, as two nodes of a lab have.
			img, err := (&imageStore{dir: s.dir}).ensure(t.Context(), ref, corev1.PullAlways)
			ids[i], errs[i] = img.ID, err
		})
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != ids[0] {
			t.Fatalf("pull %d: %s, %v (first %s)", i, ids[i], errs[i], ids[0])
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(s.dir, "sha256-*"))
	tmps, _ := filepath.Glob(filepath.Join(s.dir, ".tmp-*"))
	if len(dirs) != 1 || len(tmps) != 0 {
		t.Errorf("image dirs %v, temporary dirs %v", dirs, tmps)
	}
}

func TestImageStorePullPolicies(t *testing.T) {
	reg := testRegistry(t)
	ref := reg + "/lab/app:v1"
	pushIndex(t, ref, storeTestImage(t, runtime.GOARCH, "one"))
	s := &imageStore{dir: t.TempDir()}
	ctx := t.Context()
	if _, err := s.ensure(ctx, ref, corev1.PullNever); !errors.Is(err, ErrImageNeverPull) {
		t.Fatalf("Never before any pull: %v", err)
	}
	first, err := s.ensure(ctx, ref, corev1.PullIfNotPresent)
	if err != nil {
		t.Fatal(err)
	}
	if img, err := s.ensure(ctx, ref, corev1.PullNever); err != nil || img.ID != first.ID {
		t.Errorf("Never after a pull: %+v, %v", img, err)
	}
	// The tag moves: IfNotPresent keeps what it has, Always follows.
	pushImage(t, ref, storeTestImage(t, runtime.GOARCH, "two"))
	if img, err := s.ensure(ctx, ref, corev1.PullIfNotPresent); err != nil || img.ID != first.ID {
		t.Errorf("IfNotPresent after the tag moved: %+v, %v", img, err)
	}
	second, err := s.ensure(ctx, ref, corev1.PullAlways)
	if err != nil || second.ID == first.ID {
		t.Fatalf("Always after the tag moved: %+v, %v", second, err)
	}
	if b, _ := os.ReadFile(filepath.Join(second.Rootfs, "srv/data/marker")); string(b) != "two" {
		t.Errorf("Always unpacked %q", b)
	}
	if img, err := s.ensure(ctx, ref, corev1.PullIfNotPresent); err != nil || img.ID != second.ID {
		t.Errorf("IfNotPresent after Always: %+v, %v", img, err)
	}
	if _, err := s.ensure(ctx, reg+"/lab/app:missing", corev1.PullIfNotPresent); err == nil || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Errorf("missing image: %v", err)
	}
	if _, err := s.ensure(ctx, "Bad//Ref", corev1.PullIfNotPresent); !errors.Is(err, errInvalidImageName) {
		t.Errorf("bad reference: %v", err)
	}
	pushImage(t, reg+"/lab/foreign:v1", storeTestImage(t, otherArch(), "foreign"))
	if _, err := s.ensure(ctx, reg+"/lab/foreign:v1", corev1.PullIfNotPresent); err == nil || !strings.Contains(err.Error(), "no match for platform") {
		t.Errorf("image of another architecture: %v", err)
	}
}

func TestDefaultPullPolicy(t *testing.T) {
	for img, want := range map[string]corev1.PullPolicy{
		"nginx":               corev1.PullAlways,
		"nginx:latest":        corev1.PullAlways,
		"nginx:1.27":          corev1.PullIfNotPresent,
		"127.0.0.1:5000/a:v1": corev1.PullIfNotPresent,
		"nginx@sha256:0123456789012345678901234567890123456789012345678901234567890123": corev1.PullIfNotPresent,
	} {
		if got := defaultPullPolicy(corev1.Container{Image: img}); got != want {
			t.Errorf("%s: %s, want %s", img, got, want)
		}
	}
	if got := defaultPullPolicy(corev1.Container{Image: "nginx", ImagePullPolicy: corev1.PullNever}); got != corev1.PullNever {
		t.Errorf("explicit policy replaced: %s", got)
	}
}
