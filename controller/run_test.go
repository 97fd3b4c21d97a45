package controller

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/weft-mesh/weft/controller/ca"
	"github.com/weft-mesh/weft/test/syncbuf"
)

// slowCreates is a clientset whose ConfigMap creates wait before they reach
// the (serialising) fake: a second writer has time to find the ConfigMap
// missing too, as it would against an apiserver.
type slowCreates struct {
	*fake.Clientset
	creates *atomic.Int32
}

func (s slowCreates) CoreV1() corev1client.CoreV1Interface {
	return slowCore{s.Clientset.CoreV1(), s.creates}
}

type slowCore struct {
	corev1client.CoreV1Interface
	creates *atomic.Int32
}

func (c slowCore) ConfigMaps(ns string) corev1client.ConfigMapInterface {
	return slowConfigMaps{c.CoreV1Interface.ConfigMaps(ns), c.creates}
}

type slowConfigMaps struct {
	corev1client.ConfigMapInterface
	creates *atomic.Int32
}

func (m slowConfigMaps) Create(ctx context.Context, cm *corev1.ConfigMap, opts metav1.CreateOptions) (*corev1.ConfigMap, error) {
	m.creates.Add(1)
	time.Sleep(100 * time.Millisecond)
	return m.ConfigMapInterface.Create(ctx, cm, opts)
}

var _ kubernetes.Interface = slowCreates{}

// On a fresh install the new leader creates the root, which changes the
// bundle while the leader start hook also asks for a publish: the bundle
// ConfigMap must be created once, with no AlreadyExists error logged.
func TestFreshInstallPublishesTheBundleOnce(t *testing.T) {
	var creates atomic.Int32
	client := slowCreates{fake.NewClientset(), &creates}
	logs := &syncbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	r := &replica{log: log}
	r.bundle = newBundlePublisher(func(ctx context.Context) error {
		return r.ca.PublishBundle(ctx, ca.DefaultBundleConfigMap)
	}, func() bool { return true }, log)
	authority, err := ca.New(ca.Config{Client: client, Namespace: "weft-system", OnBundleChange: r.bundle.request, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	r.ca = authority
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.bundle.run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("publisher: %v", err)
		}
	}()

	if err := r.onLeader(ctx); err != nil {
		t.Fatal(err)
	}
	r.bundle.request() // a change arriving while the first publish is in flight
	deadline := time.Now().Add(10 * time.Second)
	for {
		cm, err := client.CoreV1().ConfigMaps("weft-system").Get(ctx, ca.DefaultBundleConfigMap, metav1.GetOptions{})
		if err == nil && strings.Contains(cm.Data["ca.crt"], "BEGIN CERTIFICATE") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bundle not published: %v\n%s", err, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // let any other publish run
	if n := creates.Load(); n != 1 {
		t.Errorf("bundle created %d times, want 1", n)
	}
	if out := logs.String(); strings.Contains(out, "level=WARN") || strings.Contains(out, "level=ERROR") {
		t.Errorf("publishing logged a problem:\n%s", out)
	}
}

func TestBundlePublisherRetriesAndWaitsForLeadership(t *testing.T) {
	var leader atomic.Bool
	calls := make(chan struct{}, 10)
	var fail atomic.Bool
	fail.Store(true)
	p := newBundlePublisher(func(context.Context) error {
		calls <- struct{}{}
		if fail.Swap(false) {
			return context.DeadlineExceeded
		}
		return nil
	}, leader.Load, slog.New(slog.NewTextHandler(&syncbuf.Buffer{}, nil)))
	p.retry = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.run(ctx)

	p.request()
	select {
	case <-calls:
		t.Fatal("published while not leading")
	case <-time.After(100 * time.Millisecond):
	}
	leader.Store(true)
	p.request()
	for i := range 2 { // the failed publish, then its retry
		select {
		case <-calls:
		case <-time.After(5 * time.Second):
			t.Fatalf("publish %d did not happen", i+1)
		}
	}
}
