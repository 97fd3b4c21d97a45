package main

import (
	"slices"
	"testing"
	"time"
)

func TestTarLayer(t *testing.T) {
	epoch := time.Unix(1234567890, 0)
	tests := []struct {
		name    string
		entries []entry
		want    []string
	}{
		{"sorted by name", []entry{{Name: "usr/local/bin/b", Mode: 0o755}, {Name: "usr/", Mode: 0o755}, {Name: "usr/local/bin/a", Mode: 0o755}},
			[]string{"usr/", "usr/local/bin/a", "usr/local/bin/b"}},
		{"a directory before its files", []entry{{Name: "a/x"}, {Name: "a-b"}, {Name: "a/"}},
			[]string{"a-b", "a/", "a/x"}},
		{"binaries", binaryEntries(map[string][]byte{"weft-cni": []byte("c"), "weft-agent": []byte("a")}),
			[]string{"usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/weft-agent", "usr/local/bin/weft-cni"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb, err := tarLayer(tt.entries, epoch)
			if err != nil {
				t.Fatal(err)
			}
			l, err := newLayer(tb)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range readLayer(t, l) {
				names = append(names, f.hdr.Name)
				checkTimes(t, f.hdr, epoch)
			}
			if !slices.Equal(names, tt.want) {
				t.Errorf("entries %q, want %q", names, tt.want)
			}
		})
	}
}

// TestLayerDigestStable: the gzip stream, hence the digest, depends on the
// contents only, not on when or how often it is made.
func TestLayerDigestStable(t *testing.T) {
	tests := []struct {
		name           string
		a, b           []entry
		epochA, epochB int64
		same           bool
	}{
		{"same entries", baseEntries(), baseEntries(), 1, 1, true},
		{"same entries, other order", []entry{{Name: "b"}, {Name: "a"}}, []entry{{Name: "a"}, {Name: "b"}}, 1, 1, true},
		{"other epoch", baseEntries(), baseEntries(), 1, 2, false},
		{"other mode", []entry{{Name: "a", Mode: 0o644}}, []entry{{Name: "a", Mode: 0o600}}, 1, 1, false},
		{"other owner", []entry{{Name: "a", UID: 1}}, []entry{{Name: "a", UID: 2}}, 1, 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := layerDigest(t, tt.a, tt.epochA)
			b := layerDigest(t, tt.b, tt.epochB)
			if (a == b) != tt.same {
				t.Errorf("digests %s and %s; want same=%v", a, b, tt.same)
			}
		})
	}
}

func layerDigest(t *testing.T, entries []entry, epoch int64) string {
	t.Helper()
	tb, err := tarLayer(entries, time.Unix(epoch, 0))
	if err != nil {
		t.Fatal(err)
	}
	l, err := newLayer(tb)
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}
