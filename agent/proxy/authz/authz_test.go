package authz

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

var td = spiffeid.RequireTrustDomainFromString("cluster.local")

func sa(ns, name string) spiffeid.ID {
	return spiffeid.RequireFromSegments(td, "ns", ns, "sa", name)
}

// shop is the node policy the two example policies of issue #15 resolve
// to for a node running shop/cart-0.
func shop(extra ...*weftv1.AuthzPolicy) *weftv1.NodePolicy {
	return &weftv1.NodePolicy{
		Node: "n1", TrustDomain: "cluster.local",
		Workloads: []*weftv1.Workload{{Namespace: "shop", Name: "cart-0", Identity: sa("shop", "cart").String()}},
		Authz: append([]*weftv1.AuthzPolicy{{
			Name: "shop/cart-callers", Action: weftv1.AuthzAction_AUTHZ_ACTION_ALLOW, Workloads: []string{"shop/cart-0"},
			Rules: []*weftv1.AuthzRule{{Sources: []*weftv1.AuthzSource{{Identity: sa("shop", "frontend").String()}}, Ports: []uint32{8080}}},
		}, {
			Name: "shop/cart-no-admin-writes", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Application: true, Workloads: []string{"shop/cart-0"},
			Rules: []*weftv1.AuthzRule{{
				Sources: []*weftv1.AuthzSource{{Identity: sa("shop", "frontend").String()}},
				Http:    []*weftv1.HTTPMatch{{Method: "POST", Path: &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_PREFIX, Value: "/admin"}}},
			}},
		}}, extra...),
	}
}

func compile(t *testing.T, pol *weftv1.NodePolicy) *Table {
	t.Helper()
	tab, err := Compile(pol, td)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestConnection(t *testing.T) {
	w := compile(t, shop()).For("shop/cart-0")
	for _, c := range []struct {
		name     string
		peer     spiffeid.ID
		port     uint32
		allowed  bool
		needL7   bool
		decision string
	}{
		// the DENY policy is Application level: frontend's connection is
		// served at L7 to tell POST /admin from the rest
		{"frontend 8080", sa("shop", "frontend"), 8080, false, true, ""},
		{"frontend other port", sa("shop", "frontend"), 9090, false, false, ""},
		{"other account", sa("shop", "checkout"), 8080, false, false, ""},
		{"other namespace", sa("web", "frontend"), 8080, false, false, ""},
	} {
		d := w.Connection(c.peer, c.port)
		if d.Allowed != c.allowed || d.NeedL7 != c.needL7 {
			t.Errorf("%s: %+v, want allowed %v needL7 %v", c.name, d, c.allowed, c.needL7)
		}
	}
	// no DENY policy: frontend on 8080 is allowed at L4, by cart-callers
	pol := shop()
	pol.Authz = pol.Authz[:1]
	d := compile(t, pol).For("shop/cart-0").Connection(sa("shop", "frontend"), 8080)
	if !d.Allowed || d.NeedL7 || d.Policy != "shop/cart-callers" || d.Rule != 0 {
		t.Errorf("allow only: %+v", d)
	}
}

func TestRequest(t *testing.T) {
	w := compile(t, shop()).For("shop/cart-0")
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		peer    spiffeid.ID
		port    uint32
		method  string
		path    string
		allowed bool
		policy  string
	}{
		{"post admin denied (deny wins)", sa("shop", "frontend"), 8080, "POST", "/admin/users", false, "shop/cart-no-admin-writes"},
		{"post admin exact", sa("shop", "frontend"), 8080, "POST", "/admin", false, "shop/cart-no-admin-writes"},
		{"get admin allowed", sa("shop", "frontend"), 8080, "GET", "/admin", true, "shop/cart-callers"},
		{"post elsewhere allowed", sa("shop", "frontend"), 8080, "POST", "/cart", true, "shop/cart-callers"},
		{"prefix is by segment", sa("shop", "frontend"), 8080, "POST", "/administrator", true, "shop/cart-callers"},
		{"other caller", sa("shop", "checkout"), 8080, "GET", "/cart", false, ""},
		{"wrong port", sa("shop", "frontend"), 9090, "GET", "/cart", false, ""},
	} {
		d := w.Request(ctx, c.peer, c.port, &Request{Method: c.method, Path: c.path, Header: http.Header{}})
		if d.Allowed != c.allowed || d.Policy != c.policy {
			t.Errorf("%s: %+v, want allowed %v by %q", c.name, d, c.allowed, c.policy)
		}
	}
}

func TestNoPolicyAllows(t *testing.T) {
	tab := compile(t, shop())
	w := tab.For("shop/other-0")
	if w != nil {
		t.Fatal("a workload no policy selects has policies")
	}
	if d := w.Connection(sa("x", "y"), 1); !d.Allowed {
		t.Errorf("connection: %+v", d)
	}
	if d := w.Request(context.Background(), sa("x", "y"), 1, &Request{Method: "GET", Path: "/"}); !d.Allowed {
		t.Errorf("request: %+v", d)
	}
	// DENY policies only: what they do not match is allowed
	pol := shop()
	pol.Authz = pol.Authz[1:]
	w = compile(t, pol).For("shop/cart-0")
	if d := w.Request(context.Background(), sa("shop", "checkout"), 8080, &Request{Method: "POST", Path: "/admin"}); !d.Allowed {
		t.Errorf("deny only: %+v", d)
	}
	if d := w.Connection(sa("shop", "checkout"), 8080); !d.Allowed || d.NeedL7 {
		t.Errorf("deny only, source it does not name: %+v", d)
	}
}

func TestSources(t *testing.T) {
	pol := shop()
	pol.Authz = []*weftv1.AuthzPolicy{{
		Name: "shop/ns", Action: weftv1.AuthzAction_AUTHZ_ACTION_ALLOW, Workloads: []string{"shop/cart-0"},
		Rules: []*weftv1.AuthzRule{
			{Sources: []*weftv1.AuthzSource{{Namespace: "web"}}},
			{Sources: []*weftv1.AuthzSource{{Identity: "spiffe://partner.example/billing"}}, Ports: []uint32{8080, 8443}},
			{Sources: []*weftv1.AuthzSource{}}, // listed none: matches nobody
		},
	}}
	w := compile(t, pol).For("shop/cart-0")
	for _, c := range []struct {
		peer    string
		port    uint32
		allowed bool
		rule    int
	}{
		{sa("web", "a").String(), 1, true, 0},
		{sa("web", "b").String(), 9, true, 0},
		{sa("shop", "a").String(), 1, false, -1},
		// a namespace source names workload identities of the trust domain only
		{"spiffe://other.example/ns/web/sa/a", 1, false, -1},
		{"spiffe://cluster.local/ns/web/sa/a/x", 1, false, -1},
		{"spiffe://partner.example/billing", 8443, true, 1},
		{"spiffe://partner.example/billing", 80, false, -1},
		{"spiffe://partner.example/billing/x", 8443, false, -1},
	} {
		d := w.Connection(spiffeid.RequireFromString(c.peer), c.port)
		if d.Allowed != c.allowed || d.Rule != c.rule {
			t.Errorf("%s:%d: %+v, want allowed %v rule %d", c.peer, c.port, d, c.allowed, c.rule)
		}
	}
	// sources omitted: any peer; no rules: nothing
	pol.Authz[0].Rules = []*weftv1.AuthzRule{{AnySource: true, Ports: []uint32{80}}}
	w = compile(t, pol).For("shop/cart-0")
	if d := w.Connection(sa("any", "one"), 80); !d.Allowed {
		t.Errorf("any source: %+v", d)
	}
	pol.Authz[0].Rules = nil
	w = compile(t, pol).For("shop/cart-0")
	if d := w.Connection(sa("any", "one"), 80); d.Allowed || d.NeedL7 {
		t.Errorf("ALLOW with no rules: %+v", d)
	}
}

func TestDenyWinsAtL4(t *testing.T) {
	pol := shop(&weftv1.AuthzPolicy{
		Name: "shop/block", Action: weftv1.AuthzAction_AUTHZ_ACTION_DENY, Workloads: []string{"shop/cart-0"},
		Rules: []*weftv1.AuthzRule{{Sources: []*weftv1.AuthzSource{{Namespace: "shop"}}, Ports: []uint32{8080}}},
	})
	d := compile(t, pol).For("shop/cart-0").Connection(sa("shop", "frontend"), 8080)
	if d.Allowed || d.NeedL7 || d.Policy != "shop/block" {
		t.Errorf("%+v", d)
	}
}

func TestCompileRefuses(t *testing.T) {
	for name, mut := range map[string]func(*weftv1.NodePolicy){
		"unknown workload": func(p *weftv1.NodePolicy) { p.Authz[0].Workloads = []string{"shop/gone"} },
		"no action":        func(p *weftv1.NodePolicy) { p.Authz[0].Action = 0 },
		"http at network":  func(p *weftv1.NodePolicy) { p.Authz[1].Application = false },
		"bad identity":     func(p *weftv1.NodePolicy) { p.Authz[0].Rules[0].Sources[0].Identity = "http://x" },
		"port zero":        func(p *weftv1.NodePolicy) { p.Authz[0].Rules[0].Ports = []uint32{0} },
		"bad path":         func(p *weftv1.NodePolicy) { p.Authz[1].Rules[0].Http[0].Path.Value = "admin" },
		"query param": func(p *weftv1.NodePolicy) {
			p.Authz[1].Rules[0].Http[0].QueryParams = []*weftv1.StringMatch{{Name: "a"}}
		},
		"empty source":     func(p *weftv1.NodePolicy) { p.Authz[0].Rules[0].Sources[0] = &weftv1.AuthzSource{} },
		"duplicate name":   func(p *weftv1.NodePolicy) { p.Authz[1].Name = p.Authz[0].Name },
		"any with sources": func(p *weftv1.NodePolicy) { p.Authz[0].Rules[0].AnySource = true },
		"bad regex": func(p *weftv1.NodePolicy) {
			p.Authz[1].Rules[0].Http[0].Path = &weftv1.StringMatch{Type: weftv1.MatchType_MATCH_TYPE_REGEX, Value: "(("}
		},
		"namespace not label":  func(p *weftv1.NodePolicy) { p.Authz[0].Rules[0].Sources[0] = &weftv1.AuthzSource{Namespace: "A_b"} },
		"no workloads":         func(p *weftv1.NodePolicy) { p.Authz[0].Workloads = nil },
		"bad trust domain":     func(p *weftv1.NodePolicy) { p.TrustDomain = "Bad Domain" },
		"nil rule":             func(p *weftv1.NodePolicy) { p.Authz[0].Rules = append(p.Authz[0].Rules, nil) },
		"nil http match":       func(p *weftv1.NodePolicy) { p.Authz[1].Rules[0].Http = append(p.Authz[1].Rules[0].Http, nil) },
		"identity & namespace": func(p *weftv1.NodePolicy) { p.Authz[0].Rules[0].Sources[0].Namespace = "shop" },
	} {
		pol := shop()
		mut(pol)
		if _, err := Compile(pol, td); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
		if err := pol.Validate(); err == nil && name != "bad trust domain" {
			t.Errorf("%s: NodePolicy.Validate accepts it", name)
		}
	}
}

func TestCanonicalPath(t *testing.T) {
	for p, want := range map[string]bool{
		"/":             true,
		"/admin":        true,
		"/a/b?x=//..":   true,
		"/a%20b":        true,
		"/a%2Fb":        false,
		"//admin":       false,
		"/x/../admin":   false,
		"/./admin":      false,
		"/admin/.":      false,
		"/%61dmin":      false,
		"/a\\b":         false,
		"/a%":           false,
		"/a%zz":         false,
		"*":             true,
		"http://x/a":    false,
		"/pkg.Svc/Call": true,
	} {
		if got := CanonicalPath(p); got != want {
			t.Errorf("CanonicalPath(%q) = %v, want %v", p, got, want)
		}
	}
}

func mustID(s string) spiffeid.ID { return spiffeid.RequireFromString(s) }
