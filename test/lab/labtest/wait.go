package labtest

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/weft-mesh/weft/test/lab"
)

// Poll calls cond every 200ms until it returns true, an error, or timeout passes; the
// timeout error carries the last message cond gave.
func Poll(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) (done bool, msg string, err error)) error {
	last := ""
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		done, msg, err := cond(ctx)
		if msg != "" {
			last = msg
		}
		return done, err
	})
	if err != nil && last != "" {
		return fmt.Errorf("%w: %s", err, last)
	}
	return err
}

// PodReady reports whether a pod has condition Ready=True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// WaitPodsReady waits until exactly n pods match selector in ns, none terminating, all
// Ready, and returns them.
func (l *Lab) WaitPodsReady(ctx context.Context, ns, selector string, n int, timeout time.Duration) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	err := Poll(ctx, timeout, func(ctx context.Context) (bool, string, error) {
		list, err := l.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err.Error(), nil
		}
		var notReady []string
		pods = pods[:0]
		for i := range list.Items {
			p := &list.Items[i]
			if p.DeletionTimestamp != nil {
				notReady = append(notReady, p.Name+"(terminating)")
				continue
			}
			pods = append(pods, *p)
			if !PodReady(p) {
				notReady = append(notReady, fmt.Sprintf("%s(%s)", p.Name, podSummary(p)))
			}
		}
		if len(pods) != n || len(notReady) > 0 {
			return false, fmt.Sprintf("%d/%d pods, not ready: %s", len(pods), n, strings.Join(notReady, ", ")), nil
		}
		return true, "", nil
	})
	return pods, err
}

func podSummary(p *corev1.Pod) string {
	s := string(p.Status.Phase)
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil {
			s += " " + c.Name + ":" + w.Reason + " " + w.Message
		}
	}
	return s
}

// WaitPodReady waits until the named pod is Ready and returns it.
func (l *Lab) WaitPodReady(ctx context.Context, ns, name string, timeout time.Duration) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := Poll(ctx, timeout, func(ctx context.Context) (bool, string, error) {
		p, err := l.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		pod = p
		return PodReady(p), podSummary(p), nil
	})
	return pod, err
}

// WaitDeploymentAvailable waits until a Deployment has all its replicas updated and available.
func (l *Lab) WaitDeploymentAvailable(ctx context.Context, ns, name string, timeout time.Duration) error {
	return Poll(ctx, timeout, func(ctx context.Context) (bool, string, error) {
		d, err := l.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error(), nil
		}
		return lab.DeploymentAvailable(d), fmt.Sprintf("%+v", d.Status), nil
	})
}

// Namespace creates a namespace named prefix-<random> with the labels and annotations
// given, and returns its name and a function that deletes it.
func (l *Lab) Namespace(ctx context.Context, prefix string, labels, annotations map[string]string) (string, func(), error) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        prefix + "-" + rand.String(5),
		Labels:      labels,
		Annotations: annotations,
	}}
	if _, err := l.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return "", nil, fmt.Errorf("create namespace: %w", err)
	}
	return ns.Name, func() {
		_ = l.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	}, nil
}
