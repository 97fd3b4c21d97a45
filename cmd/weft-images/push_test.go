package main

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestPush pushes two images to a registry on 127.0.0.1 and pulls their
// indexes back, every platform.
func TestPush(t *testing.T) {
	out := t.TempDir()
	buildFake(t, out, "dev", testSource)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	reg := strings.TrimPrefix(srv.URL, "http://") + "/weft"
	dir := filepath.Join(out, "oci")
	var stdout strings.Builder
	cfg := pushConfig{Layout: dir, Registry: reg, Tag: "dev", As: "dev-1", Images: []string{"weft-agent", "echo"}}
	if err := push(context.Background(), cfg, &stdout); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for _, img := range cfg.Images {
		local, err := findIndex(layout.Path(dir), img+":dev")
		if err != nil {
			t.Fatal(err)
		}
		d, err := local.Digest()
		if err != nil {
			t.Fatal(err)
		}
		want.WriteString(reg + "/" + img + "@" + d.String() + "\n")
		ref, err := name.ParseReference(reg + "/" + img + ":dev-1")
		if err != nil {
			t.Fatal(err)
		}
		pulled, err := remote.Index(ref)
		if err != nil {
			t.Fatal(err)
		}
		checkPulled(t, pulled, d.String())
	}
	if stdout.String() != want.String() {
		t.Errorf("printed %q, want %q", stdout.String(), want.String())
	}
}

// checkPulled fails unless the pulled index has digest want and its
// platform images are there in full.
func checkPulled(t *testing.T, ii v1.ImageIndex, want string) {
	t.Helper()
	d, err := ii.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d.String() != want {
		t.Errorf("pulled %s, pushed %s", d, want)
	}
	m, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 2 {
		t.Errorf("pulled index has %d manifests, want 2", len(m.Manifests))
	}
	for _, d := range m.Manifests {
		img, err := ii.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, img)
	}
}

// readAll reads every layer of img: a remote layer checks its digest as it
// is read.
func readAll(t *testing.T, img v1.Image) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.ConfigFile(); err != nil {
		t.Error(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, rc)
		if cerr := rc.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Errorf("layer: %v", err)
		}
	}
}

func TestPushRef(t *testing.T) {
	tests := []struct {
		registry, want, scheme string
	}{
		{"127.0.0.1:5000/weft", "127.0.0.1:5000/weft/echo:dev", "http"},
		{"127.0.0.2:5000/weft", "127.0.0.2:5000/weft/echo:dev", "http"},
		{"localhost:5000/a/b/", "localhost:5000/a/b/echo:dev", "http"},
		{"[::1]:5000/weft", "[::1]:5000/weft/echo:dev", "http"},
		{"registry.example.com/weft", "registry.example.com/weft/echo:dev", "https"},
		{"ghcr.io/someone", "ghcr.io/someone/echo:dev", "https"},
	}
	for _, tt := range tests {
		ref, err := pushRef(tt.registry, "echo", "dev")
		if err != nil {
			t.Errorf("%s: %v", tt.registry, err)
			continue
		}
		if ref.String() != tt.want || ref.Registry.Scheme() != tt.scheme {
			t.Errorf("%s: %s over %s, want %s over %s", tt.registry, ref, ref.Registry.Scheme(), tt.want, tt.scheme)
		}
	}
	if _, err := pushRef("UPPER.example.com/Weft", "echo", "dev"); err == nil {
		t.Error("an invalid repository was accepted")
	}
}

func TestPushMissing(t *testing.T) {
	out := t.TempDir()
	buildFake(t, out, "dev", testSource)
	cfg := pushConfig{Layout: filepath.Join(out, "oci"), Registry: "127.0.0.1:1/weft", Tag: "v1", Images: []string{"echo"}}
	err := push(context.Background(), cfg, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no image echo:v1") {
		t.Errorf("push of a tag never built: %v", err)
	}
}
