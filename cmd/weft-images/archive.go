package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// writeArchive writes dir/<name>-<arch>.tar, the image for host as a
// docker-archive tagged ghcr.io/weft-mesh/<name>:<tag>, for `kind load
// image-archive` (kind streams it into `ctr images import` on each node,
// which reads docker-archives and OCI archives). Nothing is written when the
// image was not built for host.
func writeArchive(dir, tag string, b built, host v1.Platform) error {
	img, ok := b.Images[host.String()]
	if !ok {
		return nil
	}
	ref, err := name.NewTag(repoPrefix + b.Spec.Name + ":" + tag)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, b.Spec.Name+"-"+host.Architecture+".tar")
	tmp := path + ".tmp"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("archive %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
