package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// entry is a file or, when Name ends in "/", a directory of a layer.
type entry struct {
	Name     string // no leading "/"
	Mode     int64  // permission bits, with 0o1000 for sticky
	UID, GID int
	Data     []byte
}

// tarLayer is a reproducible tar of entries: sorted by name, every mtime is
// epoch, owners numeric, no access or change times, no user or group names.
func tarLayer(entries []entry, epoch time.Time) ([]byte, error) {
	sorted := slices.Clone(entries)
	slices.SortFunc(sorted, func(a, b entry) int { return strings.Compare(a.Name, b.Name) })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range sorted {
		if err := tw.WriteHeader(header(e, epoch)); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.Name, err)
		}
		if _, err := tw.Write(e.Data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", e.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func header(e entry, epoch time.Time) *tar.Header {
	h := &tar.Header{
		Name:    e.Name,
		Mode:    e.Mode,
		Uid:     e.UID,
		Gid:     e.GID,
		ModTime: epoch.UTC(),
		Format:  tar.FormatUSTAR, // no extended records: no atime, ctime or sub-second times
	}
	if strings.HasSuffix(e.Name, "/") {
		h.Typeflag = tar.TypeDir
	} else {
		h.Typeflag = tar.TypeReg
		h.Size = int64(len(e.Data))
	}
	return h
}

// newLayer gzips an uncompressed tar through go-containerregistry. The gzip
// stream is deterministic: compress/gzip with a zero header (no name, mtime 0)
// at a fixed level gives the same bytes for the same input and Go toolchain
// (go.mod pins the toolchain). The compressed bytes are kept: the digest, the
// layout and the archives read them.
func newLayer(uncompressed []byte) (v1.Layer, error) {
	open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(uncompressed)), nil }
	return tarball.LayerFromOpener(open,
		tarball.WithMediaType(types.OCILayer),
		tarball.WithCompressionLevel(gzip.BestSpeed),
		tarball.WithCompressedCaching)
}
