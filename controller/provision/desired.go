// Package provision decides and applies the data plane of each of Weft's
// accepted Gateways: a ServiceAccount (the gateway's workload identity), a
// ConfigMap with the mesh's CA bundle (the data plane verifies the
// controller with it), a Deployment running weft-agent in gateway mode and a
// Service of type LoadBalancer, all owned by the Gateway (controller
// reference) so that deleting the Gateway removes them.
//
// Desired is pure; Applier is the thin I/O around it.
//
// # Why a ConfigMap per Gateway
//
// The CA bundle the controller publishes (weft-ca-bundle) lives in the
// controller's namespace, and a pod can mount only ConfigMaps of its own
// namespace. The controller copies the bundle into the Gateway's namespace,
// owned by the Gateway; it is rewritten when the bundle rotates.
package provision

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// Paths and settings the data plane is started with.
const (
	// SecretsDir holds the projected token and the CA bundle.
	SecretsDir = "/var/run/secrets/weft"
	// TokenAudience of the projected ServiceAccount token the controller
	// checks (TokenReview), as for agents.
	TokenAudience = "weft"
	// tokenSeconds is the projected token's lifetime; the kubelet rotates it.
	tokenSeconds = 3600
	// CAKey is the bundle's key in its ConfigMap and file name.
	CAKey = "ca.crt"
	// suffix of the objects' common name.
	suffix = "-weft-gateway"
	// runAsUser of the data plane (distroless nonroot).
	runAsUser = 65532
)

// Params are the settings of every Gateway's data plane.
type Params struct {
	// Image of weft-agent.
	Image string
	// PullPolicy of the image; IfNotPresent when empty.
	PullPolicy corev1.PullPolicy
	// Controller is the address of the controller's gRPC server
	// (weft-controller.<ns>.svc:15012).
	Controller string
	// CABundle is the PEM bundle the controller publishes (weft-ca-bundle).
	CABundle []byte
	// LogLevel: passed on when set. (The trust domain is not a flag: the
	// data plane learns its identity from its policy.)
	LogLevel string
}

// Objects are one Gateway's data plane.
type Objects struct {
	ServiceAccount *corev1.ServiceAccount
	ConfigMap      *corev1.ConfigMap
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
}

var label = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)

// Name is the common name of a Gateway's objects: <gateway>-weft-gateway
// when that is a DNS label (a Service name: at most 63 characters, starting
// with a letter, no dots); otherwise weft-gateway-<the gateway's name
// cut and cleaned>-<hash of it>. The two forms cannot meet (a hash never
// ends in -weft-gateway), and Gateway names are unique in a namespace, so
// two Gateways never share a name.
func Name(gateway string) string {
	if n := gateway + suffix; len(n) <= 63 && label.MatchString(n) {
		return n
	}
	sum := sha256.Sum256([]byte(gateway))
	clean := strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(gateway), "-"), "-")
	const prefix, hashLen = "weft-gateway-", 10
	if max := 63 - len(prefix) - 1 - hashLen - 1; len(clean) > max {
		clean = strings.Trim(clean[:max], "-")
	}
	if clean != "" {
		clean += "-"
	}
	return prefix + clean + hex.EncodeToString(sum[:])[:hashLen]
}

// CAConfigMap is the name of the ConfigMap with the CA bundle.
func CAConfigMap(gateway string) string { return Name(gateway) + "-ca" }

// Identity is the ServiceAccount of the Gateway's data plane: its SPIFFE ID
// is spiffe://<trust domain>/ns/<gateway namespace>/sa/<Identity>.
func Identity(gateway string) string { return Name(gateway) }

// Desired returns the data plane of gw.
func Desired(gw *gwv1.Gateway, p Params) Objects {
	name := Name(gw.Name)
	meta := func(n string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Namespace: gw.Namespace, Name: n,
			Labels: labels(gw, name), Annotations: annotations(gw),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(gw, schema.GroupVersionKind{Group: gwv1.GroupName, Version: "v1", Kind: "Gateway"})},
		}
	}
	return Objects{
		ServiceAccount: &corev1.ServiceAccount{ObjectMeta: meta(name), AutomountServiceAccountToken: ptr(false)},
		ConfigMap:      &corev1.ConfigMap{ObjectMeta: meta(CAConfigMap(gw.Name)), Data: map[string]string{CAKey: string(p.CABundle)}},
		Deployment:     deployment(gw, meta(name), p),
		Service:        service(gw, meta(name)),
	}
}

// labels are spec.infrastructure.labels, then Weft's (which win: the
// selector relies on them).
func labels(gw *gwv1.Gateway, name string) map[string]string {
	out := map[string]string{}
	if inf := gw.Spec.Infrastructure; inf != nil {
		for k, v := range inf.Labels {
			out[string(k)] = string(v)
		}
	}
	out[mesh.LabelGateway] = name
	// the label the Gateway API defines for what is generated for a Gateway
	out[gwv1.GatewayNameLabelKey] = gw.Name
	out[mesh.LabelPartOf] = mesh.PartOf
	out[mesh.LabelName] = "weft-gateway"
	return out
}

func annotations(gw *gwv1.Gateway) map[string]string {
	if gw.Spec.Infrastructure == nil || len(gw.Spec.Infrastructure.Annotations) == 0 {
		return nil
	}
	out := map[string]string{}
	for k, v := range gw.Spec.Infrastructure.Annotations {
		out[string(k)] = string(v)
	}
	return out
}

// listenerPort is one port of the Gateway's listeners.
type listenerPort struct {
	port     int32
	protocol gwv1.ProtocolType // of the first listener on it
}

// ports are the distinct listener ports, ascending, without the data
// plane's own health and metrics ports (such a listener is
// PortUnavailable).
func ports(gw *gwv1.Gateway) []listenerPort {
	seen := map[int32]gwv1.ProtocolType{}
	for _, l := range gw.Spec.Listeners {
		if _, ok := seen[int32(l.Port)]; !ok && int32(l.Port) != mesh.HealthPort && int32(l.Port) != mesh.MetricsPort {
			seen[int32(l.Port)] = l.Protocol
		}
	}
	var out []listenerPort
	for _, port := range slices.Sorted(maps.Keys(seen)) {
		out = append(out, listenerPort{port, seen[port]})
	}
	return out
}

func portName(port int32) string { return "l-" + strconv.Itoa(int(port)) }

func service(gw *gwv1.Gateway, meta metav1.ObjectMeta) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: meta, Spec: corev1.ServiceSpec{
		Type:     corev1.ServiceTypeLoadBalancer,
		Selector: map[string]string{mesh.LabelGateway: meta.Name},
	}}
	for _, lp := range ports(gw) {
		sp := corev1.ServicePort{Name: portName(lp.port), Protocol: corev1.ProtocolTCP, Port: lp.port, TargetPort: intstr.FromInt32(lp.port)}
		switch lp.protocol {
		case gwv1.HTTPProtocolType:
			sp.AppProtocol = ptr("http")
		case gwv1.HTTPSProtocolType:
			sp.AppProtocol = ptr("https")
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	return svc
}

func ptr[T any](v T) *T { return &v }

// String is a short description for logs.
func (o Objects) String() string {
	return fmt.Sprintf("%s/%s", o.Deployment.Namespace, o.Deployment.Name)
}

func itoa(n int) string { return strconv.Itoa(n) }
