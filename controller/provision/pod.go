package provision

import (
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// ErrNotDataPlane: a pod is not a data plane pod of the Gateway in question.
var ErrNotDataPlane = errors.New("not a gateway data plane pod")

// CheckPod tells whether pod is a data plane pod of the Gateway
// namespace/gateway: in the Gateway's namespace, running as the Gateway's
// ServiceAccount (Identity) and labelled with its common name
// (mesh.LabelGateway), as Desired makes them. The label alone proves
// nothing (anyone who may create pods may set it); the ServiceAccount, which
// is derived from the Gateway's name, is what the caller's token proves.
// Errors wrap ErrNotDataPlane.
func CheckPod(pod *corev1.Pod, namespace, gateway string) error {
	ref := pod.Namespace + "/" + pod.Name
	sa, name := Identity(gateway), Name(gateway)
	switch {
	case pod.Namespace != namespace:
		return fmt.Errorf("%w: pod %s is not in the namespace of gateway %s/%s", ErrNotDataPlane, ref, namespace, gateway)
	case mesh.PodServiceAccount(pod) != sa:
		return fmt.Errorf("%w: pod %s runs as ServiceAccount %q, not %q of gateway %s/%s", ErrNotDataPlane, ref, mesh.PodServiceAccount(pod), sa, namespace, gateway)
	case pod.Labels[mesh.LabelGateway] != name:
		return fmt.Errorf("%w: pod %s has label %s=%q, not %q", ErrNotDataPlane, ref, mesh.LabelGateway, pod.Labels[mesh.LabelGateway], name)
	}
	return nil
}
