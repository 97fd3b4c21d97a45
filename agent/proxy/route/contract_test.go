package route

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// The agent NACKs a policy whose route table does not compile, so every
// table the controller produces for its golden cases must compile here.
// The goldens (controller/resolve/testdata/*.out.yaml) hold the shared
// NodePolicy as protojson under "policy".
func TestControllerGoldensCompile(t *testing.T) {
	files, err := filepath.Glob("../../../controller/resolve/testdata/*.out.yaml")
	if err != nil || len(files) == 0 {
		t.Skip("no controller goldens in this tree")
	}
	tables := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]json.RawMessage
		if err := yaml.Unmarshal(b, &doc); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		raw, ok := doc["policy"]
		if !ok || string(raw) == "null" {
			continue // no node has policy in this case
		}
		var np weftv1.NodePolicy
		if err := protojson.Unmarshal(raw, &np); err != nil {
			t.Errorf("%s: policy: %v", filepath.Base(f), err)
			continue
		}
		for _, sp := range np.GetServices() {
			check := func(which string, rt *weftv1.RouteTable) {
				if rt == nil {
					return
				}
				tables++
				if _, err := Compile(rt); err != nil {
					t.Errorf("%s: %s/%s:%d %s table: %v", filepath.Base(f), sp.GetNamespace(), sp.GetName(), sp.GetPort(), which, err)
				}
			}
			check("producer", sp.GetProducer())
			for ns, rt := range sp.GetConsumers() {
				check("consumer "+ns, rt)
			}
		}
	}
	t.Logf("%d route tables from %d goldens compiled", tables, len(files))
}
