package gateway

import (
	"bytes"
	"errors"
	"math/rand"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/resolve"
)

// TestInputOrderDoesNotMatter shuffles every list of every golden input:
// informers hand out objects in no particular order, and statuses and IR
// must not depend on it.
func TestInputOrderDoesNotMatter(t *testing.T) {
	cases, _ := filepath.Glob("testdata/*.in.yaml")
	rnd := rand.New(rand.NewSource(7))
	for _, c := range cases {
		in, err := loadCase(c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := render(Resolve(in))
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			shuffle(rnd, in.GatewayClasses)
			shuffle(rnd, in.Gateways)
			shuffle(rnd, in.HTTPRoutes)
			shuffle(rnd, in.GRPCRoutes)
			shuffle(rnd, in.TLSRoutes)
			shuffle(rnd, in.TCPRoutes)
			shuffle(rnd, in.ReferenceGrants)
			shuffle(rnd, in.BackendTLSPolicies)
			shuffle(rnd, in.Namespaces)
			shuffle(rnd, in.Secrets)
			shuffle(rnd, in.ConfigMaps)
			shuffle(rnd, in.Services)
			shuffle(rnd, in.Provisioned)
			got, err := render(Resolve(in))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: output depends on input order:\n%s", c, lineDiff(string(want), string(got)))
			}
		}
	}
}

func shuffle[T any](r *rand.Rand, s []T) {
	r.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
}

// TestInputNotModified checks that resolving leaves the objects handed in
// as they were (the informer cache shares them).
func TestInputNotModified(t *testing.T) {
	cases, _ := filepath.Glob("testdata/*.in.yaml")
	for _, c := range cases {
		in, err := loadCase(c)
		if err != nil {
			t.Fatal(err)
		}
		fresh, _ := loadCase(c)
		Resolve(in)
		if !equality.Semantic.DeepEqual(in, fresh) {
			t.Fatalf("%s: resolving changed the input", c)
		}
	}
}

// TestReferenceGrants is the ReferenceGrant table of
// gateway-secret-invalid-reference-grant and httproute-invalid-reference-
// grant: every field of from and to must match, the grant must be in the
// target's namespace, and a grant without a name covers every object of
// the kind.
func TestReferenceGrants(t *testing.T) {
	name := gwv1.ObjectName("certificate")
	grant := func(ns, fromGroup, fromKind, fromNS, toGroup, toKind string, toName *gwv1.ObjectName) gwv1.ReferenceGrant {
		return gwv1.ReferenceGrant{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "g"},
			Spec: gwv1.ReferenceGrantSpec{
				From: []gwv1.ReferenceGrantFrom{{Group: gwv1.Group(fromGroup), Kind: gwv1.Kind(fromKind), Namespace: gwv1.Namespace(fromNS)}},
				To:   []gwv1.ReferenceGrantTo{{Group: gwv1.Group(toGroup), Kind: gwv1.Kind(toKind), Name: toName}},
			},
		}
	}
	r := ref{fromGroup: gwv1.GroupName, fromKind: "Gateway", fromNS: "infra", fromName: "gw", toGroup: "", toKind: "Secret", toNS: "web", toName: "certificate"}
	for _, tc := range []struct {
		what  string
		grant gwv1.ReferenceGrant
		want  bool
	}{
		{"specific", grant("web", gwv1.GroupName, "Gateway", "infra", "", "Secret", &name), true},
		{"all in namespace", grant("web", gwv1.GroupName, "Gateway", "infra", "", "Secret", nil), true},
		{"wrong namespace", grant("app", gwv1.GroupName, "Gateway", "infra", "", "Secret", &name), false},
		{"wrong from group", grant("web", "example.com", "Gateway", "infra", "", "Secret", &name), false},
		{"wrong from kind", grant("web", gwv1.GroupName, "HTTPRoute", "infra", "", "Secret", &name), false},
		{"wrong from namespace", grant("web", gwv1.GroupName, "Gateway", "other", "", "Secret", &name), false},
		{"wrong to group", grant("web", gwv1.GroupName, "Gateway", "infra", "example.com", "Secret", &name), false},
		{"wrong to kind", grant("web", gwv1.GroupName, "Gateway", "infra", "", "Service", &name), false},
		{"wrong to name", grant("web", gwv1.GroupName, "Gateway", "infra", "", "Secret", new(gwv1.ObjectName("other"))), false},
	} {
		ix := newIndex(&Input{ReferenceGrants: []gwv1.ReferenceGrant{tc.grant}})
		if got := ix.permitted(r); got != tc.want {
			t.Errorf("%s: permitted = %v, want %v", tc.what, got, tc.want)
		}
	}
	same := r
	same.toNS = same.fromNS
	if !newIndex(&Input{}).permitted(same) {
		t.Error("a reference within one namespace needs no grant")
	}
}

func TestSupportedBundle(t *testing.T) {
	for v, want := range map[string]bool{
		"v1.7.0": true, "v1.7.3": true, "1.7.0": true, "v1.6.1": false, "v1.8.0": false, "v2.7.0": false, "": false, "v1": false, "garbage": false,
	} {
		if got := supportedBundle(v); got != want {
			t.Errorf("supportedBundle(%q) = %v, want %v", v, got, want)
		}
	}
}

func TestCheckCABundle(t *testing.T) {
	in, err := loadCase("testdata/base/certificates.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ca []byte
	for _, cm := range in.ConfigMaps {
		ca = []byte(cm.Data[keyCACert])
	}
	for _, tc := range []struct {
		what string
		data []byte
		ok   bool
	}{
		{"a CA", ca, true},
		{"two CAs", append(append([]byte{}, ca...), ca...), true},
		{"empty", nil, false},
		{"not PEM", []byte("hello"), false},
		{"a key", []byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"), false},
		{"a broken certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), false},
	} {
		if err := checkCABundle(tc.data); (err == nil) != tc.ok {
			t.Errorf("%s: checkCABundle = %v, want ok=%v", tc.what, err, tc.ok)
		}
	}
}

// TestValidate checks that Validate finds each broken invariant.
func TestValidate(t *testing.T) {
	table := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_TCP,
		Rules:   []*weftv1.Rule{{Route: "ns/r", RouteKind: weftv1.RouteKind_ROUTE_KIND_TCP, Backends: []*weftv1.BackendRef{{Cluster: "ns/svc:80", Weight: 1}}}},
		Matches: []*weftv1.Match{{}}}
	good := func() *Gateway {
		return &Gateway{
			Ports: []Port{
				{Port: 80, Listeners: []Listener{{Name: "a", Protocol: gwv1.HTTPProtocolType, Hostname: "a.example.com"}, {Name: "any", Protocol: gwv1.HTTPProtocolType}}},
				{Port: 9000, Listeners: []Listener{{Name: "tcp", Protocol: gwv1.TCPProtocolType, VirtualHosts: []VirtualHost{{Tables: []*weftv1.RouteTable{table}}}}}},
			},
			Clusters: []*weftv1.Cluster{{Name: "ns/svc:80"}},
		}
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("valid IR: %v", err)
	}
	for _, tc := range []struct {
		what   string
		break_ func(g *Gateway)
		want   error
	}{
		{"port order", func(g *Gateway) { g.Ports[0].Port = 9000 }, ErrPortOrder},
		{"no listener", func(g *Gateway) { g.Ports[0].Listeners = nil }, ErrNoListener},
		{"listener order", func(g *Gateway) { l := g.Ports[0].Listeners; l[0], l[1] = l[1], l[0] }, ErrMatchOrder},
		{"mixed protocols", func(g *Gateway) { g.Ports[0].Listeners[1].Protocol = gwv1.TLSProtocolType }, ErrMixedProtocols},
		{"no certificate", func(g *Gateway) { g.Ports[0].Listeners[0].TLSMode = gwv1.TLSModeTerminate }, ErrNoCertificate},
		{"no CA", func(g *Gateway) { g.Ports[0].Listeners[0].ClientValidation = &ClientValidation{} }, ErrNoCA},
		{"unknown cluster", func(g *Gateway) { g.Clusters = nil }, ErrUnknownCluster},
		{"bad table", func(g *Gateway) {
			g.Ports[1].Listeners[0].VirtualHosts[0].Tables[0] = &weftv1.RouteTable{Matches: []*weftv1.Match{{Rule: 3}}}
		}, ErrBadTable},
	} {
		g := good()
		tc.break_(g)
		if err := g.Validate(); !errors.Is(err, tc.want) {
			t.Errorf("%s: Validate() = %v, want %v", tc.what, err, tc.want)
		}
	}
}

// TestClusterNameFollowsCompiler checks clusterName against the names the
// rule compiler gives Service clusters (backendTLS keys depend on it).
func TestClusterNameFollowsCompiler(t *testing.T) {
	in, err := loadCase("testdata/backendtlspolicy.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out := Resolve(in)
	n := 0
	for _, g := range out.IR {
		for _, c := range g.Clusters {
			ns, rest, _ := strings.Cut(c.GetName(), "/")
			svc, port, _ := strings.Cut(rest, ":")
			if strings.Contains(c.GetName(), "/xbackend/") {
				continue
			}
			var p int32
			for _, ch := range port {
				p = p*10 + int32(ch-'0')
			}
			if got := clusterName(objKey{ns, svc}, p); got != c.GetName() {
				t.Errorf("clusterName = %q, compiler named it %q", got, c.GetName())
			}
			n++
		}
		if len(g.BackendTLS) == 0 && g.Name == "same-namespace" {
			t.Error("no backend TLS settings in the BackendTLSPolicy case")
		}
	}
	if n == 0 {
		t.Fatal("no cluster to compare")
	}
}

// TestMeshAndGatewayParentsDisjoint resolves a route with a Service parent
// and Gateway parents with both resolvers: the mesh's entries and these
// are disjoint and together cover the parentRefs Weft answers for, so the
// status writer can write both lists side by side, keyed by parentRef.
func TestMeshAndGatewayParentsDisjoint(t *testing.T) {
	in, err := loadCase("testdata/mesh-and-gateway-parents.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mesh := resolve.Resolve(resolve.Input{Namespaces: in.Namespaces, Services: in.Services, HTTPRoutes: in.HTTPRoutes})
	gw := Resolve(in)
	parents := func(list []resolve.ObjectStatus) []gwv1.ParentReference {
		for _, s := range list {
			if s.Kind == KindHTTPRoute && s.Name == "both" {
				var out []gwv1.ParentReference
				for _, p := range s.Parents {
					out = append(out, p.Ref)
				}
				return out
			}
		}
		return nil
	}
	m, g := parents(mesh.Statuses), parents(gw.Routes)
	if len(m) != 1 || len(g) != 2 {
		t.Fatalf("mesh answers for %d parentRefs (want 1), gateway for %d (want 2)", len(m), len(g))
	}
	spec := in.HTTPRoutes[slices.IndexFunc(in.HTTPRoutes, func(r *gwv1.HTTPRoute) bool { return r.Name == "both" })].Spec.ParentRefs
	for _, ref := range append(m, g...) {
		n := 0
		for _, other := range append(m, g...) {
			if equality.Semantic.DeepEqual(ref, other) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("parentRef %+v has %d entries", ref, n)
		}
		if !slices.ContainsFunc(spec, func(s gwv1.ParentReference) bool { return equality.Semantic.DeepEqual(s, ref) }) {
			t.Errorf("parentRef %+v is not in the route's spec as written", ref)
		}
	}
}
