package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/api/logkey"
	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// marker patches mesh.ConditionEnrolled onto pods, once per pod UID.
type marker struct {
	kube kubernetes.Interface
	log  *slog.Logger
	mu   sync.Mutex
	done map[string]bool
}

// enrolledPatch is the strategic-merge patch that sets the condition
// (conditions merge by type, so other conditions are untouched).
func enrolledPatch(now time.Time) ([]byte, error) {
	return json.Marshal(map[string]any{
		"status": map[string]any{
			"conditions": []corev1.PodCondition{{
				Type:               mesh.ConditionEnrolled,
				Status:             corev1.ConditionTrue,
				Reason:             "RedirectInPlace",
				Message:            "connections to meshed Services go through this node's weft proxy",
				LastTransitionTime: metav1.NewTime(now),
			}},
		},
	})
}

func (m *marker) enrolled(w *weftv1.Workload) {
	m.mu.Lock()
	if m.done[w.GetUid()] {
		m.mu.Unlock()
		return
	}
	m.done[w.GetUid()] = true
	m.mu.Unlock()
	go func() {
		patch, err := enrolledPatch(time.Now())
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = m.kube.CoreV1().Pods(w.GetNamespace()).Patch(ctx, w.GetName(),
				types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
		}
		if err != nil {
			m.log.Warn("mark pod enrolled", logkey.Pod, w.GetNamespace()+"/"+w.GetName(), logkey.Error, err)
			m.mu.Lock()
			delete(m.done, w.GetUid()) // try again at the next sync
			m.mu.Unlock()
		}
	}()
}

// retain forgets pods that left the policy, so a pod that comes back under
// the same UID (never, in Kubernetes) or the map itself cannot grow stale.
func (m *marker) retain(current map[string]*weftv1.Workload) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for uid := range m.done {
		if _, ok := current[uid]; !ok {
			delete(m.done, uid)
		}
	}
}
