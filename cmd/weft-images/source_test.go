package main

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseEpoch(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1700000000", 1700000000, true},
		{"1700000000\n", 1700000000, true},
		{"-1", 0, false},
		{"yesterday", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := parseEpoch(tt.in)
		if (err == nil) != tt.ok || (tt.ok && !got.Equal(time.Unix(tt.want, 0))) {
			t.Errorf("parseEpoch(%q) = %v, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestRevision(t *testing.T) {
	tests := []struct{ head, porcelain, want string }{
		{"abc", "", "abc"},
		{"abc", "\n", "abc"},
		{"abc", " M README.md\n", "abc-dirty"},
		{"abc", "?? new.go\n", "abc-dirty"},
	}
	for _, tt := range tests {
		if got := revision(tt.head, tt.porcelain); got != tt.want {
			t.Errorf("revision(%q, %q) = %q, want %q", tt.head, tt.porcelain, got, tt.want)
		}
	}
}

func TestReadSource(t *testing.T) {
	dir := t.TempDir() // not a git tree
	tests := []struct {
		name, env string
		want      time.Time
		ok        bool
	}{
		{"outside git: epoch 0", "", time.Unix(0, 0), true},
		{"SOURCE_DATE_EPOCH wins", "1700000000", time.Unix(1700000000, 0), true},
		{"bad SOURCE_DATE_EPOCH", "soon", time.Time{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := readSource(context.Background(), dir, tt.env, "dev")
			if (err == nil) != tt.ok {
				t.Fatalf("err %v, want ok=%v", err, tt.ok)
			}
			if tt.ok && (!src.Epoch.Equal(tt.want) || src.Revision != "" || src.Version != "dev") {
				t.Errorf("%+v, want epoch %v, no revision, version dev", src, tt.want)
			}
		})
	}
}

func TestLabels(t *testing.T) {
	spec := imageSpec{Name: "echo", Description: "d"}
	src := source{Epoch: time.Unix(0, 0), Version: "v1"}
	want := map[string]string{
		"org.opencontainers.image.source":      "https://github.com/weft-mesh/weft",
		"org.opencontainers.image.version":     "v1",
		"org.opencontainers.image.created":     "1970-01-01T00:00:00Z",
		"org.opencontainers.image.title":       "echo",
		"org.opencontainers.image.description": "d",
	}
	if got := labels(spec, src); !maps.Equal(got, want) {
		t.Errorf("no revision: %v, want %v", got, want)
	}
	src.Revision = "abc-dirty"
	want["org.opencontainers.image.revision"] = "abc-dirty"
	if got := labels(spec, src); !maps.Equal(got, want) {
		t.Errorf("with revision: %v, want %v", got, want)
	}
}

func TestImageSpecs(t *testing.T) {
	tests := []struct {
		cni   bool
		agent []string
	}{
		{false, []string{"weft-agent"}},
		{true, []string{"weft-agent", "weft-cni"}},
	}
	for _, tt := range tests {
		specs := imageSpecs(tt.cni)
		if names := imageNames(specs); !slices.Equal(names, []string{"weft-controller", "weft-agent", "echo", "toolbox"}) {
			t.Errorf("images %q", names)
		}
		var agent []string
		for _, c := range specs[1].Commands {
			agent = append(agent, c.Name)
		}
		if !slices.Equal(agent, tt.agent) {
			t.Errorf("cni=%v: agent commands %q, want %q", tt.cni, agent, tt.agent)
		}
		if n := len(commands(specs)); n != len(tt.agent)+2 {
			t.Errorf("cni=%v: %d commands to build, want %d (echo once)", tt.cni, n, len(tt.agent)+2)
		}
	}
}

func TestParsePlatforms(t *testing.T) {
	tests := []struct {
		in   string
		want []v1.Platform
		ok   bool
	}{
		{"linux/amd64,linux/arm64", []v1.Platform{amd64, arm64}, true},
		{"linux/arm64", []v1.Platform{arm64}, true},
		{"windows/amd64", nil, false},
		{"linux", nil, false},
		{"", nil, false},
	}
	for _, tt := range tests {
		got, err := parsePlatforms(tt.in)
		if (err == nil) != tt.ok || !slices.EqualFunc(got, tt.want, func(a, b v1.Platform) bool { return a.Equals(b) }) {
			t.Errorf("parsePlatforms(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		host string
		want bool
	}{
		{"localhost", true},
		{"localhost:5000", true},
		{"127.0.0.1:5000", true},
		{"127.1.2.3:5000", true},
		{"[::1]:5000", true},
		{"::1", true},
		{"10.0.0.1:5000", false},
		{"registry.example.com", false},
		{"localhost.example.com:5000", false},
	}
	for _, tt := range tests {
		if got := isLoopback(tt.host); got != tt.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}
