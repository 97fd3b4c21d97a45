package provision

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/api/logkey"
)

// AnnotationHash holds the hash of the object as Weft last wanted it: an
// object whose annotation matches is not written again.
const AnnotationHash = "weft.dev/provision-hash"

// Applier creates and updates the data plane objects. It remembers what
// it applied, so an unchanged Gateway costs no request; Forget makes the
// next Apply read every object again (after a leadership change, and
// periodically, so an object someone deleted or edited comes back).
type Applier struct {
	kube    kubernetes.Interface
	log     *slog.Logger
	mu      sync.Mutex        // one Apply at a time; Forget from any goroutine
	applied map[string]string // kind/namespace/name -> hash
}

// NewApplier returns an Applier.
func NewApplier(kube kubernetes.Interface, log *slog.Logger) *Applier {
	if log == nil {
		log = slog.Default()
	}
	return &Applier{kube: kube, log: log, applied: map[string]string{}}
}

// Forget drops what the Applier remembers.
func (a *Applier) Forget() {
	a.mu.Lock()
	a.applied = map[string]string{}
	a.mu.Unlock()
}

// Apply brings every object of objs to what it says; it returns how many
// objects it wrote and every error met (it goes on after one).
func (a *Applier) Apply(ctx context.Context, objs []Objects) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	n := 0
	for _, o := range objs {
		for _, obj := range []metav1.Object{o.ServiceAccount, o.ConfigMap, o.Service, o.Deployment} {
			wrote, err := a.applyOne(ctx, obj)
			if wrote {
				n++
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return n, errors.Join(errs...)
}

// applyOne writes obj unless it is known (or found) to be as wanted.
func (a *Applier) applyOne(ctx context.Context, obj metav1.Object) (bool, error) {
	kind := fmt.Sprintf("%T", obj)
	key := kind + "/" + obj.GetNamespace() + "/" + obj.GetName()
	b, err := json.Marshal(obj)
	if err != nil {
		return false, fmt.Errorf("hash %s: %w", key, err)
	}
	sum := sha256.Sum256(b)
	hash := hex.EncodeToString(sum[:16])
	if a.applied[key] == hash {
		return false, nil
	}
	ann := map[string]string{AnnotationHash: hash}
	for k, v := range obj.GetAnnotations() {
		ann[k] = v
	}
	obj.SetAnnotations(ann)
	r := resource(a.kube, obj)
	live, err := r.get(ctx)
	switch {
	case apierrors.IsNotFound(err):
		if err := r.create(ctx); err != nil {
			return false, fmt.Errorf("create %s: %w", key, err)
		}
		a.log.Info("provisioned", logkey.Kind, kind, logkey.Namespace, obj.GetNamespace(), logkey.Name, obj.GetName())
		a.applied[key] = hash
		return true, nil
	case err != nil:
		return false, fmt.Errorf("get %s: %w", key, err)
	}
	if !sameController(live, obj) {
		return false, fmt.Errorf("%s exists and is not the Gateway's: delete or rename it so Weft can provision the Gateway", key)
	}
	if live.GetAnnotations()[AnnotationHash] == hash {
		a.applied[key] = hash
		return false, nil
	}
	if err := r.update(ctx, live); err != nil {
		return false, fmt.Errorf("update %s: %w", key, err)
	}
	a.applied[key] = hash
	return true, nil
}

func sameController(live, want metav1.Object) bool {
	l, w := metav1.GetControllerOf(live), metav1.GetControllerOf(want)
	return l != nil && w != nil && l.UID == w.UID
}
