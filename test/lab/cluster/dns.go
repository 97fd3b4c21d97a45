package cluster

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// CoreDNSImage is the image the node runtime maps to the coredns binary.
const CoreDNSImage = "ghcr.io/weft-mesh/coredns:dev"

// Corefile serves the cluster domain from the kubernetes plugin. There is no forward
// plugin: the lab has no route to the outside.
const Corefile = `.:53 {
    errors
    health :8080
    ready :8181
    kubernetes ` + ClusterDomain + ` in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
    loadbalance
}
`

// DNSObjects are CoreDNS as kubeadm installs it: ServiceAccount, RBAC, Corefile
// ConfigMap, Deployment (k8s-app=kube-dns) and the kube-dns Service at ClusterDNS.
type DNSObjects struct {
	ServiceAccount     *corev1.ServiceAccount
	ClusterRole        *rbacv1.ClusterRole
	ClusterRoleBinding *rbacv1.ClusterRoleBinding
	ConfigMap          *corev1.ConfigMap
	Deployment         *appsv1.Deployment
	Service            *corev1.Service
}

// CoreDNS returns the DNS objects.
func CoreDNS() DNSObjects {
	const ns, name = "kube-system", "coredns"
	labels := map[string]string{"k8s-app": "kube-dns"}
	meta := metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels}
	return DNSObjects{
		ServiceAccount: &corev1.ServiceAccount{ObjectMeta: meta},
		ClusterRole: &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
			},
		},
		ClusterRoleBinding: &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:coredns"},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}},
		},
		ConfigMap: &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"Corefile": Corefile}},
		Deployment: &appsv1.Deployment{
			ObjectMeta: meta,
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{
						ServiceAccountName: name,
						PriorityClassName:  "system-cluster-critical",
						DNSPolicy:          corev1.DNSDefault,
						Containers: []corev1.Container{{
							Name:  "coredns",
							Image: CoreDNSImage,
							Args:  []string{"-conf", "/etc/coredns/Corefile"},
							Ports: []corev1.ContainerPort{
								{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP},
								{Name: "dns-tcp", ContainerPort: 53, Protocol: corev1.ProtocolTCP},
								{Name: "metrics", ContainerPort: 9153, Protocol: corev1.ProtocolTCP},
							},
							VolumeMounts: []corev1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true}},
							ReadinessProbe: &corev1.Probe{
								ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
								PeriodSeconds: 1,
							},
							LivenessProbe: &corev1.Probe{
								ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
								InitialDelaySeconds: 60,
								PeriodSeconds:       10,
								FailureThreshold:    5,
							},
						}},
						Volumes: []corev1.Volume{{
							Name: "config-volume",
							VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
								LocalObjectReference: corev1.LocalObjectReference{Name: name},
								Items:                []corev1.KeyToPath{{Key: "Corefile", Path: "Corefile"}},
							}},
						}},
					},
				},
			},
		},
		Service: &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: ns, Labels: labels},
			Spec: corev1.ServiceSpec{
				Selector:  labels,
				ClusterIP: ClusterDNS.String(),
				Ports: []corev1.ServicePort{
					{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
					{Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
					{Name: "metrics", Port: 9153, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
				},
			},
		},
	}
}

// InstallDNS creates the CoreDNS objects (existing ones are left as they are).
func (cp *ControlPlane) InstallDNS(ctx context.Context) error {
	o := CoreDNS()
	c := cp.Client
	steps := []struct {
		what string
		fn   func(context.Context) error
	}{
		{"serviceaccount", func(ctx context.Context) error {
			_, err := c.CoreV1().ServiceAccounts(o.ServiceAccount.Namespace).Create(ctx, o.ServiceAccount, metav1.CreateOptions{})
			return err
		}},
		{"clusterrole", func(ctx context.Context) error {
			_, err := c.RbacV1().ClusterRoles().Create(ctx, o.ClusterRole, metav1.CreateOptions{})
			return err
		}},
		{"clusterrolebinding", func(ctx context.Context) error {
			_, err := c.RbacV1().ClusterRoleBindings().Create(ctx, o.ClusterRoleBinding, metav1.CreateOptions{})
			return err
		}},
		{"configmap", func(ctx context.Context) error {
			_, err := c.CoreV1().ConfigMaps(o.ConfigMap.Namespace).Create(ctx, o.ConfigMap, metav1.CreateOptions{})
			return err
		}},
		{"service", func(ctx context.Context) error {
			// A second create of a Service with a fixed ClusterIP fails on the IP
			// allocation before it could say AlreadyExists.
			if _, err := c.CoreV1().Services(o.Service.Namespace).Get(ctx, o.Service.Name, metav1.GetOptions{}); err == nil {
				return nil
			}
			_, err := c.CoreV1().Services(o.Service.Namespace).Create(ctx, o.Service, metav1.CreateOptions{})
			return err
		}},
		{"deployment", func(ctx context.Context) error {
			_, err := c.AppsV1().Deployments(o.Deployment.Namespace).Create(ctx, o.Deployment, metav1.CreateOptions{})
			return err
		}},
	}
	for _, s := range steps {
		if err := create(ctx, s.fn); err != nil {
			return fmt.Errorf("create coredns %s: %w", s.what, err)
		}
	}
	return nil
}
