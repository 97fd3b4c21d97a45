// Package install puts weft-cni on a node and takes it off again: the
// plugin binary into the CNI bin directory and a weft-cni entry appended to
// the plugins of the node's primary CNI config (the first config file of
// the config directory, as runtimes pick it), kept there while the agent
// runs (a primary CNI that rewrites its file gets the entry back) and
// removed on uninstall. chain.go is pure; install.go does the I/O.
package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// PluginType is weft-cni's "type" (agent/cni.PluginType).
const PluginType = "weft-cni"

// ErrBadConfig says a CNI config file cannot be chained into.
var ErrBadConfig = errors.New("unusable CNI config")

// decode reads a CNI config file's JSON (numbers kept as written).
func decode(data []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadConfig)
	}
	return m, nil
}

func encode(m map[string]any) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// asList turns a config into a conflist: a .conf (a single plugin, no
// "plugins") becomes a list of that one plugin, with the list's name and
// cniVersion taken from it, as Istio's installer converts it.
func asList(m map[string]any) (map[string]any, error) {
	if raw, ok := m["plugins"]; ok {
		if _, ok := raw.([]any); !ok {
			return nil, fmt.Errorf("%w: \"plugins\" is not a list", ErrBadConfig)
		}
		return m, nil
	}
	if _, ok := m["type"].(string); !ok {
		return nil, fmt.Errorf("%w: neither \"plugins\" nor a plugin \"type\"", ErrBadConfig)
	}
	list := map[string]any{"plugins": []any{m}}
	for _, k := range []string{"name", "cniVersion"} {
		if v, ok := m[k]; ok {
			list[k] = v
			delete(m, k)
		}
	}
	return list, nil
}

// isWeft reports whether a plugins entry is weft-cni's.
func isWeft(p any) bool {
	o, ok := p.(map[string]any)
	return ok && o["type"] == PluginType
}

// Insert returns config (a .conflist or a .conf) with entry as the last of
// its plugins, any earlier weft-cni entry removed and everything else kept.
// changed is false when config already ends with exactly entry.
func Insert(config []byte, entry map[string]any) (out []byte, changed bool, err error) {
	m, err := decode(config)
	if err != nil {
		return nil, false, err
	}
	m, err = asList(m)
	if err != nil {
		return nil, false, err
	}
	// entry as it reads back from JSON, to compare with what the file holds
	eb, err := json.Marshal(entry)
	if err != nil {
		return nil, false, err
	}
	want, err := decode(eb)
	if err != nil {
		return nil, false, err
	}
	plugins := m["plugins"].([]any)
	if n := len(plugins); n > 0 && reflect.DeepEqual(plugins[n-1], want) && countWeft(plugins) == 1 {
		if _, wasList := mustDecode(config)["plugins"]; wasList {
			return config, false, nil
		}
	}
	kept := make([]any, 0, len(plugins)+1)
	for _, p := range plugins {
		if !isWeft(p) {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return nil, false, fmt.Errorf("%w: no primary plugin to chain after", ErrBadConfig)
	}
	m["plugins"] = append(kept, want)
	out, err = encode(m)
	return out, true, err
}

// Remove returns conflist without its weft-cni entries; changed is false
// when it had none.
func Remove(conflist []byte) (out []byte, changed bool, err error) {
	m, err := decode(conflist)
	if err != nil {
		return nil, false, err
	}
	plugins, ok := m["plugins"].([]any)
	if !ok || countWeft(plugins) == 0 {
		return conflist, false, nil
	}
	kept := make([]any, 0, len(plugins))
	for _, p := range plugins {
		if !isWeft(p) {
			kept = append(kept, p)
		}
	}
	m["plugins"] = kept
	out, err = encode(m)
	return out, true, err
}

// Has reports whether config chains weft-cni.
func Has(config []byte) bool {
	m, err := decode(config)
	if err != nil {
		return false
	}
	plugins, _ := m["plugins"].([]any)
	return countWeft(plugins) > 0
}

func countWeft(plugins []any) int {
	n := 0
	for _, p := range plugins {
		if isWeft(p) {
			n++
		}
	}
	return n
}

func mustDecode(b []byte) map[string]any {
	m, _ := decode(b)
	return m
}
