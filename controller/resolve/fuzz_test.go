package resolve

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"

	"github.com/weft-mesh/weft/api/mesh"
)

// FuzzResolve feeds Resolve objects built from the fuzz input: when the
// input is YAML of Kubernetes objects (the seeds are the golden cases) it is
// decoded; otherwise the bytes drive a generator of API-shaped objects with
// values drawn from pools that include every bad value the API server might
// let through. Resolve must not panic, must be deterministic and must never
// produce a policy the node proxy rejects.
func FuzzResolve(f *testing.F) {
	cases, _ := filepath.Glob("testdata/*.in.yaml")
	for _, c := range cases {
		b, err := expandCase(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x13, 0x37, 0xff, 0x00, 0x42, 0x07, 0x99, 0x10, 0x20, 0x30})
	f.Fuzz(func(t *testing.T, data []byte) {
		var in Input
		if bytes.Contains(data, []byte("kind:")) {
			if decodeInto(&in, data, false) != nil {
				return
			}
		} else {
			in = generate(&byteSource{b: data})
		}
		out := Resolve(in)
		checkAgentAccepts(t, out)
		a, err := render(out)
		if err != nil {
			t.Fatal(err)
		}
		b, err := render(Resolve(in))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatal("two resolutions of the same input differ")
		}
		// each route deleted, then added back, resolved incrementally,
		// renders what resolving from scratch does (routes get a UID and
		// resourceVersion from their names: two with one name would be
		// taken for each other, which the API server never serves)
		if duplicateRouteNames(in) {
			return
		}
		versionRoutes(&in, func(int) string { return "1" })
		prev := Resolve(in)
		for i := range len(in.HTTPRoutes) + len(in.GRPCRoutes) + len(in.TCPRoutes) {
			del := withoutRoute(in, i)
			got, _ := incremental(del, prev, nil)
			compareRendered(t, fmt.Sprintf("route %d deleted", i), got, Resolve(del))
			got, _ = incremental(in, got, nil)
			compareRendered(t, fmt.Sprintf("route %d added back", i), got, prev)
		}
	})
}

func duplicateRouteNames(in Input) bool {
	seen := map[routeKey]bool{}
	dup := func(kind routeKind, m metav1.ObjectMeta) bool {
		k := routeKey{kind, m.Namespace, m.Name}
		d := seen[k]
		seen[k] = true
		return d
	}
	for _, r := range in.HTTPRoutes {
		if dup(kindHTTP, r.ObjectMeta) {
			return true
		}
	}
	for _, r := range in.GRPCRoutes {
		if dup(kindGRPC, r.ObjectMeta) {
			return true
		}
	}
	for _, r := range in.TCPRoutes {
		if dup(kindTCP, r.ObjectMeta) {
			return true
		}
	}
	return false
}

// byteSource hands out choices from fuzz bytes; zero once exhausted.
type byteSource struct {
	b []byte
	i int
}

func (s *byteSource) n(max int) int {
	if max <= 0 {
		return 0
	}
	if s.i >= len(s.b) {
		return 0
	}
	v := int(s.b[s.i])
	s.i++
	return v % max
}

func (s *byteSource) flip() bool { return s.n(2) == 1 }

func pick[T any](s *byteSource, xs ...T) T { return xs[s.n(len(xs))] }

func ptr[T any](v T) *T { return &v }

// maybe returns v or nil.
func maybe[T any](s *byteSource, v T) *T {
	if s.flip() {
		return &v
	}
	return nil
}

var (
	fzNamespaces = []string{"a", "b"}
	fzServices   = []string{"s0", "s1", "s2", "s3"}
	fzNodes      = []string{"n1", "n2"}
	fzPorts      = []int32{80, 8080, 7070, 9090, 53, 0, 70000}
	fzRegexes    = []string{"/v[0-9]+", "([a-z", "(?=x)", ".*", "a{1001}", "(?:.?){1000}", ".*(?:.?){72}", "/x.*(?:.?){70}"}
	fzPaths      = []string{"/", "/a", "/a/b", "", "//", "/q?x", "no-slash"}
	fzHeaders    = []string{"x-a", "X-A", "bad name", "", "x-b"}
	fzDurations  = []gwv1.Duration{"1s", "0s", "10ms", "1.5s", "", "99999h"}
)

// generate builds an Input whose shape the API server would accept and whose
// values come from pools that include the bad ones.
func generate(s *byteSource) Input {
	var in Input
	for i, ns := range fzNamespaces {
		n := corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if s.flip() {
			n.Annotations = map[string]string{mesh.AnnotationMesh: pick(s, mesh.MeshEnabled, mesh.MeshDisabled, "")}
		}
		_ = i
		in.Namespaces = append(in.Namespaces, n)
	}
	for i, name := range fzNodes {
		in.Nodes = append(in.Nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: pick(s, fmt.Sprintf("172.30.0.%d", 11+i), "fd00::1", "bogus", "")}},
		}})
	}
	for i := s.n(5); i > 0; i-- {
		svc := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: pick(s, fzNamespaces...), Name: pick(s, fzServices...)}}
		svc.Spec.ClusterIP = pick(s, "10.96.0.1", "10.96.0.2", "None", "", "fd00::1", "garbage")
		svc.Spec.Type = pick(s, corev1.ServiceTypeClusterIP, corev1.ServiceTypeExternalName)
		svc.Spec.SessionAffinity = pick(s, corev1.ServiceAffinityNone, corev1.ServiceAffinityClientIP)
		svc.Spec.Selector = map[string]string{"app": pick(s, "x", "y")}
		for j := s.n(4); j >= 0; j-- {
			p := corev1.ServicePort{Name: pick(s, "http", "grpc", "tcp", ""), Port: pick(s, fzPorts...), Protocol: pick(s, corev1.ProtocolTCP, corev1.ProtocolUDP, "")}
			p.AppProtocol = maybe(s, pick(s, "http", "kubernetes.io/h2c", "grpc", "weird"))
			svc.Spec.Ports = append(svc.Spec.Ports, p)
		}
		in.Services = append(in.Services, svc)
	}
	for i := s.n(5); i > 0; i-- {
		p := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: pick(s, fzNamespaces...), Name: fmt.Sprintf("p%d", i), Labels: map[string]string{"app": pick(s, "x", "y")}}}
		p.Spec.NodeName = pick(s, append(fzNodes, "")...)
		p.Spec.HostNetwork = s.n(4) == 0
		p.Spec.ServiceAccountName = pick(s, "", "sa", "weird/sa")
		p.Status.Phase = pick(s, corev1.PodRunning, corev1.PodFailed)
		p.Status.PodIP = pick(s, fmt.Sprintf("10.244.0.%d", i), "", "not-an-ip", "fd00::9")
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: pick(s, corev1.ConditionTrue, corev1.ConditionFalse)}}
		in.Pods = append(in.Pods, PodOf(&p))
	}
	for i := s.n(4); i > 0; i-- {
		es := discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: pick(s, fzNamespaces...), Name: fmt.Sprintf("es%d", i),
			Labels: map[string]string{discoveryv1.LabelServiceName: pick(s, fzServices...)}}}
		es.AddressType = pick(s, discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN)
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(pick(s, "http", "grpc", "tcp", "")), Port: ptr(pick(s, fzPorts...))})
		for j := s.n(4); j > 0; j-- {
			ep := discoveryv1.Endpoint{Addresses: []string{pick(s, "10.244.0.1", "10.244.0.2", "bad", "fd00::9")}}
			ep.Conditions.Ready = maybe(s, s.flip())
			ep.Conditions.Terminating = maybe(s, s.flip())
			if s.flip() {
				ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: pick(s, fzNamespaces...), Name: fmt.Sprintf("p%d", s.n(5))}
			}
			es.Endpoints = append(es.Endpoints, ep)
		}
		in.EndpointSlices = append(in.EndpointSlices, &es)
	}
	for i := s.n(4); i > 0; i-- {
		hr := gwv1.HTTPRoute{ObjectMeta: routeMeta(s, i)}
		hr.Spec.ParentRefs = parentRefs(s)
		if s.n(4) == 0 {
			hr.Spec.Hostnames = []gwv1.Hostname{"x.example"}
		}
		for j := s.n(4); j > 0; j-- {
			hr.Spec.Rules = append(hr.Spec.Rules, httpRule(s))
		}
		in.HTTPRoutes = append(in.HTTPRoutes, &hr)
	}
	for i := s.n(3); i > 0; i-- {
		gr := gwv1.GRPCRoute{ObjectMeta: routeMeta(s, i)}
		gr.Spec.ParentRefs = parentRefs(s)
		for j := s.n(3); j > 0; j-- {
			r := gwv1.GRPCRouteRule{Name: maybe(s, gwv1.SectionName(pick(s, "a", "b")))}
			for k := s.n(3); k > 0; k-- {
				m := gwv1.GRPCRouteMatch{}
				if s.flip() {
					m.Method = &gwv1.GRPCMethodMatch{Type: maybe(s, pick(s, gwv1.GRPCMethodMatchExact, gwv1.GRPCMethodMatchRegularExpression, "Bogus")),
						Service: maybe(s, pick(s, "echo.Echo", "a/b", "([")), Method: maybe(s, pick(s, "Ping", "*("))}
				}
				if s.flip() {
					m.Headers = []gwv1.GRPCHeaderMatch{{Name: gwv1.GRPCHeaderName(pick(s, fzHeaders...)), Value: "v",
						Type: maybe(s, pick(s, gwv1.GRPCHeaderMatchExact, gwv1.GRPCHeaderMatchRegularExpression))}}
				}
				r.Matches = append(r.Matches, m)
			}
			if s.flip() {
				r.Filters = append(r.Filters, gwv1.GRPCRouteFilter{Type: pick(s, gwv1.GRPCRouteFilterRequestHeaderModifier, gwv1.GRPCRouteFilterResponseHeaderModifier, gwv1.GRPCRouteFilterRequestMirror, gwv1.GRPCRouteFilterExtensionRef),
					RequestHeaderModifier: headerFilterValue(s), ResponseHeaderModifier: headerFilterValue(s),
					RequestMirror: &gwv1.HTTPRequestMirrorFilter{BackendRef: backendObj(s), Percent: maybe(s, pick(s, int32(0), 50, 200, -1))}})
			}
			for k := s.n(3); k > 0; k-- {
				r.BackendRefs = append(r.BackendRefs, gwv1.GRPCBackendRef{BackendRef: backendRef(s)})
			}
			//lint:ignore SA1019 inline session persistence (GEP-1619) is part of v1.7.0 and Weft implements it beside XBackend
			r.SessionPersistence = session(s)
			gr.Spec.Rules = append(gr.Spec.Rules, r)
		}
		in.GRPCRoutes = append(in.GRPCRoutes, &gr)
	}
	for i := s.n(3); i > 0; i-- {
		tr := gwv1.TCPRoute{ObjectMeta: routeMeta(s, i)}
		tr.Spec.ParentRefs = parentRefs(s)
		for j := s.n(3); j > 0; j-- {
			tr.Spec.Rules = append(tr.Spec.Rules, gwv1.TCPRouteRule{BackendRefs: []gwv1.BackendRef{backendRef(s)}})
		}
		in.TCPRoutes = append(in.TCPRoutes, &tr)
	}
	for i := s.n(3); i > 0; i-- {
		p := gwxv1a1.XBackendTrafficPolicy{ObjectMeta: routeMeta(s, i)}
		p.Spec.TargetRefs = []gwv1.LocalPolicyTargetReference{{Group: pick[gwv1.Group](s, "", "x"), Kind: pick[gwv1.Kind](s, "Service", "Other"), Name: gwv1.ObjectName(pick(s, fzServices...))}}
		//lint:ignore SA1019 inline session persistence (GEP-1619) is part of v1.7.0 and Weft implements it beside XBackend
		p.Spec.SessionPersistence = session(s)
		in.BackendTrafficPolicies = append(in.BackendTrafficPolicies, p)
	}
	for i := s.n(3); i > 0; i-- {
		b := gwxv1a1.XBackend{ObjectMeta: metav1.ObjectMeta{Namespace: pick(s, fzNamespaces...), Name: pick(s, "xb0", "xb1")}}
		b.Spec.Type = pick(s, gwxv1a1.BackendTypeEndpointSelector, gwxv1a1.BackendTypeExternalHostname)
		b.Spec.Port.Number = gwxv1a1.PortNumber(pick(s, fzPorts...))
		if s.flip() {
			b.Spec.EndpointSelector = &gwxv1a1.EndpointSelectorBackend{LabelSelector: gwxv1a1.LabelSelector{MatchLabels: map[gwv1.LabelKey]gwv1.LabelValue{"app": pick[gwv1.LabelValue](s, "x", "y")}}}
		}
		b.Spec.Protocol = maybe(s, pick(s, gwxv1a1.BackendProtocolH2C, gwxv1a1.BackendProtocolMCP, gwxv1a1.BackendProtocolGRPC))
		b.Spec.SessionPersistence = session(s)
		in.Backends = append(in.Backends, b)
	}
	return in
}

func routeMeta(s *byteSource, i int) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: pick(s, fzNamespaces...), Name: fmt.Sprintf("r%d", i%2), Generation: int64(s.n(3)),
		CreationTimestamp: metav1.NewTime(time.Unix(int64(s.n(3)), 0))}
}

func parentRefs(s *byteSource) []gwv1.ParentReference {
	var out []gwv1.ParentReference
	for i := s.n(3) + 1; i > 0; i-- {
		ref := gwv1.ParentReference{Name: gwv1.ObjectName(pick(s, fzServices...))}
		ref.Group = maybe(s, pick[gwv1.Group](s, "", gwv1.GroupName))
		ref.Kind = maybe(s, pick[gwv1.Kind](s, "Service", "Gateway"))
		ref.Namespace = maybe(s, gwv1.Namespace(pick(s, fzNamespaces...)))
		ref.Port = maybe(s, pick(s, fzPorts...))
		ref.SectionName = maybe(s, gwv1.SectionName(pick(s, "http", "grpc", "nope")))
		out = append(out, ref)
	}
	return out
}

func backendObj(s *byteSource) gwv1.BackendObjectReference {
	return gwv1.BackendObjectReference{
		Group: maybe(s, pick[gwv1.Group](s, "", "gateway.networking.x-k8s.io", "other")), Kind: maybe(s, pick[gwv1.Kind](s, "Service", "XBackend", "Thing")),
		Name: gwv1.ObjectName(pick(s, "s0", "s1", "xb0", "xb1", "missing")), Namespace: maybe(s, gwv1.Namespace(pick(s, fzNamespaces...))),
		Port: maybe(s, pick(s, fzPorts...)),
	}
}

func backendRef(s *byteSource) gwv1.BackendRef {
	return gwv1.BackendRef{BackendObjectReference: backendObj(s), Weight: maybe(s, pick(s, int32(0), 1, 70, 1_000_000, 2_147_483_647, -3))}
}

func headerFilterValue(s *byteSource) *gwv1.HTTPHeaderFilter {
	if s.n(5) == 0 {
		return nil
	}
	return &gwv1.HTTPHeaderFilter{Set: []gwv1.HTTPHeader{{Name: gwv1.HTTPHeaderName(pick(s, fzHeaders...)), Value: pick(s, "v", "a\nb")}}, Remove: []string{pick(s, fzHeaders...)}}
}

func session(s *byteSource) *gwv1.SessionPersistence {
	if s.n(3) != 0 {
		return nil
	}
	sp := &gwv1.SessionPersistence{Type: maybe(s, pick(s, gwv1.CookieBasedSessionPersistence, gwv1.HeaderBasedSessionPersistence, "Bogus"))}
	sp.AbsoluteTimeout = maybe(s, pick(s, fzDurations...))
	if s.flip() {
		sp.Cookie = &gwv1.CookieConfig{Name: maybe(s, gwv1.CookieName(pick(s, "c", "bad name", ""))), Path: maybe(s, pick(s, "/", "/x", "x", "/a;b")),
			LifetimeType: maybe(s, pick(s, gwv1.SessionCookieLifetimeType, gwv1.PermanentCookieLifetimeType, "Forever"))}
	}
	if s.flip() {
		sp.Header = &gwv1.HeaderConfig{Name: gwv1.HeaderName(pick(s, fzHeaders...))}
	}
	return sp
}

func httpRule(s *byteSource) gwv1.HTTPRouteRule {
	r := gwv1.HTTPRouteRule{Name: maybe(s, gwv1.SectionName(pick(s, "a", "b")))}
	for k := s.n(3); k > 0; k-- {
		m := gwv1.HTTPRouteMatch{}
		if s.flip() {
			typ := pick(s, gwv1.PathMatchExact, gwv1.PathMatchPathPrefix, gwv1.PathMatchRegularExpression, "Glob")
			val := pick(s, fzPaths...)
			if typ == gwv1.PathMatchRegularExpression {
				val = pick(s, fzRegexes...)
			}
			m.Path = &gwv1.HTTPPathMatch{Type: &typ, Value: maybe(s, val)}
		}
		for h := s.n(3); h > 0; h-- {
			m.Headers = append(m.Headers, gwv1.HTTPHeaderMatch{Name: gwv1.HTTPHeaderName(pick(s, fzHeaders...)), Value: pick(s, fzRegexes...),
				Type: maybe(s, pick(s, gwv1.HeaderMatchExact, gwv1.HeaderMatchRegularExpression))})
		}
		for q := s.n(3); q > 0; q-- {
			m.QueryParams = append(m.QueryParams, gwv1.HTTPQueryParamMatch{Name: gwv1.HTTPHeaderName(pick(s, "q", "", "Q")), Value: pick(s, fzRegexes...),
				Type: maybe(s, pick(s, gwv1.QueryParamMatchExact, gwv1.QueryParamMatchRegularExpression))})
		}
		m.Method = maybe(s, pick[gwv1.HTTPMethod](s, "GET", "BAD METHOD"))
		r.Matches = append(r.Matches, m)
	}
	for k := s.n(3); k > 0; k-- {
		r.Filters = append(r.Filters, httpFilter(s))
	}
	for k := s.n(3); k > 0; k-- {
		b := gwv1.HTTPBackendRef{BackendRef: backendRef(s)}
		if s.n(4) == 0 {
			b.Filters = []gwv1.HTTPRouteFilter{httpFilter(s)}
		}
		r.BackendRefs = append(r.BackendRefs, b)
	}
	if s.flip() {
		r.Timeouts = &gwv1.HTTPRouteTimeouts{Request: maybe(s, pick(s, fzDurations...)), BackendRequest: maybe(s, pick(s, fzDurations...))}
	}
	if s.flip() {
		r.Retry = &gwv1.HTTPRouteRetry{Codes: []gwv1.HTTPRouteRetryStatusCode{pick[gwv1.HTTPRouteRetryStatusCode](s, 503, 200, 999)},
			Attempts: maybe(s, pick(s, 0, 3, -1, 1<<40)), Backoff: maybe(s, pick(s, fzDurations...))}
	}
	//lint:ignore SA1019 inline session persistence (GEP-1619) is part of v1.7.0 and Weft implements it beside XBackend
	r.SessionPersistence = session(s)
	return r
}

func httpFilter(s *byteSource) gwv1.HTTPRouteFilter {
	f := gwv1.HTTPRouteFilter{Type: pick(s, gwv1.HTTPRouteFilterRequestHeaderModifier, gwv1.HTTPRouteFilterResponseHeaderModifier,
		gwv1.HTTPRouteFilterRequestRedirect, gwv1.HTTPRouteFilterURLRewrite, gwv1.HTTPRouteFilterRequestMirror, gwv1.HTTPRouteFilterCORS,
		gwv1.HTTPRouteFilterExternalAuth, gwv1.HTTPRouteFilterExtensionRef, "Unknown")}
	pm := func() *gwv1.HTTPPathModifier {
		if s.flip() {
			return nil
		}
		return &gwv1.HTTPPathModifier{Type: pick(s, gwv1.FullPathHTTPPathModifier, gwv1.PrefixMatchHTTPPathModifier, "X"),
			ReplaceFullPath: maybe(s, pick(s, fzPaths...)), ReplacePrefixMatch: maybe(s, pick(s, fzPaths...))}
	}
	switch f.Type {
	case gwv1.HTTPRouteFilterRequestHeaderModifier:
		f.RequestHeaderModifier = headerFilterValue(s)
	case gwv1.HTTPRouteFilterResponseHeaderModifier:
		f.ResponseHeaderModifier = headerFilterValue(s)
	case gwv1.HTTPRouteFilterRequestRedirect:
		f.RequestRedirect = &gwv1.HTTPRequestRedirectFilter{Scheme: maybe(s, pick(s, "https", "ftp")), Hostname: maybe(s, gwv1.PreciseHostname(pick(s, "a.example", "bad_host"))),
			Port: maybe(s, pick(s, fzPorts...)), StatusCode: maybe(s, pick(s, 301, 302, 418)), Path: pm()}
	case gwv1.HTTPRouteFilterURLRewrite:
		f.URLRewrite = &gwv1.HTTPURLRewriteFilter{Hostname: maybe(s, gwv1.PreciseHostname(pick(s, "a.example", "bad host"))), Path: pm()}
	case gwv1.HTTPRouteFilterRequestMirror:
		f.RequestMirror = &gwv1.HTTPRequestMirrorFilter{BackendRef: backendObj(s), Percent: maybe(s, pick(s, int32(0), 50, 200, -1)),
			Fraction: maybe(s, gwv1.Fraction{Numerator: pick(s, int32(1), 5, -2), Denominator: maybe(s, pick(s, int32(0), 3, -1))})}
	case gwv1.HTTPRouteFilterCORS:
		f.CORS = &gwv1.HTTPCORSFilter{AllowOrigins: []gwv1.CORSOrigin{pick[gwv1.CORSOrigin](s, "*", "https://a.example", "a.example", "https://*.*.x")},
			AllowMethods: []gwv1.HTTPMethodWithWildcard{pick[gwv1.HTTPMethodWithWildcard](s, "GET", "*", "B A D")}, MaxAge: pick(s, int32(0), 10, -5)}
	}
	return f
}
