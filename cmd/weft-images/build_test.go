package main

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

var (
	amd64      = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64      = v1.Platform{OS: "linux", Architecture: "arm64"}
	testSource = source{Epoch: time.Unix(1700000000, 0).UTC(), Revision: "0123abcd", Version: "v9.9.9"}
)

// fakeBinaries writes a small file per command and platform into dir: the
// images do not look inside their binaries.
func fakeBinaries(t *testing.T, dir string, specs []imageSpec) binaries {
	t.Helper()
	bins := binaries{}
	for _, p := range []v1.Platform{amd64, arm64} {
		bins[p.String()] = map[string]string{}
		for _, c := range commands(specs) {
			path := filepath.Join(dir, p.OS+"_"+p.Architecture+"_"+c.Name)
			if err := os.WriteFile(path, []byte("fake "+c.Name+" for "+p.String()), 0o755); err != nil {
				t.Fatal(err)
			}
			bins[p.String()][c.Name] = path
		}
	}
	return bins
}

// buildFake builds the images from fake binaries into out/oci and returns
// digests.txt.
func buildFake(t *testing.T, out, tag string, src source) string {
	t.Helper()
	specs := imageSpecs(false)
	images, err := assemble(specs, []v1.Platform{amd64, arm64}, fakeBinaries(t, t.TempDir(), specs), src)
	if err != nil {
		t.Fatal(err)
	}
	var stdout strings.Builder
	if err := save(images, filepath.Join(out, "oci"), tag, amd64, &stdout); err != nil {
		t.Fatal(err)
	}
	digests, err := os.ReadFile(filepath.Join(out, "digests.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if stdout.String() != string(digests) {
		t.Errorf("printed %q, digests.txt %q", stdout.String(), digests)
	}
	return string(digests)
}

func TestBuildReproducible(t *testing.T) {
	first := buildFake(t, t.TempDir(), "dev", testSource)
	second := buildFake(t, t.TempDir(), "dev", testSource)
	if first != second {
		t.Errorf("two builds of the same source differ:\n%s\n%s", first, second)
	}
	if n := strings.Count(first, "\n"); n != 4 {
		t.Errorf("%d images in digests.txt, want 4:\n%s", n, first)
	}
	later := testSource
	later.Epoch = later.Epoch.Add(time.Second)
	if other := buildFake(t, t.TempDir(), "dev", later); other == first {
		t.Errorf("another SOURCE_DATE_EPOCH gave the same digests:\n%s", other)
	}
}

// TestRebuildReplaces: a rebuild replaces the entries of its name:tag and
// removes the blobs only they used; other tags stay.
func TestRebuildReplaces(t *testing.T) {
	out := t.TempDir()
	buildFake(t, out, "v1", testSource)
	v1Blobs := blobCount(t, out)
	for _, rev := range []string{"1111", "2222"} {
		src := testSource
		src.Revision = rev
		buildFake(t, out, "dev", src)
	}
	refs := refNames(t, filepath.Join(out, "oci"))
	want := []string{"echo:dev", "echo:v1", "toolbox:dev", "toolbox:v1", "weft-agent:dev", "weft-agent:v1", "weft-controller:dev", "weft-controller:v1"}
	if !slices.Equal(refs, want) {
		t.Errorf("index.json names %q, want %q", refs, want)
	}
	// Another revision changes the labels only: dev has its own configs and
	// manifests (4 images x 2 platforms each) and indexes (4); it shares the layers.
	if n, want := blobCount(t, out), v1Blobs+4*2*2+4; n != want {
		t.Errorf("%d blobs after two dev builds, want %d (v1's %d and the last dev's)", n, want, v1Blobs)
	}
}

func blobCount(t *testing.T, out string) int {
	t.Helper()
	files, err := os.ReadDir(filepath.Join(out, "oci", "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	return len(files)
}

// refNames lists the names in the layout's index.json, sorted.
func refNames(t *testing.T, dir string) []string {
	t.Helper()
	m := layoutManifest(t, dir)
	var refs []string
	for _, d := range m.Manifests {
		refs = append(refs, d.Annotations[keyRefName])
	}
	slices.Sort(refs)
	return refs
}

func layoutManifest(t *testing.T, dir string) *v1.IndexManifest {
	t.Helper()
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestLayoutImages(t *testing.T) {
	out := t.TempDir()
	buildFake(t, out, "dev", testSource)
	p := layout.Path(filepath.Join(out, "oci"))
	tests := []struct {
		name       string
		entrypoint string
		cmd        []string
		user       string
	}{
		{"weft-controller", "/usr/local/bin/weft-controller", nil, "65532:65532"},
		{"weft-agent", "/usr/local/bin/weft-agent", nil, "0:0"},
		{"echo", "/usr/local/bin/weft-echo", []string{"serve"}, "65532:65532"},
		{"toolbox", "/usr/local/bin/weft-echo", []string{"idle"}, "65532:65532"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ii, err := findIndex(p, tt.name+":dev")
			if err != nil {
				t.Fatal(err)
			}
			m, err := ii.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			want := wantLabels(tt.name)
			if !maps.Equal(m.Annotations, want) {
				t.Errorf("index annotations %v, want %v", m.Annotations, want)
			}
			if len(m.Manifests) != 2 {
				t.Fatalf("%d manifests, want 2 (amd64, arm64)", len(m.Manifests))
			}
			for i, p := range []v1.Platform{amd64, arm64} {
				d := m.Manifests[i]
				if d.Platform == nil || d.Platform.OS != p.OS || d.Platform.Architecture != p.Architecture {
					t.Errorf("manifest %d platform %v, want %v", i, d.Platform, p)
				}
				img, err := ii.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				checkImage(t, img, p, tt.entrypoint, tt.cmd, tt.user, want)
			}
		})
	}
}

func wantLabels(title string) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.source":   "https://github.com/weft-mesh/weft",
		"org.opencontainers.image.revision": "0123abcd",
		"org.opencontainers.image.version":  "v9.9.9",
		"org.opencontainers.image.created":  "2023-11-14T22:13:20Z",
		"org.opencontainers.image.title":    title,
	}
	for _, s := range imageSpecs(false) {
		if s.Name == title {
			l["org.opencontainers.image.description"] = s.Description
		}
	}
	return l
}

// checkImage checks the config and manifest of img and that its last layer
// holds the fake binary built for p.
func checkImage(t *testing.T, img v1.Image, p v1.Platform, entrypoint string, cmd []string, user string, labels map[string]string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if cf.OS != p.OS || cf.Architecture != p.Architecture || !cf.Created.Time.Equal(testSource.Epoch) || cf.RootFS.Type != "layers" {
		t.Errorf("%s: config os %q arch %q created %v rootfs %q", p.String(), cf.OS, cf.Architecture, cf.Created, cf.RootFS.Type)
	}
	if !slices.Equal(c.Entrypoint, []string{entrypoint}) || !slices.Equal(c.Cmd, cmd) || c.User != user {
		t.Errorf("%s: entrypoint %q cmd %q user %q; want %q %q %q", p.String(), c.Entrypoint, c.Cmd, c.User, entrypoint, cmd, user)
	}
	if !slices.Equal(c.Env, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}) {
		t.Errorf("%s: env %q", p.String(), c.Env)
	}
	if !maps.Equal(c.Labels, labels) {
		t.Errorf("%s: labels %v, want %v", p.String(), c.Labels, labels)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(m.Annotations, labels) {
		t.Errorf("%s: manifest annotations %v, want %v", p.String(), m.Annotations, labels)
	}
	checkBinaryLayer(t, img, p, strings.TrimPrefix(entrypoint, "/"))
}

func checkBinaryLayer(t *testing.T, img v1.Image, p v1.Platform, path string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 {
		t.Fatalf("%s: %d layers, want base and binaries", p.String(), len(layers))
	}
	for _, f := range readLayer(t, layers[1]) {
		if f.hdr.Name == path {
			if want := "fake " + filepath.Base(path) + " for " + p.String(); f.data != want || f.hdr.Mode != 0o755 {
				t.Errorf("%s: %s holds %q mode %o, want %q mode 755", p.String(), path, f.data, f.hdr.Mode, want)
			}
			return
		}
	}
	t.Errorf("%s: no %s in the binary layer", p.String(), path)
}

// TestArchive: the archive for kind is the host's image, tagged as the
// manifests name it; there is none for the other platform.
func TestArchive(t *testing.T) {
	out := t.TempDir()
	buildFake(t, out, "dev", testSource)
	tag, err := name.NewTag("ghcr.io/weft-mesh/weft-agent:dev")
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(filepath.Join(out, "weft-agent-amd64.tar"), &tag)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "amd64" || cf.Config.User != "0:0" {
		t.Errorf("archive arch %q user %q, want amd64 0:0", cf.Architecture, cf.Config.User)
	}
	checkBinaryLayer(t, img, amd64, "usr/local/bin/weft-agent")
	if _, err := os.Stat(filepath.Join(out, "weft-agent-arm64.tar")); err == nil {
		t.Error("an arm64 archive was written on an amd64 host")
	}
}
