package provision

import (
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
)

// Args are the data plane's command line (weft-agent gateway).
func Args(gw *gwv1.Gateway, p Params) []string {
	args := []string{
		"gateway",
		"--gateway=" + gw.Namespace + "/" + gw.Name,
		"--controller=" + p.Controller,
		"--controller-ca=" + SecretsDir + "/" + CAKey,
		"--token-file=" + SecretsDir + "/token",
		"--health-addr=:" + itoa(mesh.HealthPort),
		"--metrics-addr=:" + itoa(mesh.MetricsPort),
	}
	if p.LogLevel != "" {
		args = append(args, "--log-level="+p.LogLevel)
	}
	return args
}

func deployment(gw *gwv1.Gateway, meta metav1.ObjectMeta, p Params) *appsv1.Deployment {
	// The data plane is a mesh proxy itself: its pods are never enrolled
	// (redirected into the node proxy), even in an enrolled namespace. It
	// reaches enrolled backends through the tunnel with its own identity.
	ann := podAnnotations(meta.Annotations)
	ann[mesh.AnnotationMesh] = mesh.MeshDisabled
	podMeta := metav1.ObjectMeta{Labels: meta.Labels, Annotations: ann}
	return &appsv1.Deployment{
		ObjectMeta: meta,
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{mesh.LabelGateway: meta.Name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: podMeta, Spec: podSpec(gw, meta.Name, p)},
		},
	}
}

func podSpec(gw *gwv1.Gateway, name string, p Params) corev1.PodSpec {
	var cports []corev1.ContainerPort
	low := false
	for _, lp := range ports(gw) {
		cports = append(cports, corev1.ContainerPort{Name: portName(lp.port), ContainerPort: lp.port, Protocol: corev1.ProtocolTCP})
		low = low || lp.port < 1024
	}
	cports = append(cports, corev1.ContainerPort{Name: "health", ContainerPort: mesh.HealthPort, Protocol: corev1.ProtocolTCP},
		corev1.ContainerPort{Name: "metrics", ContainerPort: mesh.MetricsPort, Protocol: corev1.ProtocolTCP})
	pod := corev1.PodSpec{
		ServiceAccountName:           name,
		AutomountServiceAccountToken: ptr(false),
		SecurityContext: &corev1.PodSecurityContext{
			RunAsNonRoot:   ptr(true),
			RunAsUser:      ptr[int64](runAsUser),
			RunAsGroup:     ptr[int64](runAsUser),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			Sysctls:        lowPortSysctls(low),
		},
		Containers: []corev1.Container{{
			Name:            "gateway",
			Image:           p.Image,
			ImagePullPolicy: pullPolicy(p.PullPolicy),
			Args:            Args(gw, p),
			Env: []corev1.EnvVar{
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			},
			Ports: cports,
			ReadinessProbe: &corev1.Probe{PeriodSeconds: 2, ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(mesh.HealthPort)}}},
			LivenessProbe: &corev1.Probe{PeriodSeconds: 10, FailureThreshold: 3, ProbeHandler: corev1.ProbeHandler{
				HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(mesh.HealthPort)}}},
			SecurityContext: containerSecurity(),
			VolumeMounts:    []corev1.VolumeMount{{Name: "weft", MountPath: SecretsDir, ReadOnly: true}},
		}},
		Volumes: []corev1.Volume{{Name: "weft", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
			Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Audience: TokenAudience, ExpirationSeconds: ptr[int64](tokenSeconds), Path: "token"}},
				{ConfigMap: &corev1.ConfigMapProjection{
					LocalObjectReference: corev1.LocalObjectReference{Name: CAConfigMap(gw.Name)},
					Items:                []corev1.KeyToPath{{Key: CAKey, Path: CAKey}},
				}},
			},
		}}}},
	}
	return pod
}

// containerSecurity: non-root, no capability at all.
func containerSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// lowPortSysctls let the non-root data plane bind listener ports below
// 1024 in its own network namespace. A capability cannot: a runtime gives
// a non-root process no capability from securityContext.capabilities.add
// (they land in the bounding set only), so NET_BIND_SERVICE would need a
// file capability on the binary. net.ipv4.ip_unprivileged_port_start is in
// the kubelet's safe set (Kubernetes 1.22+) and is what Istio's gateways
// set too.
func lowPortSysctls(lowPorts bool) []corev1.Sysctl {
	if !lowPorts {
		return nil
	}
	return []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}
}

func pullPolicy(p corev1.PullPolicy) corev1.PullPolicy {
	if p == "" {
		return corev1.PullIfNotPresent
	}
	return p
}

// podAnnotations are the data plane pod's: the prometheus.io annotations
// that announce its metrics, then the Gateway's infrastructure annotations
// (which win).
func podAnnotations(infra map[string]string) map[string]string {
	out := map[string]string{
		mesh.AnnotationPrometheusScrape: "true",
		mesh.AnnotationPrometheusPort:   itoa(mesh.MetricsPort),
		mesh.AnnotationPrometheusPath:   mesh.MetricsPath,
	}
	maps.Copy(out, infra)
	return out
}
