package ca

import (
	"context"
	"crypto/x509"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/agentauth"
	"github.com/weft-mesh/weft/test/kubetest"
)

type kube struct {
	t  *testing.T
	cs kubernetes.Interface
}

func (k kube) must(_ any, err error) {
	k.t.Helper()
	if err != nil {
		k.t.Fatal(err)
	}
}

func (k kube) ns(name string, ann map[string]string) {
	k.must(k.cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann}}, metav1.CreateOptions{}))
}

func (k kube) sa(ns, name string) {
	k.must(k.cs.CoreV1().ServiceAccounts(ns).Create(context.Background(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}, metav1.CreateOptions{}))
}

func (k kube) pod(ns, name, sa, node string, ann map[string]string) *corev1.Pod {
	k.t.Helper()
	ctx := context.Background()
	p, err := k.cs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: ann},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: node,
			Containers: []corev1.Container{{Name: "c", Image: "ghcr.io/weft-mesh/toolbox:dev"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	p.Status.Phase = corev1.PodRunning
	if p, err = k.cs.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		k.t.Fatal(err)
	}
	return p
}

func (k kube) token(ns, sa, audience string, pod *corev1.Pod) string {
	k.t.Helper()
	exp := int64(600)
	tr, err := k.cs.CoreV1().ServiceAccounts(ns).CreateToken(context.Background(), sa, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{audience}, ExpirationSeconds: &exp,
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	return tr.Status.Token
}

func (k kube) deletePod(p *corev1.Pod) {
	k.t.Helper()
	grace := int64(0)
	if err := k.cs.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		k.t.Fatal(err)
	}
}

// TestSignAgainstAPIServer runs the CA with real TokenReview, pod lookups and
// root Secret on a real apiserver, served over gRPC.
func TestSignAgainstAPIServer(t *testing.T) {
	cl := kubetest.Start(t)
	k := kube{t: t, cs: cl.Client}
	k.ns("weft-system", nil)
	k.ns("shop", map[string]string{mesh.AnnotationMesh: mesh.MeshEnabled})
	k.ns("plain", nil)
	for _, s := range [][2]string{{"weft-system", "weft-agent"}, {"weft-system", "intruder"}, {"shop", "cart"}, {"shop", "pay"}, {"shop", "quiet"}, {"plain", "app"}} {
		k.sa(s[0], s[1])
	}
	for _, n := range []string{"lab-node-1", "lab-node-2"} {
		k.must(cl.Client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}))
	}
	agent1 := k.pod("weft-system", "weft-agent-1", "weft-agent", "lab-node-1", nil)
	agent2 := k.pod("weft-system", "weft-agent-2", "weft-agent", "lab-node-2", nil)
	doomedAgent := k.pod("weft-system", "weft-agent-old", "weft-agent", "lab-node-1", nil)
	intruder := k.pod("weft-system", "intruder", "intruder", "lab-node-1", nil)
	cart := k.pod("shop", "cart-1", "cart", "lab-node-1", nil)
	k.pod("shop", "pay-1", "pay", "lab-node-2", nil)
	k.pod("shop", "quiet-1", "quiet", "lab-node-1", map[string]string{mesh.AnnotationMesh: mesh.MeshDisabled})
	k.pod("plain", "app-1", "app", "lab-node-1", nil)

	tok1 := k.token("weft-system", "weft-agent", "weft", agent1)
	tok2 := k.token("weft-system", "weft-agent", "weft", agent2)
	tokDeleted := k.token("weft-system", "weft-agent", "weft", doomedAgent)
	k.deletePod(doomedAgent)
	tokIntruder := k.token("weft-system", "intruder", "weft", intruder)
	tokAudience := k.token("weft-system", "weft-agent", "other", agent1)

	auth, err := agentauth.New(agentauth.Config{Client: cl.Client})
	if err != nil {
		t.Fatal(err)
	}
	newCA := func() *CA {
		c, err := New(Config{Client: cl.Client, Namespace: "weft-system", Authenticator: auth, Pods: NewAPIPods(cl.Client), Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// Three replicas race to create the root; all end up with the same one.
	replicas := []*CA{newCA(), newCA(), newCA()}
	errs := make(chan error, len(replicas))
	for _, r := range replicas {
		go func() { errs <- r.EnsureRoot(context.Background()) }()
	}
	for range replicas {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range replicas[1:] {
		if string(r.Bundle()[0]) != string(replicas[0].Bundle()[0]) {
			t.Fatal("replicas disagree on the root")
		}
	}
	c := replicas[1]

	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	c.Register(srv)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///ca", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := weftv1.NewIdentityClient(conn)

	key := p256(t)
	csr := func(id string) []byte {
		return makeCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, id)}})
	}
	call := func(token string, req *weftv1.SignRequest) (*weftv1.SignResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return client.Sign(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), req)
	}
	tests := []struct {
		name  string
		token string
		req   *weftv1.SignRequest
		code  codes.Code
	}{
		{"node 1 agent, pod on node 1", tok1, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/cart"), Node: "lab-node-1"}, codes.OK},
		{"node 2 agent, pod on node 2", tok2, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/pay"), Node: "lab-node-2"}, codes.OK},
		{"node 1 agent, pods only on node 2", tok1, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/pay")}, codes.PermissionDenied},
		{"node 1 agent claiming node 2", tok1, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/pay"), Node: "lab-node-2"}, codes.PermissionDenied},
		{"pod opted out", tok1, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/quiet")}, codes.PermissionDenied},
		{"namespace not enrolled", tok1, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/plain/sa/app")}, codes.PermissionDenied},
		{"non-agent service account", tokIntruder, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/cart")}, codes.PermissionDenied},
		{"token for another audience", tokAudience, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/cart")}, codes.Unauthenticated},
		{"token bound to a deleted pod", tokDeleted, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/cart")}, codes.Unauthenticated},
		{"no token", "", &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/cart")}, codes.Unauthenticated},
		{"malformed csr", tok1, &weftv1.SignRequest{Csr: []byte("junk")}, codes.InvalidArgument},
		{"extra DNS SAN", tok1, &weftv1.SignRequest{Csr: makeCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{mustURL(t, "spiffe://cluster.local/ns/shop/sa/cart")}, DNSNames: []string{"kubernetes.default"}})}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := call(tt.token, tt.req)
			if status.Code(err) != tt.code {
				t.Fatalf("Sign: %v, want %v", err, tt.code)
			}
			if tt.code != codes.OK {
				if resp != nil {
					t.Fatal("refused request returned certificates")
				}
				t.Logf("refused: %v", status.Convert(err).Message())
				return
			}
			leaf, err := x509.ParseCertificate(resp.CertChain[0])
			if err != nil {
				t.Fatal(err)
			}
			if leaf.CheckSignatureFrom(c.Anchors()[0]) != nil {
				t.Fatal("svid not signed by the root")
			}
		})
	}

	// The last cart pod leaves node 1: no more cart SVIDs for node 1.
	k.deletePod(cart)
	if _, err := call(tok1, &weftv1.SignRequest{Csr: csr("spiffe://cluster.local/ns/shop/sa/cart")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("cart after its pod left: %v, want PermissionDenied", err)
	}

	// Rotation steps written by the leader reach a watching replica.
	follower := newCA()
	var changes atomic.Int32
	follower.cfg.OnBundleChange = func() { changes.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() { _ = follower.Watch(ctx); close(watchDone) }()
	defer func() { cancel(); <-watchDone }()
	waitFor(t, "follower loads the root", func() bool { return len(follower.Bundle()) == 1 })
	if err := replicas[0].StageRoot(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "follower sees the staged root", func() bool { return len(follower.Bundle()) == 2 })
	if changes.Load() < 2 {
		t.Fatalf("OnBundleChange called %d times, want at least 2", changes.Load())
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
