package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
)

// writeLayout puts each image index into the OCI image layout at dir as
// <name>:<tag>, replacing the index of that name, then removes the blobs no
// index references any more. It returns "<name>:<tag> <digest>" lines.
func writeLayout(dir, tag string, images []built) (string, error) {
	p, err := openLayout(dir)
	if err != nil {
		return "", err
	}
	var lines strings.Builder
	for _, b := range images {
		ref := b.Spec.Name + ":" + tag
		err := p.ReplaceIndex(b.Index, match.Annotation(keyRefName, ref),
			layout.WithAnnotations(map[string]string{keyRefName: ref}))
		if err != nil {
			return "", fmt.Errorf("write %s: %w", ref, err)
		}
		d, err := b.Index.Digest()
		if err != nil {
			return "", err
		}
		fmt.Fprintf(&lines, "%s %s\n", ref, d)
	}
	return lines.String(), removeUnreferenced(p)
}

// openLayout opens the layout at dir, or starts one where there is no index.json.
func openLayout(dir string) (layout.Path, error) {
	_, err := os.Stat(filepath.Join(dir, "index.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return layout.Write(dir, empty.Index)
	}
	return layout.FromPath(dir)
}

// removeUnreferenced deletes the blobs that index.json does not reach.
func removeUnreferenced(p layout.Path) error {
	ii, err := p.ImageIndex()
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	if err := reachable(ii, keep); err != nil {
		return err
	}
	blobs := filepath.Join(string(p), "blobs", "sha256")
	files, err := os.ReadDir(blobs)
	if err != nil {
		return err
	}
	for _, f := range files {
		if !keep["sha256:"+f.Name()] {
			if err := os.Remove(filepath.Join(blobs, f.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// reachable adds to keep the digest of every blob under ii's manifests.
func reachable(ii v1.ImageIndex, keep map[string]bool) error {
	m, err := ii.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range m.Manifests {
		keep[d.Digest.String()] = true
		var err error
		if d.MediaType.IsIndex() {
			err = reachableIndex(ii, d.Digest, keep)
		} else if d.MediaType.IsImage() {
			err = reachableImage(ii, d.Digest, keep)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", d.Digest, err)
		}
	}
	return nil
}

func reachableIndex(ii v1.ImageIndex, h v1.Hash, keep map[string]bool) error {
	child, err := ii.ImageIndex(h)
	if err != nil {
		return err
	}
	return reachable(child, keep)
}

func reachableImage(ii v1.ImageIndex, h v1.Hash, keep map[string]bool) error {
	img, err := ii.Image(h)
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	keep[m.Config.Digest.String()] = true
	for _, l := range m.Layers {
		keep[l.Digest.String()] = true
	}
	return nil
}
