package controller

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	appsinformers "k8s.io/client-go/informers/apps/v1"
	"k8s.io/client-go/tools/cache"
)

// agentImage follows the image of the weft-agent DaemonSet, which every
// Gateway's data plane runs too. Reading it from the DaemonSet, rather
// than from a flag the installer writes, keeps the two the same however
// the install set the image: Helm values, a kustomize images: entry that
// mirrors the registry, or a kubectl set image. A change of the image
// (an upgrade) rolls the Gateways' data planes.
type agentImage struct {
	inf  cache.SharedIndexInformer
	name string
}

func (c *Controller) newAgentImage(name string) (*agentImage, error) {
	byName := func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}
	a := &agentImage{
		inf:  appsinformers.NewFilteredDaemonSetInformer(c.kube, c.cfg.Namespace, 0, cache.Indexers{}, byName),
		name: name,
	}
	changed := func(any) { c.Kick() }
	if _, err := a.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: changed, DeleteFunc: changed,
		UpdateFunc: func(o, n any) {
			if image(o) != image(n) {
				c.Kick()
			}
		},
	}); err != nil {
		return nil, fmt.Errorf("agent daemonset informer: %w", err)
	}
	return a, nil
}

func (a *agentImage) run(ctx context.Context) { a.inf.Run(ctx.Done()) }

// get is the image and pull policy of the agent DaemonSet's first
// container; "" while it is not known (not synced, or no such DaemonSet).
func (a *agentImage) get() (string, corev1.PullPolicy) {
	for _, o := range a.inf.GetStore().List() {
		if ds, ok := o.(*appsv1.DaemonSet); ok && ds.Name == a.name && len(ds.Spec.Template.Spec.Containers) > 0 {
			ctr := ds.Spec.Template.Spec.Containers[0]
			return ctr.Image, ctr.ImagePullPolicy
		}
	}
	return "", ""
}

func image(o any) string {
	if ds, ok := o.(*appsv1.DaemonSet); ok && len(ds.Spec.Template.Spec.Containers) > 0 {
		return ds.Spec.Template.Spec.Containers[0].Image + " " + string(ds.Spec.Template.Spec.Containers[0].ImagePullPolicy)
	}
	return ""
}
