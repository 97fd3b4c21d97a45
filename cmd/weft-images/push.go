package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// push copies each image index, every platform, from the layout to
// <registry>/<name>:<as, default tag> and prints <registry>/<name>@<digest>.
func push(ctx context.Context, cfg pushConfig, stdout io.Writer) error {
	p, err := layout.FromPath(cfg.Layout)
	if err != nil {
		return fmt.Errorf("layout %s (run weft-images build first): %w", cfg.Layout, err)
	}
	for _, img := range cfg.Images {
		ii, err := findIndex(p, img+":"+cfg.Tag)
		if err != nil {
			return err
		}
		ref, err := pushRef(cfg.Registry, img, cmp.Or(cfg.As, cfg.Tag))
		if err != nil {
			return err
		}
		if err := remote.WriteIndex(ref, ii, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		d, err := ii.Digest()
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s/%s@%s\n", strings.TrimSuffix(cfg.Registry, "/"), img, d)
	}
	return nil
}

// findIndex is the image index named ref (<name>:<tag>) in the layout.
func findIndex(p layout.Path, ref string) (v1.ImageIndex, error) {
	top, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := top.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range m.Manifests {
		if d.Annotations[keyRefName] == ref {
			return top.ImageIndex(d.Digest)
		}
	}
	return nil, fmt.Errorf("no image %s in layout %s", ref, p)
}

// pushRef is registry/img:tag; a registry on a loopback address is plain HTTP.
func pushRef(registry, img, tag string) (name.Tag, error) {
	s := strings.TrimSuffix(registry, "/") + "/" + img + ":" + tag
	var opts []name.Option
	if isLoopback(strings.SplitN(registry, "/", 2)[0]) {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewTag(s, opts...)
	if err != nil {
		return name.Tag{}, fmt.Errorf("-registry %q: %w", registry, err)
	}
	return ref, nil
}

// isLoopback reports whether host ("HOST" or "HOST:PORT") is localhost or a
// loopback address.
func isLoopback(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}
