package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The README's authorization example on the lab (issue #15, e2e steps a
// and b): shop/frontend may call cart on 8080, shop/attacker may not, and
// frontend's POSTs under /admin are refused with 403 on a connection that
// stays usable; a DENY beats an ALLOW.

const cartURL = "http://cart.shop.svc.cluster.local:8080/"

// shopClient runs weft-echo client in shop/pod.
func (e *env) shopClient(pod string, args ...string) echoResult {
	e.t.Helper()
	out, err := e.exec("shop", pod, append([]string{"weft-echo", "client", "--url"}, args...)...)
	if err != nil && !strings.HasPrefix(strings.TrimSpace(out), "{") {
		e.t.Fatalf("weft-echo client in shop/%s: %v: %s", pod, err, out)
	}
	return parseResult(out)
}

func testAuthzAllowAndApplicationDeny(t *testing.T, e *env) {
	e.kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join("testdata", "authz", "shop.yaml"))
	e.kubectl("-n", "shop", "rollout", "status", "deployment/cart", "--timeout=180s")
	for _, p := range []string{"frontend", "attacker"} {
		e.kubectl("-n", "shop", "wait", "--for=condition=Ready", "pod/"+p, "--timeout=120s")
		e.waitEnrolled("shop", p)
	}
	// no policy: both may call (GEP-3779: a workload no policy selects is open)
	e.eventually(60*time.Second, "cart answers both callers before any policy", func() string {
		f, a := e.shopClient("frontend", cartURL, "--count", "10"), e.shopClient("attacker", cartURL, "--count", "10")
		if f.Status["200"] != 10 || a.Status["200"] != 10 {
			return fmt.Sprintf("frontend %+v attacker %+v", f, a)
		}
		return ""
	})
	e.kubectl("apply", "--server-side", "--force-conflicts", "-f", filepath.Join("testdata", "authz", "policies.yaml"))
	took := e.eventually(30*time.Second, "the attacker refused at L4", func() string {
		if a := e.shopClient("attacker", cartURL, "--count", "10"); a.Status["200"] != 0 || a.Errors == 0 {
			return fmt.Sprintf("attacker %+v", a)
		}
		return ""
	})
	t.Logf("the attacker's connections refused %s after the apply", took.Round(time.Millisecond))
	if f := e.shopClient("frontend", cartURL, "--count", "50"); f.Status["200"] != 50 {
		t.Errorf("frontend GET under the ALLOW policy: %+v, want 50 answered 200", f)
		t.Logf("warnings of the weft pods:\n%s", e.weftWarnings(40))
	}
	// Application level: POST /admin refused with 403, on a kept-alive
	// connection that then serves the next request
	post := e.shopClient("frontend", cartURL+"admin/users", "--count", "5", "--method", "POST", "--keepalive")
	if post.Status["403"] != 5 {
		t.Errorf("frontend POST /admin/users: %+v, want 5 answered 403", post)
	}
	if get := e.shopClient("frontend", cartURL+"admin/users", "--count", "5", "--keepalive"); get.Status["200"] != 5 {
		t.Errorf("frontend GET /admin/users: %+v, want 5 answered 200 (only POSTs are refused)", get)
	}
	for _, name := range []string{"cart-callers", "cart-no-admin-writes"} {
		out := e.kubectl("-n", "shop", "get", "authorizationpolicy", name, "-o", `jsonpath={.status.conditions[?(@.type=="Accepted")].status}`)
		if strings.TrimSpace(out) != "True" {
			t.Errorf("AuthorizationPolicy %s Accepted=%q, want True", name, out)
		}
	}
}

func testAuthzDenyBeatsAllow(t *testing.T, e *env) {
	deny := `apiVersion: policy.weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: cart-freeze, namespace: shop}
spec:
  targetRefs: [{group: "", kind: Pod, selector: {matchLabels: {app: cart}}}]
  action: DENY
  enforcementLevel: Network
  rules:
  - sources: [{type: ServiceAccount, serviceAccount: {namespace: shop, name: frontend}}]
`
	applyYAML(t, deny)
	e.eventually(30*time.Second, "DENY beats the ALLOW for frontend", func() string {
		if f := e.shopClient("frontend", cartURL, "--count", "10"); f.Status["200"] != 0 {
			return fmt.Sprintf("frontend %+v", f)
		}
		return ""
	})
	e.kubectl("-n", "shop", "delete", "authorizationpolicy", "cart-freeze")
	e.eventually(30*time.Second, "frontend allowed again once the DENY is removed", func() string {
		if f := e.shopClient("frontend", cartURL, "--count", "10"); f.Status["200"] != 10 {
			return fmt.Sprintf("frontend %+v", f)
		}
		return ""
	})
	e.kubectl("delete", "--ignore-not-found", "-f", filepath.Join("testdata", "authz", "policies.yaml"))
}
