package resolve

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/weft-mesh/weft/api/mesh"
	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Authorization policies (policy.weft.dev AuthorizationPolicy) resolve like
// routes: each is compiled once into a weftv1.AuthzPolicy (CompileAuthz),
// its selectors pick the enrolled pods of its namespace, and every node's
// policy carries the policies that select one of its workloads, with those
// workloads named. The destination node's inbound enforces them.
//
// A policy that does not compile gets Accepted=False with the reason and
// changes nothing in force: the generation last accepted stays (see
// lastAccepted), or, when there is none, the policy is not pushed at all.

// AuthzRegexBudget is the share of a node's budget of compiled regular
// expressions (weftv1.Limits.MaxNodeRegexProgramSize) that authorization
// policies may use together, cluster-wide; routes keep the rest. Policies
// are admitted by namespace and name; one whose patterns would go over is
// not accepted (UnsupportedValue), so that no node policy goes over the
// budget the agent enforces by NACKing it whole.
const AuthzRegexBudget = 10_000

// AuthzInForce is an AuthorizationPolicy as it is enforced: the compiled
// rules of an accepted generation and the selectors of its targets.
type AuthzInForce struct {
	Generation int64
	// Spec is the accepted spec, for the policy's status.inForce.
	Spec      policyv1a1.AuthorizationPolicySpec
	Selectors []labels.Selector
	// Policy has no workloads: they are chosen per round.
	Policy *weftv1.AuthzPolicy
}

// AuthzStatus is what Weft wants in one AuthorizationPolicy's status.
// Conditions carry no LastTransitionTime (the status writer manages it).
type AuthzStatus struct {
	Namespace  string
	Name       string
	Generation int64
	Conditions []metav1.Condition
	// InForce is what is enforced (status.inForce); nil: nothing.
	InForce *policyv1a1.PolicyInForce
}

// authzProblem is why a policy is not accepted.
type authzProblem struct {
	reason string
	msg    string
}

// authzProblems collects why a policy is not accepted.
type authzProblems []authzProblem

func (ps *authzProblems) add(reason, format string, a ...any) {
	*ps = append(*ps, authzProblem{reason, fmt.Sprintf(format, a...)})
}

// CompileAuthz compiles an AuthorizationPolicy. serviceAccountExists, when
// not nil, says whether a ServiceAccount exists (a source naming one that
// does not is UnknownServiceAccount). A policy with problems returns nil and
// the Accepted=False condition to write; a valid one returns the Accepted
// condition too.
func CompileAuthz(p *policyv1a1.AuthorizationPolicy, td spiffeid.TrustDomain, serviceAccountExists func(ns, name string) bool) (*AuthzInForce, metav1.Condition) {
	var probs authzProblems
	out := &AuthzInForce{Generation: p.Generation, Spec: p.Spec, Policy: &weftv1.AuthzPolicy{Name: p.Namespace + "/" + p.Name}}
	authzMode(p, out.Policy, &probs)
	out.Selectors = authzTargets(p, &probs)
	if n := len(p.Spec.Rules); n > weftv1.MaxAuthzRules {
		probs.add(policyv1a1.ReasonUnsupportedValue, "%d rules, at most %d", n, weftv1.MaxAuthzRules)
	}
	for i := range p.Spec.Rules {
		out.Policy.Rules = append(out.Policy.Rules, authzRule(p, i, out.Policy.Application, td, serviceAccountExists, &probs))
	}
	if len(probs) == 0 {
		// what the agent would refuse, the controller refuses first (sizes,
		// regular expression budgets): a push it NACKs would freeze the node
		if err := out.Policy.ValidateAuthz(nil); err != nil {
			probs.add(policyv1a1.ReasonUnsupportedValue, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	}
	if len(probs) > 0 {
		msgs := make([]string, len(probs))
		for i, pr := range probs {
			msgs[i] = pr.msg
		}
		return nil, metav1.Condition{Type: policyv1a1.ConditionAccepted, Status: metav1.ConditionFalse,
			Reason: probs[0].reason, Message: truncate(strings.Join(msgs, "; ")), ObservedGeneration: p.Generation}
	}
	return out, metav1.Condition{Type: policyv1a1.ConditionAccepted, Status: metav1.ConditionTrue,
		Reason: policyv1a1.ReasonAccepted, Message: "the policy is in force", ObservedGeneration: p.Generation}
}

// authzMode sets the policy's action and level.
func authzMode(p *policyv1a1.AuthorizationPolicy, out *weftv1.AuthzPolicy, probs *authzProblems) {
	switch p.Spec.Action {
	case policyv1a1.ActionAllow:
		out.Action = weftv1.AuthzAction_AUTHZ_ACTION_ALLOW
	case policyv1a1.ActionDeny:
		out.Action = weftv1.AuthzAction_AUTHZ_ACTION_DENY
	default:
		probs.add(policyv1a1.ReasonUnsupportedValue, "action %q is not ALLOW or DENY", p.Spec.Action)
	}
	switch p.Spec.EnforcementLevel {
	case policyv1a1.LevelNetwork:
	case policyv1a1.LevelApplication:
		out.Application = true
	default:
		probs.add(policyv1a1.ReasonUnsupportedValue, "enforcementLevel %q is not Network or Application", p.Spec.EnforcementLevel)
	}
}

// authzTargets compiles the targetRefs' pod selectors.
func authzTargets(p *policyv1a1.AuthorizationPolicy, probs *authzProblems) []labels.Selector {
	if len(p.Spec.TargetRefs) == 0 {
		probs.add(policyv1a1.ReasonInvalidTarget, "no targetRefs")
	}
	var out []labels.Selector
	for i, t := range p.Spec.TargetRefs {
		if (t.Group != "" && t.Group != "core") || t.Kind != "Pod" {
			probs.add(policyv1a1.ReasonInvalidTarget, "targetRefs[%d]: group %q kind %q: only Pods (group \"\") can be targeted", i, t.Group, t.Kind)
			continue
		}
		if t.Selector == nil {
			probs.add(policyv1a1.ReasonInvalidSelector, "targetRefs[%d]: no selector (an empty selector selects every pod of the namespace)", i)
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(t.Selector)
		if err != nil {
			probs.add(policyv1a1.ReasonInvalidSelector, "targetRefs[%d].selector: %v", i, err)
			continue
		}
		out = append(out, sel)
	}
	return out
}

// authzRule compiles rules[i]: its sources, ports and (at Application
// level) HTTP matches.
func authzRule(p *policyv1a1.AuthorizationPolicy, i int, application bool, td spiffeid.TrustDomain, serviceAccountExists func(ns, name string) bool, probs *authzProblems) *weftv1.AuthzRule {
	r := &p.Spec.Rules[i]
	where := fmt.Sprintf("rules[%d]", i)
	or := &weftv1.AuthzRule{AnySource: r.Sources == nil}
	for j, s := range r.Sources {
		src, reason, msg := authzSource(p.Namespace, &s, td, serviceAccountExists)
		if reason != "" {
			probs.add(reason, "%s.sources[%d]: %s", where, j, msg)
			continue
		}
		if !slices.ContainsFunc(or.Sources, func(x *weftv1.AuthzSource) bool { return proto.Equal(x, src) }) {
			or.Sources = append(or.Sources, src)
		}
	}
	if na := r.NetworkAttributes; na != nil {
		for _, port := range na.Ports {
			if port < 1 || port > 65535 {
				probs.add(policyv1a1.ReasonUnsupportedValue, "%s: port %d is out of range 1-65535", where, port)
				continue
			}
			if !slices.Contains(or.Ports, uint32(port)) {
				or.Ports = append(or.Ports, uint32(port))
			}
		}
	}
	if len(r.HTTPMatches) > 0 && !application {
		probs.add(policyv1a1.ReasonUnsupportedValue, "%s: httpMatches need enforcementLevel Application", where)
	}
	for j := range r.HTTPMatches {
		m := &r.HTTPMatches[j]
		if len(m.QueryParams) > 0 {
			probs.add(policyv1a1.ReasonUnsupportedValue, "%s.httpMatches[%d]: queryParams are not supported in authorization", where, j)
			continue
		}
		hm, err := httpMatch(m)
		if err != nil {
			probs.add(policyv1a1.ReasonUnsupportedValue, "%s.httpMatches[%d]: %v", where, j, err)
			continue
		}
		or.Http = append(or.Http, hm)
	}
	return or
}

// truncate keeps a condition message within the 32 KiB the API allows.
func truncate(s string) string {
	const max = 4096
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

func authzSource(policyNS string, s *policyv1a1.AuthorizationSource, td spiffeid.TrustDomain, exists func(ns, name string) bool) (*weftv1.AuthzSource, string, string) {
	switch s.Type {
	case policyv1a1.SourceSPIFFE:
		if s.SPIFFE == nil {
			return nil, policyv1a1.ReasonInvalidSource, "type SPIFFE without spiffe"
		}
		id, err := spiffeid.FromString(*s.SPIFFE)
		if err != nil {
			return nil, policyv1a1.ReasonInvalidSource, fmt.Sprintf("spiffe %q: %v", *s.SPIFFE, err)
		}
		return &weftv1.AuthzSource{Identity: id.String()}, "", ""
	case policyv1a1.SourceServiceAccount:
		sa := s.ServiceAccount
		if sa == nil {
			return nil, policyv1a1.ReasonInvalidSource, "type ServiceAccount without serviceAccount"
		}
		ns := policyNS
		if sa.Namespace != nil && *sa.Namespace != "" {
			ns = string(*sa.Namespace)
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, policyv1a1.ReasonInvalidSource, fmt.Sprintf("namespace %q: %s", ns, strings.Join(errs, "; "))
		}
		if sa.Name == "*" {
			return &weftv1.AuthzSource{Namespace: ns}, "", ""
		}
		id, err := mesh.WorkloadID(td, ns, sa.Name)
		if err != nil {
			return nil, policyv1a1.ReasonInvalidSource, err.Error()
		}
		if exists != nil && !exists(ns, sa.Name) {
			return nil, policyv1a1.ReasonUnknownServiceAccount, fmt.Sprintf("ServiceAccount %s/%s does not exist", ns, sa.Name)
		}
		return &weftv1.AuthzSource{Identity: id.String()}, "", ""
	}
	return nil, policyv1a1.ReasonInvalidSource, fmt.Sprintf("type %q is not ServiceAccount or SPIFFE", s.Type)
}

// lastAccepted is what stays in force for a policy that does not compile:
// this controller's memory of an earlier round (Input.AuthzInForce), else
// the accepted spec recorded in the policy's status.inForce, which every
// replica reads and which survives restarts. The recorded spec is compiled
// without the ServiceAccount check: an account deleted since does not
// make it unsafe (no workload has its identity until it is recreated).
func lastAccepted(in *Input, p *policyv1a1.AuthorizationPolicy, td spiffeid.TrustDomain) *AuthzInForce {
	if prev := in.AuthzInForce[p.UID]; prev != nil {
		return prev
	}
	rec := p.Status.InForce
	if rec == nil || rec.Generation > p.Generation {
		return nil
	}
	old := *p
	old.Generation, old.Spec = rec.Generation, rec.Spec
	c, _ := CompileAuthz(&old, td, nil)
	return c
}

// resolveAuthz compiles every AuthorizationPolicy and returns, per node,
// the policies that select its workloads, the statuses, and what is in
// force now (for the next round's Input.AuthzInForce).
func (r *resolver) resolveAuthz(in *Input, workloads map[string][]*weftv1.Workload) (map[string][]*weftv1.AuthzPolicy, []AuthzStatus, map[types.UID]*AuthzInForce) {
	return r.resolveAuthzIn(in, workloads, nil)
}

// resolveAuthzIn is resolveAuthz that selects pods only for the policies
// of the namespaces in only (nil: every namespace); the others' are left
// out of the policies per node (their statuses are all there).
func (r *resolver) resolveAuthzIn(in *Input, workloads map[string][]*weftv1.Workload, only map[string]bool) (map[string][]*weftv1.AuthzPolicy, []AuthzStatus, map[types.UID]*AuthzInForce) {
	compiled, statuses, inForce := r.compileAuthz(in)
	return r.selectAuthz(in, workloads, compiled, only), statuses, inForce
}

// compileAuthz compiles every AuthorizationPolicy: what is in force of
// each (compiled, in the order of in.AuthorizationPolicies; nil: nothing),
// their statuses, and what is in force by UID.
func (r *resolver) compileAuthz(in *Input) ([]*AuthzInForce, []AuthzStatus, map[types.UID]*AuthzInForce) {
	if len(in.AuthorizationPolicies) == 0 {
		return nil, nil, nil
	}
	exists := serviceAccountLookup(in)
	compiled := make([]*AuthzInForce, len(in.AuthorizationPolicies))
	statuses := make([]AuthzStatus, 0, len(in.AuthorizationPolicies))
	inForce := map[types.UID]*AuthzInForce{}
	share := &authzRegexShare{r: r, seen: map[string]bool{}}
	for i := range in.AuthorizationPolicies {
		p := &in.AuthorizationPolicies[i]
		c, cond := r.compileAuthzInForce(in, p, exists, share)
		st := AuthzStatus{Namespace: p.Namespace, Name: p.Name, Generation: p.Generation, Conditions: []metav1.Condition{cond}}
		if c != nil {
			st.InForce = &policyv1a1.PolicyInForce{Generation: c.Generation, Spec: c.Spec}
			inForce[p.UID] = c
		}
		statuses = append(statuses, st)
		compiled[i] = c
	}
	return compiled, statuses, inForce
}

// selectAuthz is, per node, the policies in force (compiled, as
// compileAuthz returns it) that select its workloads, with those workloads
// named; only for the policies of the namespaces in only (nil: every
// namespace).
func (r *resolver) selectAuthz(in *Input, workloads map[string][]*weftv1.Workload, compiled []*AuthzInForce, only map[string]bool) map[string][]*weftv1.AuthzPolicy {
	if len(compiled) == 0 || only != nil && len(only) == 0 {
		return nil
	}
	byNS := enrolledPodsByNamespace(in, workloads, only)
	indexes := map[string]*podLabels{} // by namespace, built when a policy there needs it
	perNode := map[string][]*weftv1.AuthzPolicy{}
	for i, c := range compiled {
		ns := in.AuthorizationPolicies[i].Namespace
		if c == nil || only != nil && !only[ns] {
			continue
		}
		ix := indexes[ns]
		if ix == nil {
			ix = indexPodLabels(byNS[ns])
			indexes[ns] = ix
		}
		for node, names := range selectedByNode(c, ix) {
			ap := proto.Clone(c.Policy).(*weftv1.AuthzPolicy)
			ap.Workloads = names
			perNode[node] = append(perNode[node], ap)
		}
	}
	for _, ps := range perNode {
		slices.SortFunc(ps, func(a, b *weftv1.AuthzPolicy) int { return cmp.Compare(a.Name, b.Name) })
	}
	return perNode
}

// changedAuthzNamespaces are the namespaces of the policies whose status
// differs between was and is (an earlier and a later compileAuthz), or
// that one of them does not have. With the same trust domain and
// ServiceAccounts, a policy with the same status (its generation, its
// condition and the spec in force) is in force alike.
func changedAuthzNamespaces(was, is []AuthzStatus) map[string]bool {
	prev := make(map[objKey]*AuthzStatus, len(was))
	for i := range was {
		prev[objKey{was[i].Namespace, was[i].Name}] = &was[i]
	}
	changed := map[string]bool{}
	for i := range is {
		st := &is[i]
		k := objKey{st.Namespace, st.Name}
		if p := prev[k]; p == nil || !SameAuthzStatus(p, st) {
			changed[st.Namespace] = true
		}
		delete(prev, k)
	}
	for k := range prev {
		changed[k.ns] = true
	}
	return changed
}

// SameAuthzStatus is equality.Semantic.DeepEqual of two statuses of one
// policy, quick when their specs in force are the same memory (the
// source's listing shares an unchanged policy's slices from round to
// round): at 10,000 policies the deep comparison of every one was a third
// of a policy change's round.
func SameAuthzStatus(a, b *AuthzStatus) bool {
	if a.Generation != b.Generation || (a.InForce == nil) != (b.InForce == nil) ||
		!slices.EqualFunc(a.Conditions, b.Conditions, func(x, y metav1.Condition) bool { return x == y }) {
		return false
	}
	if a.InForce == nil {
		return true
	}
	x, y := &a.InForce.Spec, &b.InForce.Spec
	if a.InForce.Generation == b.InForce.Generation && x.Action == y.Action && x.EnforcementLevel == y.EnforcementLevel &&
		sameArray(x.TargetRefs, y.TargetRefs) && sameArray(x.Rules, y.Rules) {
		return true
	}
	return equality.Semantic.DeepEqual(a.InForce, b.InForce)
}

// sameArray: a and b are the same elements in the same memory.
func sameArray[E any](a, b []E) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// compileAuthzInForce compiles p within the regular expression share; when
// it is not accepted, its last accepted generation stays in force if it
// still fits (the condition says so).
func (r *resolver) compileAuthzInForce(in *Input, p *policyv1a1.AuthorizationPolicy, exists func(ns, name string) bool, share *authzRegexShare) (*AuthzInForce, metav1.Condition) {
	c, cond := CompileAuthz(p, r.ix.td, exists)
	if c != nil {
		if add, ok := share.fits(c); !ok {
			c = nil
			cond = metav1.Condition{Type: policyv1a1.ConditionAccepted, Status: metav1.ConditionFalse, Reason: policyv1a1.ReasonUnsupportedValue, ObservedGeneration: p.Generation,
				Message: fmt.Sprintf("its regular expressions (program size %d) would bring the authorization policies' to %d, over their share %d of the node budget; policies before it by namespace and name keep theirs", add, r.authzRegex+add, AuthzRegexBudget)}
		}
	}
	if c == nil {
		if prev := lastAccepted(in, p, r.ix.td); prev != nil {
			if _, ok := share.fits(prev); ok {
				c = prev
				cond.Message = truncate(fmt.Sprintf("%s; generation %d stays in force", cond.Message, prev.Generation))
			}
		}
	}
	return c, cond
}

// authzRegexShare is the authorization policies' share of the node regular
// expression budget, as the round fills it (r.authzRegex); a pattern is
// counted once.
type authzRegexShare struct {
	r    *resolver
	seen map[string]bool
}

// fits adds c's new regular expressions to the share, false (adding
// nothing) when they do not fit; add is their program size.
func (s *authzRegexShare) fits(c *AuthzInForce) (add int, ok bool) {
	pats := map[string]int{}
	for _, rule := range c.Policy.GetRules() {
		for _, m := range rule.GetHttp() {
			for pat := range (&weftv1.Match{Http: m}).RegexPatterns() {
				if _, dup := pats[pat]; !s.seen[pat] && !dup {
					n, _ := weftv1.RegexProgramSize(pat)
					pats[pat] = n
					add += n
				}
			}
		}
	}
	if s.r.authzRegex+add > AuthzRegexBudget {
		return add, false
	}
	for pat := range pats {
		s.seen[pat] = true
	}
	s.r.authzRegex += add
	return add, true
}

// serviceAccountLookup says whether a ServiceAccount exists; nil when the
// input lists none (not known: sources are not checked).
func serviceAccountLookup(in *Input) func(ns, name string) bool {
	if in.ServiceAccounts == nil {
		return nil
	}
	sas := map[objKey]bool{}
	for i := range in.ServiceAccounts {
		sas[objKey{in.ServiceAccounts[i].Namespace, in.ServiceAccounts[i].Name}] = true
	}
	return func(ns, name string) bool { return sas[objKey{ns, name}] }
}

// enrolledPodsByNamespace are the pods of workloads (every node's), by
// namespace; only those of the namespaces in only, when not nil.
func enrolledPodsByNamespace(in *Input, workloads map[string][]*weftv1.Workload, only map[string]bool) map[string][]*Pod {
	enrolled := map[objKey]bool{}
	for _, ws := range workloads {
		for _, w := range ws {
			if only == nil || only[w.Namespace] {
				enrolled[objKey{w.Namespace, w.Name}] = true
			}
		}
	}
	byNS := map[string][]*Pod{}
	for _, p := range in.Pods {
		if enrolled[objKey{p.Namespace, p.Name}] {
			byNS[p.Namespace] = append(byNS[p.Namespace], p)
		}
	}
	return byNS
}

// selectedByNode names, per node and sorted, the pods of ix that c
// selects.
func selectedByNode(c *AuthzInForce, ix *podLabels) map[string][]string {
	out := map[string][]string{}
	for _, i := range ix.selected(c.Selectors) {
		pod := ix.pods[i]
		out[pod.NodeName] = append(out[pod.NodeName], pod.Namespace+"/"+pod.Name)
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out
}
