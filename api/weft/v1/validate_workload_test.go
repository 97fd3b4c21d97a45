package weftv1

import (
	"errors"
	"testing"
)

func TestValidateStrictWorkloads(t *testing.T) {
	w := func(strict bool, uid string, ips ...string) *Workload {
		return &Workload{Namespace: "shop", Name: "cart", Uid: uid, Ips: ips, MtlsStrict: strict}
	}
	for _, tc := range []struct {
		name string
		w    *Workload
		ok   bool
	}{
		{"strict with an address", w(true, "u1", "10.0.0.5"), true},
		{"strict dual stack", w(true, "u1", "10.0.0.5", "fd00::5"), true},
		{"permissive without address", w(false, "u1"), true},
		{"strict without address", w(true, "u1"), false},
		{"strict without uid", w(true, "", "10.0.0.5"), false},
		{"strict with a bad address", w(true, "u1", "10.0.0.500"), false},
		{"strict with unspecified address", w(true, "u1", "0.0.0.0"), false},
	} {
		err := (&NodePolicy{Workloads: []*Workload{tc.w}}).Validate()
		if tc.ok != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidWorkload)) {
			t.Errorf("%s: Validate = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
