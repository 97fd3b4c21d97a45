// Package authz is the destination node's authorization decision: it
// compiles the AuthzPolicy list of a NodePolicy once (Compile) and answers,
// for a verified peer identity and a local workload, whether a connection
// (Workload.Connection) or an HTTP request (Workload.Request) is allowed and
// which policy decided.
//
// Semantics (GEP-3779, plus Weft's DENY and Application level):
//   - a workload no policy selects: everything is allowed;
//   - a request that matches a rule of a DENY policy is refused (deny wins);
//   - else, when the workload has ALLOW policies, it is allowed only if it
//     matches a rule of one of them; with none it is allowed;
//   - a rule matches when the peer matches one of its sources (any peer
//     when the policy omitted them, none when it listed none), the
//     destination port one of its ports (any when none), and, at
//     Application level, the request one of its http matches (HTTPRoute
//     semantics, evaluated by the route package; any when none).
//
// Rules of Application-level policies are decided per request: a
// connection they might refuse is served at L7 (Decision.NeedL7), so that a
// refused request gets 403 and the connection stays usable. Everything
// else is decided once per connection, before the pod sees a byte.
//
// The package is pure: no I/O, no logging. weftctl authz runs the same
// code on a policy it resolves from the cluster.
package authz

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weft-mesh/weft/agent/proxy/route"
	"github.com/weft-mesh/weft/api/mesh"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// ErrInvalid wraps every Compile error.
var ErrInvalid = errors.New("invalid authorization policy")

// Table is the compiled authorization of one node. The zero Table (and a
// nil *Table) selects no workload. It is immutable.
type Table struct {
	byWorkload map[string]*Workload
}

// Workload is the set of policies that select one workload.
type Workload struct {
	name  string
	td    spiffeid.TrustDomain
	allow []*policy
	deny  []*policy
	// application: some policy is Application level (its connections may
	// need L7)
	application bool
}

type policy struct {
	name        string
	action      weftv1.AuthzAction
	application bool
	rules       []rule
}

type rule struct {
	anySource  bool
	ids        map[spiffeid.ID]bool
	namespaces map[string]bool
	ports      []uint32
	// http: nil matches any request
	http *route.Table
}

// Compile validates the authorization policies of pol and compiles them.
// trustDomain names the workload identities namespace sources match (the
// policy's own when empty).
func Compile(pol *weftv1.NodePolicy, trustDomain spiffeid.TrustDomain) (*Table, error) {
	if td := pol.GetTrustDomain(); td != "" {
		t, err := spiffeid.TrustDomainFromString(td)
		if err != nil {
			return nil, fmt.Errorf("%w: trust domain %q: %v", ErrInvalid, td, err)
		}
		trustDomain = t
	}
	if err := pol.ValidateAuthz(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	t := &Table{byWorkload: map[string]*Workload{}}
	for _, a := range pol.GetAuthz() {
		p, err := compilePolicy(a)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, a.GetName(), err)
		}
		for _, name := range a.GetWorkloads() {
			w := t.byWorkload[name]
			if w == nil {
				w = &Workload{name: name, td: trustDomain}
				t.byWorkload[name] = w
			}
			if p.action == weftv1.AuthzAction_AUTHZ_ACTION_DENY {
				w.deny = append(w.deny, p)
			} else {
				w.allow = append(w.allow, p)
			}
			w.application = w.application || p.application
		}
	}
	return t, nil
}

func compilePolicy(a *weftv1.AuthzPolicy) (*policy, error) {
	p := &policy{name: a.GetName(), action: a.GetAction(), application: a.GetApplication()}
	for i, r := range a.GetRules() {
		cr := rule{anySource: r.GetAnySource(), ports: slices.Clone(r.GetPorts())}
		for _, s := range r.GetSources() {
			if ns := s.GetNamespace(); ns != "" {
				if cr.namespaces == nil {
					cr.namespaces = map[string]bool{}
				}
				cr.namespaces[ns] = true
				continue
			}
			id, err := spiffeid.FromString(s.GetIdentity())
			if err != nil {
				return nil, fmt.Errorf("rule %d: %w", i, err)
			}
			if cr.ids == nil {
				cr.ids = map[spiffeid.ID]bool{}
			}
			cr.ids[id] = true
		}
		if len(r.GetHttp()) > 0 {
			t := &weftv1.RouteTable{Kind: weftv1.RouteKind_ROUTE_KIND_HTTP,
				Rules: []*weftv1.Rule{{Route: a.GetName(), RouteKind: weftv1.RouteKind_ROUTE_KIND_HTTP, Index: uint32(i)}}}
			for _, m := range r.GetHttp() {
				t.Matches = append(t.Matches, &weftv1.Match{Http: m})
			}
			rt, err := route.Compile(t)
			if err != nil {
				return nil, fmt.Errorf("rule %d: %w", i, err)
			}
			cr.http = rt
		}
		p.rules = append(p.rules, cr)
	}
	return p, nil
}

// For returns the policies that select workload ("namespace/name"); nil
// when none does (everything is allowed).
func (t *Table) For(workload string) *Workload {
	if t == nil {
		return nil
	}
	return t.byWorkload[workload]
}

// Len is the number of workloads some policy selects.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.byWorkload)
}

// Application reports whether some policy of w is Application level.
func (w *Workload) Application() bool { return w != nil && w.application }

// Decision is what a check decided and why.
type Decision struct {
	// Allowed: let it through. False with NeedL7: serve the connection at
	// L7 and decide per request. False without: refuse.
	Allowed bool
	NeedL7  bool
	// Policy is "namespace/name" of the deciding policy; empty when no
	// single policy decided (no policy, or no ALLOW rule matched).
	Policy string
	// Rule is the index of the deciding rule in Policy; -1 when none.
	Rule int
	// Reason says it in words, for logs and weftctl.
	Reason string
}

// Request is an HTTP request as the decision sees it.
type Request struct {
	Method string
	// Path is the request target (path and query).
	Path   string
	Header http.Header
}

// verdict of one rule.
type verdict uint8

const (
	no verdict = iota
	yes
	maybe // needs the request
)

func (w *Workload) sourceMatches(r *rule, peer spiffeid.ID) bool {
	if r.anySource || r.ids[peer] {
		return true
	}
	if len(r.namespaces) == 0 {
		return false
	}
	ns, _, err := mesh.ParseWorkloadID(w.td, peer)
	return err == nil && r.namespaces[ns]
}

// l4 decides a rule on what a connection shows.
func (w *Workload) l4(p *policy, r *rule, peer spiffeid.ID, port uint32) verdict {
	if !w.sourceMatches(r, peer) {
		return no
	}
	if len(r.ports) > 0 && !slices.Contains(r.ports, port) {
		return no
	}
	if p.application {
		return maybe
	}
	return yes
}

// l7 decides a rule for one request. A request whose matching the route
// package refuses (a value too long for a regular expression) matches a
// DENY rule and no ALLOW rule: what cannot be evaluated is refused.
func (w *Workload) l7(ctx context.Context, p *policy, r *rule, peer spiffeid.ID, port uint32, req *Request) bool {
	if w.l4(p, r, peer, port) == no {
		return false
	}
	if r.http == nil {
		return true
	}
	_, err := r.http.SelectContext(ctx, &route.Request{Method: req.Method, Path: req.Path, Header: req.Header})
	switch {
	case err == nil:
		return true
	case errors.Is(err, route.ErrNoRoute):
		return false
	default:
		return p.action == weftv1.AuthzAction_AUTHZ_ACTION_DENY
	}
}

// Connection decides a new connection from peer to port of the workload.
// A nil w (no policy) allows it.
func (w *Workload) Connection(peer spiffeid.ID, port uint32) Decision {
	if w == nil {
		return Decision{Allowed: true, Rule: -1, Reason: "no authorization policy selects the workload"}
	}
	needL7 := false
	for _, p := range w.deny {
		for i := range p.rules {
			switch w.l4(p, &p.rules[i], peer, port) {
			case yes:
				return Decision{Policy: p.name, Rule: i, Reason: fmt.Sprintf("denied by rule %d of DENY policy %s", i, p.name)}
			case maybe:
				needL7 = true
			}
		}
	}
	l7 := Decision{NeedL7: true, Rule: -1, Reason: "decided per request (Application-level policy)"}
	if len(w.allow) == 0 {
		if needL7 {
			return l7
		}
		return Decision{Allowed: true, Rule: -1, Reason: "no DENY rule matches and no ALLOW policy selects the workload"}
	}
	var allowed *Decision
	allowMaybe := false
	for _, p := range w.allow {
		for i := range p.rules {
			switch w.l4(p, &p.rules[i], peer, port) {
			case yes:
				if allowed == nil {
					allowed = &Decision{Allowed: true, Policy: p.name, Rule: i, Reason: fmt.Sprintf("allowed by rule %d of ALLOW policy %s", i, p.name)}
				}
			case maybe:
				allowMaybe = true
			}
		}
	}
	switch {
	case allowed == nil && !allowMaybe:
		// no request of the connection can be allowed
		return w.noAllow()
	case allowed != nil && !needL7:
		return *allowed
	}
	return l7
}

func (w *Workload) noAllow() Decision {
	names := make([]string, len(w.allow))
	for i, p := range w.allow {
		names[i] = p.name
	}
	return Decision{Rule: -1, Reason: "no rule of the workload's ALLOW policies matches: " + strings.Join(names, ", ")}
}

// Request decides one HTTP request from peer to port of the workload. A nil
// w allows it. ctx bounds the regular expression matching (route package).
func (w *Workload) Request(ctx context.Context, peer spiffeid.ID, port uint32, req *Request) Decision {
	if w == nil {
		return Decision{Allowed: true, Rule: -1, Reason: "no authorization policy selects the workload"}
	}
	for _, p := range w.deny {
		for i := range p.rules {
			if w.l7(ctx, p, &p.rules[i], peer, port, req) {
				return Decision{Policy: p.name, Rule: i, Reason: fmt.Sprintf("denied by rule %d of DENY policy %s", i, p.name)}
			}
		}
	}
	if len(w.allow) == 0 {
		return Decision{Allowed: true, Rule: -1, Reason: "no DENY rule matches and no ALLOW policy selects the workload"}
	}
	for _, p := range w.allow {
		for i := range p.rules {
			if w.l7(ctx, p, &p.rules[i], peer, port, req) {
				return Decision{Allowed: true, Policy: p.name, Rule: i, Reason: fmt.Sprintf("allowed by rule %d of ALLOW policy %s", i, p.name)}
			}
		}
	}
	return w.noAllow()
}

// CanonicalPath reports whether the path of a request target (before any
// '?') is the one an application sees after the usual normalisation: no
// empty segment ("//"), no "." or ".." segment, no backslash and no
// percent-encoded unreserved character or slash. The inbound refuses (400)
// a request whose path is not, where Application-level policy applies, so
// that "/admin" cannot be reached as "//admin", "/x/../admin" or
// "/%61dmin" past a rule on PathPrefix /admin.
func CanonicalPath(target string) bool {
	p, _, _ := strings.Cut(target, "?")
	if p == "" || p[0] != '/' {
		return p == "*"
	}
	if strings.Contains(p, "//") || strings.ContainsRune(p, '\\') {
		return false
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			continue
		}
		if i+2 >= len(p) {
			return false
		}
		c, ok := unhex(p[i+1], p[i+2])
		if !ok || c == '/' || c == '\\' || c == '.' || c == '-' || c == '_' || c == '~' ||
			c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			return false
		}
	}
	return true
}

func unhex(a, b byte) (byte, bool) {
	h := func(c byte) (byte, bool) {
		switch {
		case c >= '0' && c <= '9':
			return c - '0', true
		case c >= 'a' && c <= 'f':
			return c - 'a' + 10, true
		case c >= 'A' && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	x, ok1 := h(a)
	y, ok2 := h(b)
	return x<<4 | y, ok1 && ok2
}
