package main

import (
	"os"
	"path/filepath"
	"time"
)

// command is a program built into an image, installed at /usr/local/bin/<Name>.
type command struct {
	Name    string
	Package string // go build package path, relative to the module root
}

var (
	controllerCmd = command{"weft-controller", "./cmd/weft-controller"}
	agentCmd      = command{"weft-agent", "./cmd/weft-agent"}
	cniCmd        = command{"weft-cni", "./cmd/weft-cni"}
	echoCmd       = command{"weft-echo", "./test/echo/cmd/weft-echo"}
)

// imageSpec is one image: ghcr.io/weft-mesh/<Name>.
type imageSpec struct {
	Name        string
	Commands    []command // one layer; the first is the entrypoint
	Cmd         []string
	User        string
	Description string
}

const (
	repoPrefix = "ghcr.io/weft-mesh/"
	binDir     = "usr/local/bin/"
	nonroot    = "65532:65532"
	root       = "0:0"
)

// imageSpecs lists the images; the agent carries the CNI plugin once
// cmd/weft-cni exists.
func imageSpecs(hasCNI bool) []imageSpec {
	agent := []command{agentCmd}
	if hasCNI {
		agent = append(agent, cniCmd)
	}
	return []imageSpec{
		{Name: "weft-controller", Commands: []command{controllerCmd}, User: nonroot,
			Description: "Weft controller: resolves Gateway API mesh routes into per-node policy and signs workload certificates"},
		// The agent loads BPF programs and pins maps: root, with the capabilities
		// the DaemonSet grants.
		{Name: "weft-agent", Commands: agent, User: root,
			Description: "Weft node agent: socket redirect, node proxy and workload identities"},
		{Name: "echo", Commands: []command{echoCmd}, Cmd: []string{"serve"}, User: nonroot,
			Description: "Weft test app: answers HTTP, h2c, WebSocket and gRPC with the facts of the request"},
		{Name: "toolbox", Commands: []command{echoCmd}, Cmd: []string{"idle"}, User: nonroot,
			Description: "Weft test toolbox: weft-echo idling, to exec weft-echo client in"},
	}
}

func hasCNI(src string) bool {
	_, err := os.Stat(filepath.Join(src, cniCmd.Package))
	return err == nil
}

func imageNames(specs []imageSpec) []string {
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	return names
}

// commands lists every command the images need, once each.
func commands(specs []imageSpec) []command {
	seen := map[command]bool{}
	var out []command
	for _, s := range specs {
		for _, c := range s.Commands {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}

// OCI annotation keys; the same set is each image's labels.
const (
	keySource      = "org.opencontainers.image.source"
	keyRevision    = "org.opencontainers.image.revision"
	keyVersion     = "org.opencontainers.image.version"
	keyCreated     = "org.opencontainers.image.created"
	keyTitle       = "org.opencontainers.image.title"
	keyDescription = "org.opencontainers.image.description"
	// keyRefName names an image index in the layout's index.json: <name>:<tag>.
	keyRefName = "org.opencontainers.image.ref.name"
	// No org.opencontainers.image.licenses: the repository states no license.
)

const sourceURL = "https://github.com/weft-mesh/weft"

// labels are the image config labels and the manifest and index annotations.
func labels(spec imageSpec, src source) map[string]string {
	l := map[string]string{
		keySource:      sourceURL,
		keyVersion:     src.Version,
		keyCreated:     src.Epoch.UTC().Format(time.RFC3339),
		keyTitle:       spec.Name,
		keyDescription: spec.Description,
	}
	if src.Revision != "" {
		l[keyRevision] = src.Revision
	}
	return l
}
