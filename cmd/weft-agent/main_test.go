package main

import "testing"

func TestKubepodsAncestor(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0::/weft-lab/lab-node-1/kubepods/pod1234/\n", "weft-lab/lab-node-1/kubepods"},
		{"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12_34.slice/cri-containerd-ab.scope\n", "kubepods.slice"},
		{"12:cpu:/x\n0::/kubepods/burstable/podab/cd\n", "kubepods"},
	} {
		got, err := kubepodsAncestor(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("kubepodsAncestor(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"0::/user.slice/session-1.scope\n", "1:name=systemd:/x\n"} {
		if got, err := kubepodsAncestor(in); err == nil {
			t.Errorf("kubepodsAncestor(%q) = %q, want an error", in, got)
		}
	}
}
