package mesh

import (
	"errors"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNamespaceEnrolled(t *testing.T) {
	ns := func(ann map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: ann}}
	}
	for _, tc := range []struct {
		name string
		ns   *corev1.Namespace
		want bool
	}{
		{"enabled", ns(map[string]string{AnnotationMesh: MeshEnabled}), true},
		{"no annotation", ns(nil), false},
		{"disabled", ns(map[string]string{AnnotationMesh: MeshDisabled}), false},
		{"other value", ns(map[string]string{AnnotationMesh: "Enabled"}), false},
		{"missing namespace", nil, false},
	} {
		if got := NamespaceEnrolled(tc.ns); got != tc.want {
			t.Errorf("%s: NamespaceEnrolled = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPodEnrolled(t *testing.T) {
	pod := func(mut func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "cart-0"},
			Spec:       corev1.PodSpec{NodeName: "n1", ServiceAccountName: "cart"},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.244.1.5"},
		}
		if mut != nil {
			mut(p)
		}
		return p
	}
	now := metav1.Now()
	for _, tc := range []struct {
		name       string
		nsEnrolled bool
		pod        *corev1.Pod
		want       bool
	}{
		{"running pod in enrolled namespace", true, pod(nil), true},
		{"namespace not enrolled", false, pod(nil), false},
		{"nil pod", true, nil, false},
		{"opted out", true, pod(func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationMesh: MeshDisabled} }), false},
		{"pod annotation enabled is no opt-out", true, pod(func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationMesh: MeshEnabled} }), true},
		{"pod annotation cannot enroll alone", false, pod(func(p *corev1.Pod) { p.Annotations = map[string]string{AnnotationMesh: MeshEnabled} }), false},
		{"hostNetwork", true, pod(func(p *corev1.Pod) { p.Spec.HostNetwork = true }), false},
		{"not scheduled", true, pod(func(p *corev1.Pod) { p.Spec.NodeName = "" }), false},
		{"pending, scheduled", true, pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), true},
		{"succeeded", true, pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }), false},
		{"failed", true, pod(func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed }), false},
		{"terminating stays", true, pod(func(p *corev1.Pod) { p.DeletionTimestamp = &now }), true},
	} {
		if got := PodEnrolled(tc.nsEnrolled, tc.pod); got != tc.want {
			t.Errorf("%s: PodEnrolled = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPodServiceAccount(t *testing.T) {
	if got := PodServiceAccount(&corev1.Pod{}); got != DefaultServiceAccount {
		t.Errorf("no service account: %q", got)
	}
	if got := PodServiceAccount(&corev1.Pod{Spec: corev1.PodSpec{ServiceAccountName: "cart"}}); got != "cart" {
		t.Errorf("named service account: %q", got)
	}
}

func TestWorkloadID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	for _, tc := range []struct {
		name, ns, sa string
		td           spiffeid.TrustDomain
		want         string
	}{
		{"plain", "shop", "cart", td, "spiffe://cluster.local/ns/shop/sa/cart"},
		{"dotted service account", "shop", "cart.v2", td, "spiffe://cluster.local/ns/shop/sa/cart.v2"},
		{"other trust domain", "a", "b", spiffeid.RequireTrustDomainFromString("example.org"), "spiffe://example.org/ns/a/sa/b"},
		{"empty namespace", "", "cart", td, ""},
		{"upper-case namespace", "Shop", "cart", td, ""},
		{"namespace with a dot", "sh.op", "cart", td, ""},
		{"empty service account", "shop", "", td, ""},
		{"slash in service account", "shop", "a/b", td, ""},
		{"dot-dot service account", "shop", "..", td, ""},
		{"underscore", "shop", "a_b", td, ""},
		{"no trust domain", "shop", "cart", spiffeid.TrustDomain{}, ""},
	} {
		id, err := WorkloadID(tc.td, tc.ns, tc.sa)
		if tc.want == "" {
			if !errors.Is(err, ErrBadID) {
				t.Errorf("%s: WorkloadID = %v, %v; want ErrBadID", tc.name, id, err)
			}
			continue
		}
		if err != nil || id.String() != tc.want {
			t.Errorf("%s: WorkloadID = %v, %v; want %s", tc.name, id, err, tc.want)
			continue
		}
		ns, sa, err := ParseWorkloadID(tc.td, id)
		if err != nil || ns != tc.ns || sa != tc.sa {
			t.Errorf("%s: round trip = %q, %q, %v", tc.name, ns, sa, err)
		}
	}
}

func TestParseWorkloadID(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString(DefaultTrustDomain)
	for _, tc := range []struct {
		id     string
		ns, sa string // "" for ErrBadID
	}{
		{"spiffe://cluster.local/ns/shop/sa/cart", "shop", "cart"},
		{"spiffe://cluster.local/ns/shop/sa/default", "shop", "default"},
		{"spiffe://other.org/ns/shop/sa/cart", "", ""},
		{"spiffe://cluster.local", "", ""},
		{"spiffe://cluster.local/ns/shop", "", ""},
		{"spiffe://cluster.local/ns/shop/sa/cart/extra", "", ""},
		{"spiffe://cluster.local/sa/cart/ns/shop", "", ""},
		{"spiffe://cluster.local/ns/Shop_1/sa/cart", "", ""},
		{"spiffe://cluster.local/ns/shop/sa/Cart_1", "", ""},
	} {
		id := spiffeid.RequireFromString(tc.id)
		ns, sa, err := ParseWorkloadID(td, id)
		if tc.ns == "" {
			if !errors.Is(err, ErrBadID) {
				t.Errorf("%s: ParseWorkloadID = %q, %q, %v; want ErrBadID", tc.id, ns, sa, err)
			}
			continue
		}
		if err != nil || ns != tc.ns || sa != tc.sa {
			t.Errorf("%s: ParseWorkloadID = %q, %q, %v", tc.id, ns, sa, err)
		}
	}
	if _, _, err := ParseWorkloadID(td, spiffeid.ID{}); !errors.Is(err, ErrBadID) {
		t.Errorf("zero ID: %v", err)
	}
}

func TestParseTrustDomain(t *testing.T) {
	if td, err := ParseTrustDomain(""); err != nil || td.Name() != DefaultTrustDomain {
		t.Errorf("empty: %v, %v", td, err)
	}
	if td, err := ParseTrustDomain("example.org"); err != nil || td.Name() != "example.org" {
		t.Errorf("example.org: %v, %v", td, err)
	}
	for _, bad := range []string{"Example.org", "a b", "spiffe://x/y", strings.Repeat("a/", 3)} {
		if _, err := ParseTrustDomain(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
