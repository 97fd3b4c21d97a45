package provision

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

func TestCheckPod(t *testing.T) {
	gw := &gwv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}}
	objs := Desired(gw, Params{Image: "weft"})
	ok := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", Labels: objs.Deployment.Spec.Template.Labels},
		Spec:       objs.Deployment.Spec.Template.Spec,
	}
	if err := CheckPod(ok, "shop", "web"); err != nil {
		t.Fatalf("the provisioned pod: %v", err)
	}
	mut := func(f func(p *corev1.Pod)) *corev1.Pod {
		p := ok.DeepCopy()
		f(p)
		return p
	}
	for name, tc := range map[string]struct {
		pod    *corev1.Pod
		ns, gw string
	}{
		"other gateway":            {ok, "shop", "api"},
		"other namespace":          {mut(func(p *corev1.Pod) { p.Namespace = "dev" }), "shop", "web"},
		"label only, other SA":     {mut(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "default" }), "shop", "web"},
		"right SA, label missing":  {mut(func(p *corev1.Pod) { delete(p.Labels, mesh.LabelGateway) }), "shop", "web"},
		"default SA, right labels": {mut(func(p *corev1.Pod) { p.Spec.ServiceAccountName = "" }), "shop", "web"},
	} {
		if err := CheckPod(tc.pod, tc.ns, tc.gw); !errors.Is(err, ErrNotDataPlane) {
			t.Errorf("%s: got %v, want ErrNotDataPlane", name, err)
		}
	}
}
