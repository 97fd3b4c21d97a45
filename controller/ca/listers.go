package ca

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// NewListerPods returns Pods backed by informer listers (no apiserver call
// per request). The informers must be synced before Sign is served.
func NewListerPods(pods corelisters.PodLister, namespaces corelisters.NamespaceLister) Pods {
	return listerPods{pods: pods, namespaces: namespaces}
}

type listerPods struct {
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
}

func (l listerPods) NodePods(_ context.Context, namespace, node string) ([]*corev1.Pod, error) {
	all, err := l.pods.Pods(namespace).List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", namespace, err)
	}
	out := all[:0:0]
	for _, p := range all {
		if p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out, nil
}

func (l listerPods) Namespace(_ context.Context, name string) (*corev1.Namespace, error) {
	return l.namespaces.Get(name)
}
