package ca

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/weft-mesh/weft/api/mesh"
)

func TestListerPods(t *testing.T) {
	pods := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	nss := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range []*corev1.Pod{
		pod("shop", "a", "cart", "n1", corev1.PodRunning, nil),
		pod("shop", "b", "cart", "n2", corev1.PodRunning, nil),
		pod("other", "c", "cart", "n1", corev1.PodRunning, nil),
	} {
		if err := pods.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	if err := nss.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled}}}); err != nil {
		t.Fatal(err)
	}
	l := NewListerPods(corelisters.NewPodLister(pods), corelisters.NewNamespaceLister(nss))
	got, err := l.NodePods(context.Background(), "shop", "n1")
	if err != nil || len(got) != 1 || got[0].Name != "a" {
		t.Fatalf("NodePods = %v, %v; want shop/a", got, err)
	}
	if _, err := l.Namespace(context.Background(), "missing"); !apierrors.IsNotFound(err) {
		t.Fatalf("missing namespace: %v, want NotFound", err)
	}
	if err := lookupAndAuthorize(context.Background(), l, "n1", "shop", "cart"); err != nil {
		t.Fatalf("authorize through listers: %v", err)
	}
	if err := lookupAndAuthorize(context.Background(), l, "n1", "missing", "cart"); err == nil {
		t.Fatal("authorized a missing namespace")
	}
}
