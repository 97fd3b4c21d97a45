package push

import (
	"bytes"
	"fmt"
	"sync"
	"unsafe"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protobuf "google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Every node's policy carries the same Services and Clusters (resolution
// shares those slices between nodes). Encoding them once per Update instead
// of once per node and stream, and comparing encodings instead of
// proto.Equal, is what keeps a change to 50 nodes cheap. The wire format
// allows it: a message's encoding is the concatenation of its fields'
// encodings, and repeated fields may come in several runs.

// Field numbers of NodePolicy that are encoded once per Update.
const (
	fieldServices = 5
	fieldClusters = 6
)

// encoded is one node policy's deterministic encoding: rest holds every
// field but the shared ones, shared the Services and Clusters.
type encoded struct {
	rest   []byte
	shared []byte
}

func (e encoded) equal(o encoded) bool {
	sameShared := len(e.shared) == len(o.shared) &&
		(len(e.shared) == 0 || unsafe.SliceData(e.shared) == unsafe.SliceData(o.shared) || bytes.Equal(e.shared, o.shared))
	return sameShared && bytes.Equal(e.rest, o.rest)
}

func (e encoded) size() int { return len(e.rest) + len(e.shared) }

type sharedKey struct {
	services *(*weftv1.ServicePort)
	nsvc     int
	clusters *(*weftv1.Cluster)
	ncl      int
}

// encoder encodes the policies of one Update, sharing the encoding of
// Services and Clusters slices that several policies hold.
type encoder struct {
	mu     sync.Mutex
	shared map[sharedKey][]byte
}

var deterministic = protobuf.MarshalOptions{Deterministic: true}

func (enc *encoder) encode(p *weftv1.NodePolicy) (encoded, error) {
	key := sharedKey{unsafe.SliceData(p.Services), len(p.Services), unsafe.SliceData(p.Clusters), len(p.Clusters)}
	enc.mu.Lock()
	defer enc.mu.Unlock()
	shared, ok := enc.shared[key]
	if !ok {
		var err error
		shared, err = deterministic.Marshal(&weftv1.NodePolicy{Services: p.Services, Clusters: p.Clusters})
		if err != nil {
			return encoded{}, fmt.Errorf("encode services and clusters: %w", err)
		}
		if enc.shared == nil {
			enc.shared = map[sharedKey][]byte{}
		}
		enc.shared[key] = shared
	}
	// Every other field (whatever the proto gains later), shallow-copied.
	src := p.ProtoReflect()
	rest := src.New()
	src.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if n := fd.Number(); n != fieldServices && n != fieldClusters {
			rest.Set(fd, v)
		}
		return true
	})
	b, err := deterministic.Marshal(rest.Interface())
	if err != nil {
		return encoded{}, fmt.Errorf("encode policy of node %s: %w", p.Node, err)
	}
	return encoded{rest: b, shared: shared}, nil
}

// wireSnapshot is a PolicySnapshot with its encoding. It is a proto.Message
// (through the embedded snapshot), so a server without ServerCodec still
// sends it correctly, only slower.
type wireSnapshot struct {
	*weftv1.PolicySnapshot
	head []byte // fields 1 and 2, and the tag and length of field 3 (or 5 and 6)
	body encoded
	// more follows body: the parts of a delta shared with other nodes.
	more [][]byte
}

// Size is the length of the encoded message.
func (w *wireSnapshot) Size() int {
	n := len(w.head) + w.body.size()
	for _, b := range w.more {
		n += len(b)
	}
	return n
}

// Field numbers of PolicySnapshot.
const (
	fieldPolicy  = 3
	fieldGateway = 4
)

func newWireSnapshot(version uint64, nonce string, policy *weftv1.NodePolicy, body encoded) *wireSnapshot {
	return &wireSnapshot{
		PolicySnapshot: &weftv1.PolicySnapshot{Version: version, ControllerNonce: nonce, Policy: policy},
		head:           wireHead(version, nonce, fieldPolicy, body.size()),
		body:           body,
	}
}

// newGatewayWireSnapshot is newWireSnapshot for a Gateway's data plane;
// body is the policy's deterministic encoding.
func newGatewayWireSnapshot(version uint64, nonce string, policy *weftv1.GatewayPolicy, body []byte) *wireSnapshot {
	return &wireSnapshot{
		PolicySnapshot: &weftv1.PolicySnapshot{Version: version, ControllerNonce: nonce, Gateway: policy},
		head:           wireHead(version, nonce, fieldGateway, len(body)),
		body:           encoded{rest: body},
	}
}

// wireHead encodes fields 1 and 2 and the tag and length of field.
func wireHead(version uint64, nonce string, field protowire.Number, size int) []byte {
	h := headFields(version, nonce)
	h = protowire.AppendTag(h, field, protowire.BytesType)
	return protowire.AppendVarint(h, uint64(size))
}

// headFields encodes fields 1 and 2 (version and nonce).
func headFields(version uint64, nonce string) []byte {
	var h []byte
	h = protowire.AppendTag(h, 1, protowire.VarintType)
	h = protowire.AppendVarint(h, version)
	if nonce != "" {
		h = protowire.AppendTag(h, 2, protowire.BytesType)
		h = protowire.AppendString(h, nonce)
	}
	return h
}

// bytes returns the encoding as buffers that share the policy's.
func (w *wireSnapshot) buffers() mem.BufferSlice {
	out := mem.BufferSlice{mem.SliceBuffer(w.head)}
	if len(w.body.rest) > 0 {
		out = append(out, mem.SliceBuffer(w.body.rest))
	}
	if len(w.body.shared) > 0 {
		out = append(out, mem.SliceBuffer(w.body.shared))
	}
	for _, b := range w.more {
		out = append(out, mem.SliceBuffer(b))
	}
	return out
}

// codec sends a wireSnapshot's ready encoding and leaves every other
// message to the standard proto codec.
type codec struct{ proto encoding.CodecV2 }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(*wireSnapshot); ok {
		return w.buffers(), nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

func (c codec) Name() string { return proto.Name }

// ServerCodec is the grpc.Server option that lets the Policy service send
// each snapshot's encoding, made once per change, instead of marshaling it
// per stream. Other services on the server are unaffected.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(codec{proto: encoding.GetCodecV2(proto.Name)})
}
