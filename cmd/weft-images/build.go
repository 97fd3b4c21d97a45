package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// build compiles the commands, assembles the images and writes them out.
func build(ctx context.Context, cfg buildConfig, stdout io.Writer) error {
	src, err := readSource(ctx, cfg.Src, os.Getenv("SOURCE_DATE_EPOCH"), cmp.Or(cfg.Version, cfg.Tag))
	if err != nil {
		return err
	}
	specs := imageSpecs(hasCNI(cfg.Src))
	tmp, err := os.MkdirTemp("", "weft-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bins, err := compile(ctx, cfg.Src, tmp, cmp.Or(cfg.Version, cfg.Tag), cfg.Platforms, commands(specs))
	if err != nil {
		return err
	}
	images, err := assemble(specs, cfg.Platforms, bins, src)
	if err != nil {
		return err
	}
	return save(images, cfg.Out, cfg.Tag, hostPlatform(), stdout)
}

func hostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

// save writes the images into the layout at dir and, beside it, the
// archives for host and digests.txt; it prints each image's digest.
func save(images []built, dir, tag string, host v1.Platform, stdout io.Writer) error {
	digests, err := writeLayout(dir, tag, images)
	if err != nil {
		return fmt.Errorf("layout %s: %w", dir, err)
	}
	parent := filepath.Dir(filepath.Clean(dir))
	for _, b := range images {
		if err := writeArchive(parent, tag, b, host); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(parent, "digests.txt"), []byte(digests), 0o644); err != nil {
		return err
	}
	_, err = io.WriteString(stdout, digests)
	return err
}
