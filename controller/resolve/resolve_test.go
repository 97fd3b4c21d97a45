package resolve

import (
	"bytes"
	"errors"
	"math/rand"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// TestInputOrderDoesNotMatter shuffles every list of every golden input:
// informers hand out objects in no particular order, and the policy and
// statuses must not depend on it.
func TestInputOrderDoesNotMatter(t *testing.T) {
	cases, _ := filepath.Glob("testdata/*.in.yaml")
	rnd := rand.New(rand.NewSource(7))
	for _, c := range cases {
		in, err := loadCase(c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := render(Resolve(in))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			shuffle(rnd, in.Namespaces)
			shuffle(rnd, in.Nodes)
			shuffle(rnd, in.Services)
			shuffle(rnd, in.EndpointSlices)
			shuffle(rnd, in.Pods)
			shuffle(rnd, in.HTTPRoutes)
			shuffle(rnd, in.GRPCRoutes)
			shuffle(rnd, in.TCPRoutes)
			shuffle(rnd, in.BackendTrafficPolicies)
			shuffle(rnd, in.Backends)
			got, err := render(Resolve(in))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: output depends on input order:\n%s", c, lineDiff(string(want), string(got)))
			}
		}
	}
}

func shuffle[T any](r *rand.Rand, s []T) {
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
}

func TestValidateOptions(t *testing.T) {
	for _, tc := range []struct {
		o       Options
		wantErr error
	}{
		{Options{}, nil},
		{Options{TrustDomain: "prod.example.com", TunnelPort: 15009}, nil},
		{Options{TrustDomain: "Prod.Example"}, ErrInvalidTrustDomain},
		{Options{TrustDomain: "a/b"}, ErrInvalidTrustDomain},
	} {
		err := ValidateOptions(tc.o)
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("ValidateOptions(%+v) = %v, want %v", tc.o, err, tc.wantErr)
		}
	}
	if err := ValidateOptions(Options{TunnelPort: 70000}); err == nil {
		t.Error("ValidateOptions accepted tunnel port 70000")
	}
	// Resolve never fails: an invalid trust domain falls back to the default.
	in := Input{
		Options:    Options{TrustDomain: "BAD/TD", TunnelPort: 70000},
		Namespaces: []corev1.Namespace{{ObjectMeta: metav1.ObjectMeta{Name: "a", Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}}},
		Nodes: []corev1.Node{{ObjectMeta: metav1.ObjectMeta{Name: "n1"},
			Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "172.30.0.11"}}}}},
		Pods: []*Pod{{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "p"}, NodeName: "n1", Phase: corev1.PodRunning, PodIP: "10.244.1.2"}},
	}
	p := Resolve(in).Nodes["n1"]
	if p.GetTrustDomain() != mesh.DefaultTrustDomain || len(p.GetWorkloads()) != 1 || p.GetWorkloads()[0].GetIdentity() != "spiffe://cluster.local/ns/a/sa/default" {
		t.Fatalf("policy with an invalid trust domain: %v", p)
	}
	if got := p.GetNodeTunnels()["n1"]; got != "172.30.0.11:15008" {
		t.Fatalf("tunnel with an invalid port: %q", got)
	}
}

// TestServiceVIPs: a Service's capturable addresses, canonical and
// distinct, clusterIP first; the object's own slice when it is that
// already, a new one otherwise.
func TestServiceVIPs(t *testing.T) {
	for _, c := range []struct {
		name      string
		clusterIP string
		ips       []string
		want      []string
		shared    bool
	}{
		{"dual stack", "10.0.0.1", []string{"10.0.0.1", "fd00::1"}, []string{"10.0.0.1", "fd00::1"}, true},
		{"clusterIPs only", "", []string{"10.0.0.1"}, []string{"10.0.0.1"}, true},
		{"upper-case IPv6", "FD00::1", []string{"FD00::1"}, []string{"fd00::1"}, false},
		{"IPv4 in IPv6", "::ffff:10.0.0.1", []string{"::ffff:10.0.0.1"}, []string{"10.0.0.1"}, false},
		{"repeated", "10.0.0.1", []string{"10.0.0.1", "10.0.0.1"}, []string{"10.0.0.1"}, false},
		{"clusterIP not first", "fd00::1", []string{"10.0.0.1", "fd00::1"}, []string{"10.0.0.1", "fd00::1"}, false},
		{"clusterIP missing from clusterIPs", "10.0.0.9", []string{"10.0.0.1"}, []string{"10.0.0.9", "10.0.0.1"}, false},
		{"clusterIP only", "10.0.0.1", nil, []string{"10.0.0.1"}, false},
		{"invalid", "10.0.0.1", []string{"10.0.0.1", "nope"}, []string{"10.0.0.1"}, false},
		{"headless", "None", []string{"None"}, nil, false},
	} {
		svc := &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: c.clusterIP, ClusterIPs: c.ips}}
		got := serviceVIPs(svc)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		if shared := len(got) > 0 && len(c.ips) > 0 && &got[0] == &c.ips[0]; shared != c.shared {
			t.Errorf("%s: shares the object's slice: %v, want %v", c.name, shared, c.shared)
		}
	}
}
