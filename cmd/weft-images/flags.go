package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// defaultLayout is where `make images` keeps the OCI image layout.
const defaultLayout = ".cache/images/oci"

type buildConfig struct {
	Src       string // module root the commands are built from
	Out       string // OCI image layout directory
	Platforms []v1.Platform
	Tag       string
	Version   string // org.opencontainers.image.version; default: Tag
}

type pushConfig struct {
	Layout   string
	Registry string // HOST[:PORT]/PATH
	Tag      string
	As       string // registry tag; default Tag
	Images   []string
}

func parseBuild(args []string) (buildConfig, error) {
	cfg := buildConfig{Src: "."}
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	fs.StringVar(&cfg.Out, "out", defaultLayout, "OCI image layout directory (created or updated)")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "comma-separated platforms of every image")
	fs.StringVar(&cfg.Tag, "tag", "dev", "tag of the images in the layout and in the archives")
	fs.StringVar(&cfg.Version, "version", "", "org.opencontainers.image.version (default: -tag)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	var err error
	cfg.Platforms, err = parsePlatforms(*platforms)
	return cfg, err
}

func parsePush(args []string) (pushConfig, error) {
	cfg := pushConfig{}
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	fs.StringVar(&cfg.Layout, "layout", defaultLayout, "OCI image layout written by build")
	fs.StringVar(&cfg.Registry, "registry", "", "where to push: HOST[:PORT]/PATH, e.g. registry.example.com/weft")
	fs.StringVar(&cfg.Tag, "tag", "dev", "tag to push (as built)")
	fs.StringVar(&cfg.As, "as", "", "tag in the registry (default: -tag), e.g. one per build so that an install of it rolls the pods")
	images := fs.String("images", strings.Join(imageNames(imageSpecs(false)), ","), "comma-separated images to push")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.Registry == "" {
		return cfg, errors.New("push: -registry is required")
	}
	cfg.Images = strings.Split(*images, ",")
	return cfg, nil
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	for _, f := range strings.Split(s, ",") {
		p, err := v1.ParsePlatform(f)
		if err != nil || p.OS != "linux" || p.Architecture == "" {
			return nil, fmt.Errorf("-platforms: %q is not a linux/ARCH platform", f)
		}
		out = append(out, *p)
	}
	return out, nil
}
