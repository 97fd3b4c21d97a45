// Package pushtest is for benchmarks that stand in for many agents on one
// machine: a gRPC codec that reads only the head of each PolicySnapshot.
package pushtest

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Header is what a simulated agent reads of a PolicySnapshot: its version
// fields, its size, and whether it carries a full policy or a delta. The
// policy or delta itself is skipped: simulated agents share the
// benchmark's cores with the controller, while real agents decode on their
// own nodes (agent/policy applies and validates; its tests cover that).
type Header struct {
	Version, BaseVersion uint64
	Nonce                string
	Size                 int
	Full, Delta          bool
}

// Field numbers of PolicySnapshot (api/weft/v1/policy.proto).
const (
	fieldVersion     = 1
	fieldNonce       = 2
	fieldPolicy      = 3
	fieldBaseVersion = 5
	fieldDelta       = 6
)

// headLen bounds what is read for the head fields: the push server encodes
// them first.
const headLen = 256

// HeaderCodec is a grpc codec ("proto") that sends requests as protobuf
// and receives PolicySnapshots into a *Header.
type HeaderCodec struct{}

// Marshal encodes a request.
func (HeaderCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

// Unmarshal reads the head of a PolicySnapshot into v, a *Header.
func (HeaderCodec) Unmarshal(data mem.BufferSlice, v any) error {
	h := v.(*Header)
	*h = Header{Size: data.Len()}
	var b []byte
	for _, buf := range data {
		b = append(b, buf.ReadOnlyData()...)
		if len(b) >= headLen {
			break
		}
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil // cut inside a field that is skipped
		}
		b = b[n:]
		switch {
		case num == fieldVersion && typ == protowire.VarintType:
			h.Version, n = protowire.ConsumeVarint(b)
		case num == fieldNonce && typ == protowire.BytesType:
			h.Nonce, n = protowire.ConsumeString(b)
		case num == fieldBaseVersion && typ == protowire.VarintType:
			h.BaseVersion, n = protowire.ConsumeVarint(b)
		case num == fieldPolicy:
			h.Full = true
			return nil
		case num == fieldDelta:
			h.Delta = true
			return nil
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil
		}
		b = b[n:]
	}
	return nil
}

// Name is the codec's content subtype.
func (HeaderCodec) Name() string { return "proto" }
