package gateway

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/yaml"

	proxyroute "github.com/weft-mesh/weft/agent/proxy/route"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
	"github.com/weft-mesh/weft/controller/resolve"
)

// caseExpectations is an optional document of a test case that states,
// the way the upstream conformance tests do, what the statuses must say
// and what requests must do. Conditions match the way the suite matches
// them: by type, with status and reason only compared when given.
//
//	kind: GatewayExpectations
//	classes:
//	- {name: weft, conditions: [{type: Accepted, status: "True"}]}
//	gateways:
//	- name: ns/gw
//	  conditions: [{type: Accepted, status: "False", reason: ListenersNotValid}]
//	  listeners:                      # when given: exactly these listeners
//	  - {name: http, supportedKinds: [HTTPRoute], attachedRoutes: 1, conditions: [...]}
//	routes:
//	- {kind: HTTPRoute, name: ns/r, gateway: ns/gw, conditions: [...]}
//	- {kind: HTTPRoute, name: ns/r2, noAcceptedParents: true}
//	policies:
//	- {name: ns/p, gateway: ns/gw, conditions: [...]}
//	requests:
//	- {gateway: ns/gw, port: 80, host: a.example.com, path: /s1, backend: infra-backend-v1}
//	- {gateway: ns/gw, port: 80, host: b.example.com, status: 404}
//	- {gateway: ns/gw, port: 443, sni: x.org, certificate: ns/secret}
//	- {gateway: ns/gw, port: 443, sni: nope.org, refused: true}
type caseExpectations struct {
	Kind     string          `json:"kind"`
	Classes  []expectObject  `json:"classes,omitempty"`
	Gateways []expectGateway `json:"gateways,omitempty"`
	Routes   []expectObject  `json:"routes,omitempty"`
	Policies []expectObject  `json:"policies,omitempty"`
	Requests []expectRequest `json:"requests,omitempty"`
}

type expectCondition struct {
	Type   string `json:"type"`
	Status string `json:"status,omitempty"`
	Reason string `json:"reason,omitempty"`
}

type expectObject struct {
	Kind              string            `json:"kind,omitempty"`
	Name              string            `json:"name"`
	Gateway           string            `json:"gateway,omitempty"`
	Conditions        []expectCondition `json:"conditions,omitempty"`
	NoAcceptedParents bool              `json:"noAcceptedParents,omitempty"`
}

type expectGateway struct {
	Name       string            `json:"name"`
	Conditions []expectCondition `json:"conditions,omitempty"`
	Listeners  []expectListener  `json:"listeners,omitempty"`
	Addresses  []string          `json:"addresses,omitempty"`
}

type expectListener struct {
	Name           string            `json:"name"`
	SupportedKinds []string          `json:"supportedKinds"`
	AttachedRoutes int32             `json:"attachedRoutes"`
	Conditions     []expectCondition `json:"conditions,omitempty"`
}

type expectRequest struct {
	Gateway     string            `json:"gateway"`
	Port        int32             `json:"port"`
	Host        string            `json:"host,omitempty"`
	SNI         string            `json:"sni,omitempty"`
	Method      string            `json:"method,omitempty"`
	Path        string            `json:"path,omitempty"`
	GRPC        string            `json:"grpc,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Backend     string            `json:"backend,omitempty"`
	Status      int               `json:"status,omitempty"`
	Refused     bool              `json:"refused,omitempty"`
	Certificate string            `json:"certificate,omitempty"`
}

// TestExpectations checks every case's conformance assertions: the
// goldens pin what the code printed last time, these pin what the spec
// and the conformance tests require.
func TestExpectations(t *testing.T) {
	cases, _ := filepath.Glob("testdata/*.in.yaml")
	n := 0
	for _, c := range cases {
		exps, err := readExpectations(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(exps) == 0 {
			continue
		}
		in, err := loadCase(c)
		if err != nil {
			t.Fatal(err)
		}
		out := Resolve(in)
		name := strings.TrimSuffix(filepath.Base(c), ".in.yaml")
		for _, e := range exps {
			for _, err := range checkExpectations(out, e) {
				n++
				if err != nil {
					t.Errorf("%s: %v", name, err)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no expectations found")
	}
}

func readExpectations(path string) ([]caseExpectations, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []caseExpectations
	for _, doc := range docSep.Split(string(data), -1) {
		var e caseExpectations
		if yaml.Unmarshal([]byte(doc), &e) != nil || e.Kind != "GatewayExpectations" {
			continue
		}
		if err := yaml.UnmarshalStrict([]byte(doc), &e); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// checkExpectations returns one entry per assertion, nil when it holds.
func checkExpectations(out Output, e caseExpectations) []error {
	var errs []error
	for _, c := range e.Classes {
		i := slices.IndexFunc(out.GatewayClasses, func(s GatewayClassStatus) bool { return s.Name == c.Name })
		if i < 0 {
			errs = append(errs, fmt.Errorf("GatewayClass %s has no status", c.Name))
			continue
		}
		errs = append(errs, conditionsMatch("GatewayClass "+c.Name, c.Conditions, out.GatewayClasses[i].Status.Conditions))
	}
	for _, g := range e.Gateways {
		errs = append(errs, checkGateway(out, g))
	}
	for _, r := range e.Routes {
		errs = append(errs, checkParents(out.Routes, r))
	}
	for _, p := range e.Policies {
		p.Kind = KindBackendTLSPolicy
		errs = append(errs, checkParents(out.Policies, p))
	}
	for _, r := range e.Requests {
		if err := checkRequest(out, r); err != nil {
			errs = append(errs, fmt.Errorf("request %+v: %w", r, err))
		} else {
			errs = append(errs, nil)
		}
	}
	return errs
}

func conditionsMatch(what string, want []expectCondition, got []metav1.Condition) error {
	for _, w := range want {
		i := slices.IndexFunc(got, func(c metav1.Condition) bool { return c.Type == w.Type })
		if i < 0 {
			return fmt.Errorf("%s: no %s condition in %v", what, w.Type, got)
		}
		c := got[i]
		if w.Status != "" && string(c.Status) != w.Status || w.Reason != "" && c.Reason != w.Reason {
			return fmt.Errorf("%s: condition %s is %s/%s (%q), want %s/%s", what, w.Type, c.Status, c.Reason, c.Message, w.Status, w.Reason)
		}
	}
	return nil
}

func checkGateway(out Output, e expectGateway) error {
	i := slices.IndexFunc(out.Gateways, func(s GatewayStatus) bool { return s.Namespace+"/"+s.Name == e.Name })
	if i < 0 {
		return fmt.Errorf("Gateway %s has no status", e.Name)
	}
	st := out.Gateways[i].Status
	if err := conditionsMatch("Gateway "+e.Name, e.Conditions, st.Conditions); err != nil {
		return err
	}
	if e.Addresses != nil {
		var got []string
		for _, a := range st.Addresses {
			got = append(got, a.Value)
		}
		if !slices.Equal(got, e.Addresses) {
			return fmt.Errorf("Gateway %s: addresses %v, want %v", e.Name, got, e.Addresses)
		}
	}
	if e.Listeners == nil {
		return nil
	}
	if len(st.Listeners) != len(e.Listeners) {
		return fmt.Errorf("Gateway %s: %d listener statuses, want %d", e.Name, len(st.Listeners), len(e.Listeners))
	}
	for _, el := range e.Listeners {
		j := slices.IndexFunc(st.Listeners, func(l gwv1.ListenerStatus) bool { return string(l.Name) == el.Name })
		if j < 0 {
			return fmt.Errorf("Gateway %s: no status for listener %s", e.Name, el.Name)
		}
		l := st.Listeners[j]
		var kinds []string
		for _, k := range l.SupportedKinds {
			if k.Group == nil || *k.Group != gwv1.GroupName {
				return fmt.Errorf("Gateway %s listener %s: supported kind %s has group %v", e.Name, el.Name, k.Kind, k.Group)
			}
			kinds = append(kinds, string(k.Kind))
		}
		if len(el.SupportedKinds) == 0 && len(kinds) > 0 || slices.ContainsFunc(el.SupportedKinds, func(k string) bool { return !slices.Contains(kinds, k) }) {
			return fmt.Errorf("Gateway %s listener %s: supportedKinds %v, want %v", e.Name, el.Name, kinds, el.SupportedKinds)
		}
		if l.AttachedRoutes != el.AttachedRoutes {
			return fmt.Errorf("Gateway %s listener %s: attachedRoutes %d, want %d", e.Name, el.Name, l.AttachedRoutes, el.AttachedRoutes)
		}
		if err := conditionsMatch(fmt.Sprintf("Gateway %s listener %s", e.Name, el.Name), el.Conditions, l.Conditions); err != nil {
			return err
		}
	}
	return nil
}

// checkParents finds the object's entry for the Gateway (a route's parent,
// a policy's ancestor) and matches its conditions.
func checkParents(list []resolve.ObjectStatus, e expectObject) error {
	i := slices.IndexFunc(list, func(s resolve.ObjectStatus) bool { return s.Kind == e.Kind && s.Namespace+"/"+s.Name == e.Name })
	what := e.Kind + " " + e.Name
	if e.NoAcceptedParents {
		if i < 0 {
			return nil
		}
		for _, p := range list[i].Parents {
			if err := conditionsMatch(what, []expectCondition{{Type: "Accepted", Status: "False"}}, p.Conditions); err != nil {
				return err
			}
		}
		return nil
	}
	if i < 0 {
		return fmt.Errorf("%s has no status", what)
	}
	ns, name, _ := strings.Cut(e.Gateway, "/")
	var errs []error
	for _, p := range list[i].Parents {
		pns := list[i].Namespace
		if p.Ref.Namespace != nil {
			pns = string(*p.Ref.Namespace)
		}
		if pns != ns || string(p.Ref.Name) != name {
			continue
		}
		err := conditionsMatch(fmt.Sprintf("%s parent %s", what, e.Gateway), e.Conditions, p.Conditions)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return errs[0]
	}
	return fmt.Errorf("%s has no entry for Gateway %s", what, e.Gateway)
}

// checkRequest runs a request through the IR the way the data plane is
// documented to (listener by Host/SNI, virtual host, tables in order) and
// through the node proxy's own route selection.
func checkRequest(out Output, e expectRequest) error {
	i := slices.IndexFunc(out.IR, func(g *Gateway) bool { return g.Namespace+"/"+g.Name == e.Gateway })
	if i < 0 {
		return fmt.Errorf("no IR for Gateway %s", e.Gateway)
	}
	g := out.IR[i]
	j := slices.IndexFunc(g.Ports, func(p Port) bool { return p.Port == e.Port })
	if j < 0 {
		return refusedOr(e, fmt.Errorf("the data plane does not listen on port %d", e.Port))
	}
	if h, _, ok := strings.Cut(e.Host, ":"); ok {
		e.Host = h // the port of a Host header is ignored
	}
	host := cmpOr(e.SNI, e.Host)
	k := slices.IndexFunc(g.Ports[j].Listeners, func(l Listener) bool { return hostMatches(l.Hostname, host) })
	if k < 0 {
		err := fmt.Errorf("no listener on port %d matches %q", e.Port, host)
		if g.Ports[j].Listeners[0].Protocol == gwv1.HTTPProtocolType {
			return statusOr(e, 404, err)
		}
		return refusedOr(e, err)
	}
	l := &g.Ports[j].Listeners[k]
	if e.Refused {
		return fmt.Errorf("listener %s takes the connection, want it refused", l.Name)
	}
	if e.Certificate != "" {
		if got := pickCertificate(l.Certificates, host); got != e.Certificate {
			return fmt.Errorf("listener %s presents certificate %s, want %s", l.Name, got, e.Certificate)
		}
	}
	if e.Backend == "" && e.Status == 0 {
		return nil
	}
	v := slices.IndexFunc(l.VirtualHosts, func(vh VirtualHost) bool { return hostMatches(vh.Hostname, cmpOr(e.Host, e.SNI)) })
	if v < 0 {
		return statusOr(e, 404, fmt.Errorf("no virtual host of listener %s matches %q", l.Name, e.Host))
	}
	for _, tbl := range l.VirtualHosts[v].Tables {
		if got, ok, err := selectBackend(tbl, e); ok || err != nil {
			if err != nil {
				return err
			}
			return backendOr(e, got)
		}
	}
	return statusOr(e, 404, fmt.Errorf("no table of host %q matches", l.VirtualHosts[v].Hostname))
}

// selectBackend returns the Service a table sends the request to ("500"
// for an invalid backend, "redirect NNN" for a redirect), and whether a
// rule matched.
func selectBackend(tbl *weftv1.RouteTable, e expectRequest) (string, bool, error) {
	ct, err := proxyroute.Compile(tbl)
	if err != nil {
		return "", false, err
	}
	req := &proxyroute.Request{Header: http.Header{}}
	if tbl.Kind != weftv1.RouteKind_ROUTE_KIND_TCP {
		req.Method, req.Path = cmpOr(e.Method, "GET"), cmpOr(e.Path, "/")
		if e.GRPC != "" {
			req.Method, req.Path = "", "/"+e.GRPC
		}
		for k, v := range e.Headers {
			req.Header.Set(k, v)
		}
	}
	d, ok := ct.Select(req)
	if !ok {
		return "", false, nil
	}
	for _, f := range d.Rule.Filters {
		if f.Redirect != nil {
			return fmt.Sprintf("redirect %d", f.Redirect.StatusCode), true, nil
		}
	}
	b, err := d.PickBackend(func(int) int { return 0 })
	if err != nil || b.Invalid != "" {
		return "500", true, nil
	}
	_, rest, _ := strings.Cut(b.Cluster, "/")
	svc, _, _ := strings.Cut(rest, ":")
	return svc, true, nil
}

// pickCertificate is the documented SNI choice: the first certificate
// with an exact name for host, else the first with a matching wildcard,
// else the first.
func pickCertificate(cs []*Certificate, host string) string {
	name := func(c *Certificate) string { return c.SecretNamespace + "/" + c.SecretName }
	for _, wild := range []bool{false, true} {
		for _, c := range cs {
			for _, h := range c.Hostnames {
				if strings.HasPrefix(h, "*") == wild && hostMatches(h, host) {
					return name(c)
				}
			}
		}
	}
	if len(cs) == 0 {
		return ""
	}
	return name(cs[0])
}

func refusedOr(e expectRequest, err error) error {
	if e.Refused {
		return nil
	}
	return err
}

func statusOr(e expectRequest, status int, err error) error {
	if e.Status == status {
		return nil
	}
	return err
}

func backendOr(e expectRequest, got string) error {
	want := e.Backend
	if e.Status != 0 {
		want = fmt.Sprint(e.Status)
	}
	if got != want {
		return fmt.Errorf("answered by %s, want %s", got, want)
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
