package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// built is one image: its index and, per platform ("linux/amd64"), its image.
type built struct {
	Spec   imageSpec
	Index  v1.ImageIndex
	Images map[string]v1.Image
}

// assemble builds every image for every platform from built binaries.
func assemble(specs []imageSpec, platforms []v1.Platform, bins binaries, src source) ([]built, error) {
	base, err := baseLayer(src)
	if err != nil {
		return nil, err
	}
	layers := layerCache{bins: bins, src: src, layers: map[string]v1.Layer{}}
	var out []built
	for _, spec := range specs {
		b, err := assembleOne(spec, platforms, base, layers, src)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", spec.Name, err)
		}
		out = append(out, b)
	}
	return out, nil
}

// assembleOne builds spec's image for each platform and their index.
func assembleOne(spec imageSpec, platforms []v1.Platform, base v1.Layer, layers layerCache, src source) (built, error) {
	b := built{Spec: spec, Images: map[string]v1.Image{}}
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		bin, err := layers.get(spec.Commands, p)
		if err != nil {
			return b, err
		}
		img, err := image(spec, p, base, bin, src)
		if err != nil {
			return b, fmt.Errorf("%s: %w", p.String(), err)
		}
		b.Images[p.String()] = img
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	b.Index = index(adds, labels(spec, src))
	return b, nil
}

func baseLayer(src source) (v1.Layer, error) {
	tb, err := tarLayer(baseEntries(), src.Epoch)
	if err != nil {
		return nil, fmt.Errorf("base layer: %w", err)
	}
	return newLayer(tb)
}

// layerCache makes each binary layer once: echo and toolbox share theirs.
type layerCache struct {
	bins   binaries
	src    source
	layers map[string]v1.Layer
}

func (c layerCache) get(cmds []command, p v1.Platform) (v1.Layer, error) {
	key := p.String()
	for _, cmd := range cmds {
		key += " " + cmd.Name
	}
	if l, ok := c.layers[key]; ok {
		return l, nil
	}
	l, err := binaryLayer(cmds, c.bins[p.String()], c.src.Epoch)
	if err != nil {
		return nil, fmt.Errorf("binary layer for %s: %w", p.String(), err)
	}
	c.layers[key] = l
	return l, nil
}

// binaryLayer holds the commands' binaries (paths: command name -> file).
func binaryLayer(cmds []command, paths map[string]string, epoch time.Time) (v1.Layer, error) {
	files := map[string][]byte{}
	for _, cmd := range cmds {
		path, ok := paths[cmd.Name]
		if !ok {
			return nil, fmt.Errorf("no %s binary", cmd.Name)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		files[cmd.Name] = data
	}
	tb, err := tarLayer(binaryEntries(files), epoch)
	if err != nil {
		return nil, err
	}
	return newLayer(tb)
}

// image is spec for platform p: the base layer, then the binaries.
func image(spec imageSpec, p v1.Platform, base, bin v1.Layer, src source) (v1.Image, error) {
	img, err := mutate.ConfigFile(empty.Image, configFile(spec, p, src))
	if err != nil {
		return nil, err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	created := v1.Time{Time: src.Epoch}
	img, err = mutate.Append(img,
		mutate.Addendum{Layer: base, History: v1.History{Created: created, CreatedBy: "weft-images: base files",
			Comment: "/etc/passwd, /etc/group, /etc/nsswitch.conf, /tmp, /home/nonroot"}},
		mutate.Addendum{Layer: bin, History: v1.History{Created: created, CreatedBy: "weft-images: binaries",
			Comment: commandPaths(spec.Commands)}},
	)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, labels(spec, src)).(v1.Image), nil
}

// configFile is the image config before the layers are added.
func configFile(spec imageSpec, p v1.Platform, src source) *v1.ConfigFile {
	return &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		Created:      v1.Time{Time: src.Epoch},
		RootFS:       v1.RootFS{Type: "layers"},
		Config: v1.Config{
			Entrypoint: []string{"/" + binDir + spec.Commands[0].Name},
			Cmd:        spec.Cmd,
			User:       spec.User,
			Env:        []string{pathEnv},
			WorkingDir: "/",
			Labels:     labels(spec, src),
		},
	}
}

func commandPaths(cmds []command) string {
	var paths []string
	for _, c := range cmds {
		paths = append(paths, "/"+binDir+c.Name)
	}
	return strings.Join(paths, ", ")
}

// index is the multi-platform index of one image's platform images.
func index(adds []mutate.IndexAddendum, annotations map[string]string) v1.ImageIndex {
	ii := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	ii = mutate.AppendManifests(ii, adds...)
	return mutate.Annotations(ii, annotations).(v1.ImageIndex)
}
