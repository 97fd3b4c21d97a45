package weftv1

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestEqualWorkloadSeesEveryField: changing any one field of a Workload,
// whatever fields it has now, makes EqualWorkload false, as proto.Equal.
func TestEqualWorkloadSeesEveryField(t *testing.T) {
	full := &Workload{Namespace: "ns", Name: "p", Uid: "u", ServiceAccount: "sa", Identity: "spiffe://td/ns/ns/sa/sa",
		Ips: []string{"10.0.0.1", "fd00::1"}, Workload: "web", WorkloadKind: "Deployment", MtlsStrict: true}
	fields := full.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !full.ProtoReflect().Has(fd) {
			t.Errorf("field %s is not set in the test's workload: set it", fd.Name())
			continue
		}
		changed := proto.Clone(full).(*Workload)
		m := changed.ProtoReflect()
		switch {
		case fd.IsList():
			m.Get(fd).List().Append(protoreflect.ValueOfString("10.9.9.9"))
		case fd.Kind() == protoreflect.BoolKind:
			m.Set(fd, protoreflect.ValueOfBool(!m.Get(fd).Bool()))
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString(m.Get(fd).String()+"x"))
		default:
			t.Fatalf("field %s of kind %v: teach this test to change it", fd.Name(), fd.Kind())
		}
		if EqualWorkload(full, changed) || EqualWorkload(changed, full) {
			t.Errorf("a change of %s is not seen", fd.Name())
		}
		if proto.Equal(full, changed) {
			t.Fatalf("the test did not change %s", fd.Name())
		}
	}
	if !EqualWorkload(full, proto.Clone(full).(*Workload)) {
		t.Error("a copy is not equal")
	}
	if EqualWorkload(full, nil) || !EqualWorkload(nil, nil) {
		t.Error("nil")
	}
}
