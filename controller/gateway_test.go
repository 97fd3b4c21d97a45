package controller

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/gateway"
	"github.com/weft-mesh/weft/controller/provision"
)

// TestIntegrationGatewayStatus: against a real apiserver, the controller
// creates GatewayClass weft and writes what the conformance suite reads: the
// class Accepted with SupportedVersion, the Gateway Accepted, each
// listener's conditions, supportedKinds and attachedRoutes, and the
// HTTPRoute's parent entry under the gateway's controllerName. A listener
// whose certificate Secret is missing says so, and is fixed by creating it
// (the Secret informer starts with the first Gateway). The Gateway's data
// plane gets its policy on its own stream, and an update when the
// certificate resolves.
func TestIntegrationGatewayStatus(t *testing.T) {
	kc, ctx, gw := startFixture(t)
	c, _, _ := startController(t, ctx, Config{Kube: kc.Config, GRPCAddr: "127.0.0.1:0", HealthAddr: "-",
		Authenticator: tokens{}, Gateways: gatewayTokens{"tok-edge": appNS + "/edge"}, Logger: testLogger(t)})
	dataPlane := subscribeWith(t, ctx, c.GRPCAddr().String(), "tok-edge", &weftv1.PolicyRequest{Gateway: appNS + "/edge"})

	eventually(t, "GatewayClass weft accepted", func() (bool, string) {
		c, err := gw.GatewayV1().GatewayClasses().Get(ctx, mesh.GatewayClassName, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		acc := meta.FindStatusCondition(c.Status.Conditions, "Accepted")
		ver := meta.FindStatusCondition(c.Status.Conditions, "SupportedVersion")
		return acc != nil && acc.Status == "True" && ver != nil && ver.Status == "True", fmt.Sprintf("%+v", c.Status)
	})

	g := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "edge"},
		Spec: gwv1.GatewaySpec{GatewayClassName: mesh.GatewayClassName, Listeners: []gwv1.Listener{
			{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType},
			{Name: "https", Port: 443, Protocol: gwv1.HTTPSProtocolType, TLS: &gwv1.ListenerTLSConfig{
				Mode: ptr(gwv1.TLSModeTerminate), CertificateRefs: []gwv1.SecretObjectReference{{Name: "edge-cert"}}}},
		}},
	}
	if _, err := gw.GatewayV1().Gateways(appNS).Create(ctx, g, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	route := &gwv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "web"},
		Spec: gwv1.HTTPRouteSpec{
			CommonRouteSpec: gwv1.CommonRouteSpec{ParentRefs: []gwv1.ParentReference{{Name: "edge", SectionName: ptr(gwv1.SectionName("http"))}}},
			Rules: []gwv1.HTTPRouteRule{{BackendRefs: []gwv1.HTTPBackendRef{{BackendRef: gwv1.BackendRef{
				BackendObjectReference: gwv1.BackendObjectReference{Name: "echo", Port: ptr(gwv1.PortNumber(80))}}}}}},
		},
	}
	if _, err := gw.GatewayV1().HTTPRoutes(appNS).Create(ctx, route, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	listener := func(st gwv1.GatewayStatus, name string) *gwv1.ListenerStatus {
		for i := range st.Listeners {
			if st.Listeners[i].Name == gwv1.SectionName(name) {
				return &st.Listeners[i]
			}
		}
		return nil
	}
	is := func(conds []metav1.Condition, typ string, status metav1.ConditionStatus, reason string, gen int64) bool {
		c := meta.FindStatusCondition(conds, typ)
		return c != nil && c.Status == status && c.Reason == reason && c.ObservedGeneration == gen && c.Message != ""
	}
	gatewayHas := func(what string, ok func(g *gwv1.Gateway) bool) {
		t.Helper()
		eventually(t, what, func() (bool, string) {
			g, err := gw.GatewayV1().Gateways(appNS).Get(ctx, "edge", metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return ok(g), fmt.Sprintf("%+v", g.Status)
		})
	}
	gatewayHas("Gateway accepted, http listener ready, https missing its certificate", func(g *gwv1.Gateway) bool {
		h, s := listener(g.Status, "http"), listener(g.Status, "https")
		return is(g.Status.Conditions, "Accepted", "True", "Accepted", g.Generation) &&
			h != nil && h.AttachedRoutes == 1 && len(h.SupportedKinds) == 2 &&
			is(h.Conditions, "Accepted", "True", "Accepted", g.Generation) &&
			is(h.Conditions, "ResolvedRefs", "True", "ResolvedRefs", g.Generation) &&
			s != nil && is(s.Conditions, "ResolvedRefs", "False", "InvalidCertificateRef", g.Generation)
	})
	eventually(t, "HTTPRoute accepted by the Gateway", func() (bool, string) {
		r, err := gw.GatewayV1().HTTPRoutes(appNS).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, p := range r.Status.Parents {
			if p.ControllerName == gateway.ControllerName && p.ParentRef.Name == "edge" {
				return is(p.Conditions, "Accepted", "True", "Accepted", r.Generation) &&
					is(p.Conditions, "ResolvedRefs", "True", "ResolvedRefs", r.Generation), fmt.Sprintf("%+v", p)
			}
		}
		return false, fmt.Sprintf("%+v", r.Status.Parents)
	})

	wantID := "spiffe://cluster.local/ns/" + appNS + "/sa/" + provision.Identity("edge")
	ports := func(s *weftv1.PolicySnapshot) (out []uint32) {
		for _, p := range s.GetGateway().GetPorts() {
			out = append(out, p.GetPort())
		}
		return out
	}
	first := dataPlane.next(t, "the data plane gets its Gateway's policy (the http port)", func(s *weftv1.PolicySnapshot) bool {
		return s.GetGateway().GetIdentity() == wantID && slices.Equal(ports(s), []uint32{80}) && s.GetPolicy() == nil
	})
	if err := dataPlane.stream.Send(&weftv1.PolicyRequest{Gateway: appNS + "/edge", Version: first.Version}); err != nil {
		t.Fatal(err)
	}
	if gw, ok := c.GatewayOf(appNS, provision.Identity("edge")); !ok || gw != "edge" {
		t.Fatalf("GatewayOf = %q, %v", gw, ok)
	}

	crt, key := selfSigned(t, "edge.example.com")
	if _, err := kc.Client.CoreV1().Secrets(appNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "edge-cert"}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	gatewayHas("https listener resolves its certificate once the Secret exists", func(g *gwv1.Gateway) bool {
		s := listener(g.Status, "https")
		return s != nil && is(s.Conditions, "ResolvedRefs", "True", "ResolvedRefs", g.Generation)
	})
	dataPlane.next(t, "the data plane gets the https port once its certificate resolves", func(s *weftv1.PolicySnapshot) bool {
		return s.Version > first.Version && slices.Equal(ports(s), []uint32{80, 443})
	})
	eventually(t, "the ACK is recorded", func() (bool, string) {
		st := c.push.Gateways()
		return len(st) == 1 && st[0].Gateway == appNS+"/edge" && st[0].AckedVersion == first.Version && st[0].Streams == 1, fmt.Sprintf("%+v", st)
	})
}

// gatewayTokens authorizes token -> the Gateway "namespace/name" it serves.
type gatewayTokens map[string]string

func (g gatewayTokens) AuthorizeGateway(_ context.Context, token, namespace, name string) error {
	if g[token] != namespace+"/"+name {
		return status.Errorf(codes.PermissionDenied, "token is not a data plane pod's of %s/%s", namespace, name)
	}
	return nil
}

func selfSigned(t *testing.T, host string) (crtPEM, keyPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd})
}

// TestIntegrationGatewayImageFollowsTheAgent: with no --gateway-image, a
// Gateway's data plane runs the image of the weft-agent DaemonSet (however
// the install set it), and an upgrade of that image rolls the data plane.
func TestIntegrationGatewayImageFollowsTheAgent(t *testing.T) {
	kc, ctx, gw := startFixture(t)
	crt, _ := selfSigned(t, "weft-ca")
	block, _ := pem.Decode(crt)
	labels := map[string]string{"app": "weft-agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: DefaultNamespace, Name: "weft-agent"},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "mirror.example/weft-agent:v1", ImagePullPolicy: corev1.PullAlways}}},
		}},
	}
	if _, err := kc.Client.AppsV1().DaemonSets(DefaultNamespace).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	startController(t, ctx, Config{Kube: kc.Config, GRPCAddr: "127.0.0.1:0", HealthAddr: "-", AgentDaemonSet: "weft-agent",
		TrustAnchors: func() [][]byte { return [][]byte{block.Bytes} }, Authenticator: tokens{}, Logger: testLogger(t)})
	g := &gwv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: appNS, Name: "edge"},
		Spec:       gwv1.GatewaySpec{GatewayClassName: mesh.GatewayClassName, Listeners: []gwv1.Listener{{Name: "http", Port: 80, Protocol: gwv1.HTTPProtocolType}}},
	}
	if _, err := gw.GatewayV1().Gateways(appNS).Create(ctx, g, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runs := func(image string) {
		t.Helper()
		eventually(t, "the data plane runs "+image, func() (bool, string) {
			d, err := kc.Client.AppsV1().Deployments(appNS).Get(ctx, provision.Name("edge"), metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			c := d.Spec.Template.Spec.Containers[0]
			return c.Image == image && c.ImagePullPolicy == corev1.PullAlways, c.Image + " " + string(c.ImagePullPolicy)
		})
	}
	runs("mirror.example/weft-agent:v1")
	live, err := kc.Client.AppsV1().DaemonSets(DefaultNamespace).Get(ctx, "weft-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	live.Spec.Template.Spec.Containers[0].Image = "mirror.example/weft-agent:v2"
	if _, err := kc.Client.AppsV1().DaemonSets(DefaultNamespace).Update(ctx, live, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	runs("mirror.example/weft-agent:v2")
}
