package node

import (
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestContainerCaps(t *testing.T) {
	yes := true
	for _, tc := range []struct {
		name string
		sc   *corev1.SecurityContext
		want capSet
		priv bool
	}{
		{"none", nil, defaultCaps, false},
		{"privileged", &corev1.SecurityContext{Privileged: &yes}, allCaps, true},
		{"drop all add one", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_ADMIN"}}}, capsOf("NET_ADMIN"), false},
		{"CAP_ prefix and case", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"cap_bpf"}, Drop: []corev1.Capability{"Net_Raw"}}}, (defaultCaps | capsOf("BPF")) &^ capsOf("NET_RAW"), false},
		{"add all drop one", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"ALL"}, Drop: []corev1.Capability{"CHOWN"}}}, allCaps &^ capsOf("CHOWN"), false},
		{"unknown name ignored", &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"FLY"}}}, defaultCaps, false},
	} {
		got, priv := containerCaps(tc.sc)
		if got != tc.want || priv != tc.priv {
			t.Errorf("%s: got %#x %v, want %#x %v", tc.name, got, priv, tc.want, tc.priv)
		}
	}
	if len(capNames) != 41 || !strings.Contains(strings.Join(slices.Sorted(maps.Keys(capNames)), ","), "CHECKPOINT_RESTORE") {
		t.Errorf("capability table has %d entries", len(capNames))
	}
}
