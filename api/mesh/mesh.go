// Package mesh is the contract between Weft's parts and the cluster: every
// annotation, label, condition and well-known name, the ports the node proxy
// listens on, the shape of a workload's SPIFFE ID and the one predicate that
// says whether a pod is in the mesh. The controller, the agent, weftctl and
// the tests import it; it imports nothing of Weft. A fact about the mesh is
// written here once and nowhere else.
package mesh

import corev1 "k8s.io/api/core/v1"

// AnnotationMesh enrolls a Namespace's pods when set to MeshEnabled on the
// Namespace, and opts one Pod out when set to MeshDisabled on the Pod.
const AnnotationMesh = "weft.dev/mesh"

// Values of AnnotationMesh.
const (
	// MeshEnabled on a Namespace enrolls its pods.
	MeshEnabled = "enabled"
	// MeshDisabled on a Pod keeps that pod out of an enrolled namespace's mesh.
	MeshDisabled = "disabled"
)

// ConditionEnrolled is the pod condition the agent sets (status True) once
// the pod's connections to meshed Services go through its node's proxy.
const ConditionEnrolled corev1.PodConditionType = "weft.dev/Enrolled"

// ControllerName is the controllerName Weft writes into every route parent
// and policy ancestor status it owns.
const ControllerName = "weft.dev/mesh-controller"

// GatewayControllerName is the controllerName of Weft's GatewayClasses, and
// the one Weft writes into every route parent and policy ancestor status
// that concerns one of its Gateways (north-south).
const GatewayControllerName = "weft.dev/gateway-controller"

// GatewayClassName is the GatewayClass the controller creates when the
// cluster has none with GatewayControllerName. Any class with that
// controllerName is Weft's, whatever its name.
const GatewayClassName = "weft"

// Annotations on the CA root Secret. A Secret the user provides (the
// cert-manager layout: tls.crt, tls.key, ca.crt) carries none of them and is
// never rotated by Weft.
const (
	// AnnotationCAManaged marks a root Secret Weft created and may rotate.
	AnnotationCAManaged = "weft.dev/ca-managed"
	// AnnotationCAActivatedAt records when the current signer took over
	// (RFC 3339); the previous root may be retired one SVID lifetime later.
	AnnotationCAActivatedAt = "weft.dev/ca-activated-at"
	// AnnotationCAStagedAt records when the staged root joined the trust
	// bundle (RFC 3339).
	AnnotationCAStagedAt = "weft.dev/ca-staged-at"
)

// Labels and names of Weft's own components, as the install manifests set them.
const (
	// LabelPartOf carries PartOf on every Weft pod (controller and agents).
	LabelPartOf = "app.kubernetes.io/part-of"
	// PartOf is the value of LabelPartOf on Weft's pods.
	PartOf = "weft"
	// LabelName carries a component's name, e.g. AgentName.
	LabelName = "app.kubernetes.io/name"
	// AgentName is the agent DaemonSet's name and its pods' LabelName.
	AgentName = "weft-agent"
	// SystemNamespace is where the install manifests put Weft.
	SystemNamespace = "weft-system"
)

// LabelGateway is set on the objects provisioned for a Gateway (its data
// plane's ServiceAccount, ConfigMap, Deployment, pods and Service); the value
// is their common name (controller/provision Name), a valid label value.
const LabelGateway = "weft.dev/gateway"

// Well-known ports of the node proxy, on the node's IP.
const (
	// CapturePort receives enrolled pods' redirected outbound connections.
	CapturePort = 15001
	// TunnelPort is the inbound mTLS tunnel between node proxies.
	TunnelPort = 15008
	// HealthPort serves the agent's health probes.
	HealthPort = 15021
	// MetricsPort serves the agent's and the controller's Prometheus
	// metrics (/metrics), on a container port named "metrics".
	MetricsPort = 15020
)

// The annotations Prometheus's usual pod discovery reads, which Weft sets on
// its pods (controller, agents, Gateway data planes) to announce MetricsPort.
const (
	AnnotationPrometheusScrape = "prometheus.io/scrape"
	AnnotationPrometheusPort   = "prometheus.io/port"
	AnnotationPrometheusPath   = "prometheus.io/path"
	// MetricsPath is where MetricsPort serves.
	MetricsPath = "/metrics"
)

// DefaultTrustDomain is the SPIFFE trust domain when none is configured.
const DefaultTrustDomain = "cluster.local"

// DefaultServiceAccount is the service account of a pod that names none.
const DefaultServiceAccount = "default"
