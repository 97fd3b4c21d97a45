package pushtest

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// TestHeaderCodec: the head of a full snapshot and of a delta, as the
// push server sends them, read without the policy.
func TestHeaderCodec(t *testing.T) {
	for _, tc := range []struct {
		name string
		snap *weftv1.PolicySnapshot
		want Header
	}{
		{"full", &weftv1.PolicySnapshot{Version: 7, ControllerNonce: "n1", Policy: &weftv1.NodePolicy{Node: "a"}},
			Header{Version: 7, Nonce: "n1", Full: true}},
		{"delta", &weftv1.PolicySnapshot{Version: 9, ControllerNonce: "n2", BaseVersion: 8, Delta: &weftv1.NodePolicyDelta{RemovedClusters: []string{"a/b:80"}}},
			Header{Version: 9, Nonce: "n2", BaseVersion: 8, Delta: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.snap)
			if err != nil {
				t.Fatal(err)
			}
			var h Header
			if err := (HeaderCodec{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &h); err != nil {
				t.Fatal(err)
			}
			tc.want.Size = len(b)
			if h != tc.want {
				t.Fatalf("got %+v, want %+v", h, tc.want)
			}
		})
	}
}
