package node

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// extractTar writes a flattened image filesystem (mutate.Extract's stream:
// whiteouts applied, upper layers first, so an entry may come before the
// directory holding it) into dir. Every path is resolved inside dir
// (os.Root), so no entry or symlink of the image can write outside it.
// Ownership is kept when running as root. Device nodes and FIFOs are
// skipped: a container's /dev is a tmpfs of its own.
func extractTar(r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read layers: %w", err)
		}
		if err := extractEntry(root, tr, h); err != nil {
			return fmt.Errorf("extract %s: %w", h.Name, err)
		}
	}
}

func extractEntry(root *os.Root, r io.Reader, h *tar.Header) error {
	name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
	if name == "" {
		name = "."
	}
	if name != "." {
		if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
			return err
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	case tar.TypeReg:
		if err := writeEntry(root, name, r); err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := root.Symlink(h.Linkname, name); err != nil {
			return skipExisting(err)
		}
		return owner(root, name, h)
	case tar.TypeLink:
		target := strings.TrimPrefix(path.Clean("/"+h.Linkname), "/")
		return skipExisting(root.Link(target, name))
	default:
		return nil // devices, FIFOs
	}
	if err := owner(root, name, h); err != nil {
		return err
	}
	if err := root.Chmod(name, h.FileInfo().Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	if h.Typeflag == tar.TypeReg {
		return root.Chtimes(name, h.ModTime, h.ModTime)
	}
	return nil
}

func writeEntry(root *os.Root, name string, r io.Reader) error {
	f, err := root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// owner sets an entry's owner (not following symlinks) when running as root.
func owner(root *os.Root, name string, h *tar.Header) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return root.Lchown(name, h.Uid, h.Gid)
}

// skipExisting ignores an entry whose path a higher layer already holds: a
// directory created for that layer's files (the stream holds no duplicates
// otherwise).
func skipExisting(err error) error {
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	return err
}
