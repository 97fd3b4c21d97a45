package install

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

var entry = map[string]any{
	"type": PluginType, "node": "node-a", "socket": "/var/lib/weft/node-a/cni.sock",
	"timeout": "10s", "logLevel": "info",
}

// TestChainGoldens runs each testdata/<case>.in.* through the operation its
// name starts with and compares with <case>.out.json:
// insert-*: Insert(entry); remove-*: Remove; reinsert-*: Insert applied to
// its own output must change nothing.
func TestChainGoldens(t *testing.T) {
	ins, err := filepath.Glob("testdata/*.in.*")
	if err != nil || len(ins) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, in := range ins {
		name := strings.SplitN(filepath.Base(in), ".in.", 2)[0]
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			var changed bool
			switch {
			case strings.HasPrefix(name, "insert-"):
				out, changed, err = Insert(data, entry)
				if err == nil && !changed {
					t.Errorf("Insert reported no change")
				}
			case strings.HasPrefix(name, "reinsert-"):
				out, changed, err = Insert(data, entry)
				if err == nil && changed {
					t.Errorf("re-Insert reported a change")
				}
				if err == nil && string(out) != string(data) {
					t.Errorf("re-Insert rewrote the file")
				}
			case strings.HasPrefix(name, "remove-"):
				out, changed, err = Remove(data)
				if err == nil && changed != Has(data) {
					t.Errorf("Remove changed=%v, Has(in)=%v", changed, Has(data))
				}
			case strings.HasPrefix(name, "bad-"):
				_, _, err = Insert(data, entry)
				if err == nil {
					t.Fatal("Insert accepted a bad config")
				}
				out = []byte("error: " + err.Error() + "\n")
			default:
				t.Fatalf("case %s: unknown operation", name)
			}
			if err != nil && !strings.HasPrefix(name, "bad-") {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".out.json")
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update)", err)
			}
			if string(out) != string(want) {
				t.Errorf("got:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

// TestInsertRemoveRoundTrip: inserting then removing gives back the
// original plugins (as a conflist).
func TestInsertRemoveRoundTrip(t *testing.T) {
	data, err := os.ReadFile("testdata/insert-conflist.in.conflist")
	if err != nil {
		t.Fatal(err)
	}
	withWeft, _, err := Insert(data, entry)
	if err != nil || !Has(withWeft) {
		t.Fatalf("Insert: %v, Has=%v", err, Has(withWeft))
	}
	back, changed, err := Remove(withWeft)
	if err != nil || !changed || Has(back) {
		t.Fatalf("Remove: %v changed=%v Has=%v", err, changed, Has(back))
	}
	again, _, _ := Remove(mustEncode(t, data))
	if string(back) != string(again) {
		t.Errorf("round trip differs:\n%s\nvs\n%s", back, again)
	}
}

func mustEncode(t *testing.T, data []byte) []byte {
	m, err := decode(data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
