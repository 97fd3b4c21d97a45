package node

import (
	"cmp"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// lookPathIn resolves a program as runc does inside a container (Go's
// exec.LookPath with the container's PATH, relative to the calling thread's
// root): a name with a slash is used as it is, a bare name is searched in
// pathEnv. The errors read like runc's: exec: "app": executable file not
// found in $PATH, exec: "/app": stat /app: no such file or directory.
func lookPathIn(name, pathEnv string) (string, error) {
	if strings.Contains(name, "/") {
		if err := findExecutable(name); err != nil {
			return "", &exec.Error{Name: name, Err: err}
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		p := filepath.Join(cmp.Or(dir, "."), name)
		if findExecutable(p) == nil {
			return p, nil
		}
	}
	return "", &exec.Error{Name: name, Err: exec.ErrNotFound}
}

func findExecutable(p string) error {
	st, err := os.Stat(p)
	switch {
	case err != nil:
		return err
	case st.IsDir():
		return syscall.EISDIR
	case st.Mode()&0o111 == 0:
		return fs.ErrPermission
	}
	return nil
}

// execError turns the error of a failed fork/exec into runc's wording
// (exec: "<path>": <errno>), explaining the ENOENT execve gives for a
// program that exists but whose ELF interpreter (dynamic loader) or #!
// interpreter does not.
func execError(path string, err error) error {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return err
	}
	if errno == syscall.ENOENT {
		if why := missingInterpreter(path); why != "" {
			return fmt.Errorf("exec: %q: %w (%s)", path, errno, why)
		}
	}
	return fmt.Errorf("exec: %q: %w", path, errno)
}

// missingInterpreter says which interpreter of an existing program is
// missing, or "".
func missingInterpreter(path string) string {
	if _, err := os.Stat(path); err != nil {
		return ""
	}
	if interp, ok := elfInterpreter(path); ok {
		if _, err := os.Stat(interp); interp != "" && err != nil {
			return fmt.Sprintf("its ELF interpreter %s is missing: the image lacks the dynamic loader and the shared libraries the program is linked against", interp)
		}
		return ""
	}
	if interp := shebang(path); interp != "" {
		if _, err := os.Stat(interp); err != nil {
			return fmt.Sprintf("the interpreter %s of its #! line is missing", interp)
		}
	}
	return ""
}

// elfInterpreter returns the PT_INTERP of an ELF file ("" for a static
// one); ok is false when the file is not ELF.
func elfInterpreter(path string) (interp string, ok bool) {
	f, err := elf.Open(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, _ := io.ReadAll(p.Open())
			return strings.TrimRight(string(b), "\x00"), true
		}
	}
	return "", true
}

// shebang returns the interpreter of a script's #! line, or "".
func shebang(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 256)
	n, _ := f.Read(b)
	line, _, _ := strings.Cut(string(b[:n]), "\n")
	rest, ok := strings.CutPrefix(line, "#!")
	if fields := strings.Fields(rest); ok && len(fields) > 0 {
		return fields[0]
	}
	return ""
}

// envValue returns the value of key in a KEY=value list (the last one wins).
func envValue(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if k, val, ok := strings.Cut(kv, "="); ok && k == key {
			v = val
		}
	}
	return v
}
