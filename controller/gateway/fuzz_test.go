package gateway

import (
	"bytes"
	"path/filepath"
	"testing"
)

// FuzzResolve feeds Resolve snapshots mutated from the golden cases (and
// whatever else decodes): it must not panic, must be deterministic, and
// every IR must validate.
func FuzzResolve(f *testing.F) {
	cases, _ := filepath.Glob("testdata/*.in.yaml")
	for _, c := range cases {
		b, err := expandCase(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := decode(data, false)
		if err != nil {
			return
		}
		out := Resolve(in)
		checkIR(t, out)
		a, err := render(out)
		if err != nil {
			t.Fatal(err)
		}
		b, err := render(Resolve(in))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatal("two resolutions of the same input differ")
		}
	})
}
