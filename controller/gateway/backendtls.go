package gateway

import (
	"cmp"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/weft-mesh/weft/controller/resolve"
)

// policyState is one BackendTLSPolicy and what was decided about it.
type policyState struct {
	p *gwv1.BackendTLSPolicy
	// invalid is why the policy cannot apply (Accepted False, Invalid).
	invalid *reason
	// refs are the unusable caCertificateRefs (ResolvedRefs False).
	refs []reason
	// tls is what the gateway does toward the targets; tls.Invalid is set
	// when no CA certificate is usable (Accepted False,
	// NoValidCACertificate) or the policy is invalid.
	tls BackendTLS
	// targets has one entry per targetRef.
	targets []policyTarget
	// ancestors are the Gateways whose routes send to a target.
	ancestors map[objKey]*gatewayState
}

// policyTarget is one targetRef: a Service, or one port of it by name.
type policyTarget struct {
	svc     objKey
	section string
	// problem says why it does not apply (TargetNotFound, Invalid,
	// Conflicted); nil when it does.
	problem *reason
}

// svcSection is a Service, or one named port of it.
type svcSection struct {
	svc     objKey
	section string
}

// policies holds the BackendTLSPolicies: every one by the Services it
// targets, and the one that applies per Service (port).
type policies struct {
	all       []*policyState
	byService map[objKey][]*policyState
	applies   map[svcSection]*policyState
}

// newPolicies validates every BackendTLSPolicy and settles conflicts: per
// Service and sectionName the oldest policy (then the first by
// namespace/name) applies; the others are Conflicted for that target.
func newPolicies(ix *index) *policies {
	ps := &policies{byService: map[objKey][]*policyState{}, applies: map[svcSection]*policyState{}}
	for i := range ix.in.BackendTLSPolicies {
		ps.all = append(ps.all, ix.newPolicy(&ix.in.BackendTLSPolicies[i]))
	}
	slices.SortStableFunc(ps.all, func(a, b *policyState) int {
		if c := a.p.CreationTimestamp.Compare(b.p.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.p.Namespace, b.p.Namespace), strings.Compare(a.p.Name, b.p.Name))
	})
	for _, p := range ps.all {
		for i := range p.targets {
			t := &p.targets[i]
			if (t.problem == nil || t.problem.reason == string(gwv1.PolicyReasonTargetNotFound)) && !slices.Contains(ps.byService[t.svc], p) {
				ps.byService[t.svc] = append(ps.byService[t.svc], p)
			}
			if t.problem != nil {
				continue
			}
			k := svcSection{t.svc, t.section}
			if w := ps.applies[k]; w != nil {
				what := "Service " + t.svc.String()
				if t.section != "" {
					what += " port " + t.section
				}
				t.problem = &reason{string(gwv1.PolicyReasonConflicted), fmt.Sprintf("BackendTLSPolicy %s/%s is older (or first by namespace/name) and already applies to %s; only one policy applies per Service and sectionName", w.p.Namespace, w.p.Name, what)}
				continue
			}
			ps.applies[k] = p
		}
	}
	return ps
}

// newPolicy validates one policy and reads its CA certificates.
func (ix *index) newPolicy(p *gwv1.BackendTLSPolicy) *policyState {
	v := &p.Spec.Validation
	ps := &policyState{p: p, ancestors: map[objKey]*gatewayState{}, tls: BackendTLS{Policy: p.Namespace + "/" + p.Name, Hostname: strings.ToLower(string(v.Hostname))}}
	var invalids []string
	invalid := func(msg string) { invalids = append(invalids, msg) }
	if err := checkHostname(gwv1.Hostname(v.Hostname)); err != nil || strings.HasPrefix(string(v.Hostname), "*") {
		invalid(fmt.Sprintf("validation.hostname %q must be a DNS name without a wildcard (it is the SNI sent to the backend); fix it", v.Hostname))
	}
	for i, san := range v.SubjectAltNames {
		if msg := checkSAN(san); msg != "" {
			invalid(fmt.Sprintf("validation.subjectAltNames[%d]: %s", i, msg))
			continue
		}
		val := string(san.Hostname)
		if san.Type == gwv1.URISubjectAltNameType {
			val = string(san.URI)
		}
		ps.tls.SubjectAltNames = append(ps.tls.SubjectAltNames, SubjectAltName{Type: san.Type, Value: val})
	}
	if len(p.Spec.Options) > 0 {
		invalid("options are not supported by Weft, and ignoring a TLS setting could weaken the connection; remove them")
	}
	ix.policyCAs(ps, invalid)
	for _, t := range p.Spec.TargetRefs {
		ps.targets = append(ps.targets, ix.policyTarget(p.Namespace, t))
	}
	if len(invalids) > 0 {
		ps.invalid = &reason{string(gwv1.PolicyReasonInvalid), sentences(invalids...)}
		ps.tls.Invalid = ps.invalid.msg
	}
	return ps
}

// policyCAs reads caCertificateRefs, or takes wellKnownCACertificates.
func (ix *index) policyCAs(ps *policyState, invalid func(string)) {
	v := &ps.p.Spec.Validation
	wk := ""
	if v.WellKnownCACertificates != nil {
		wk = string(*v.WellKnownCACertificates)
	}
	switch {
	case len(v.CACertificateRefs) > 0 && wk != "":
		invalid("validation sets both caCertificateRefs and wellKnownCACertificates; keep one")
	case len(v.CACertificateRefs) == 0 && wk == "":
		invalid("validation sets neither caCertificateRefs nor wellKnownCACertificates; set one")
	case wk != "" && wk != string(gwv1.WellKnownCACertificatesSystem):
		invalid(fmt.Sprintf("validation.wellKnownCACertificates %q is not supported; use System or caCertificateRefs", wk))
	case wk != "":
		ps.tls.System = true
	}
	for i, r := range v.CACertificateRefs {
		ca, p := ix.caCertificate(string(r.Group), string(r.Kind), ps.p.Namespace, string(r.Name), nil, fmt.Sprintf("validation.caCertificateRefs[%d]", i))
		if p == nil {
			ps.tls.CACertificates = append(ps.tls.CACertificates, ca)
			continue
		}
		rsn := gwv1.BackendTLSPolicyReasonInvalidCACertificateRef
		if p.class == badKind {
			rsn = gwv1.BackendTLSPolicyReasonInvalidKind
		}
		ps.refs = append(ps.refs, reason{string(rsn), p.msg})
	}
	if len(v.CACertificateRefs) > 0 && len(ps.tls.CACertificates) == 0 {
		_, msg := firstReason(ps.refs)
		ps.tls.Invalid = "no CA certificate of BackendTLSPolicy " + ps.tls.Policy + " is usable: " + msg
	}
}

func checkSAN(san gwv1.SubjectAltName) string {
	switch san.Type {
	case gwv1.HostnameSubjectAltNameType:
		if err := checkHostname(san.Hostname); err != nil {
			return err.Error() + "; set hostname to a DNS name"
		}
	case gwv1.URISubjectAltNameType:
		u, err := url.Parse(string(san.URI))
		if err != nil || u.Scheme == "" || u.Opaque == "" && u.Host == "" {
			return fmt.Sprintf("uri %q is not an absolute URI with a scheme (for example spiffe://trust.domain/ns/app/sa/app); fix it", san.URI)
		}
	default:
		return fmt.Sprintf("type %q is unknown; use Hostname or URI", san.Type)
	}
	return ""
}

// policyTarget resolves one targetRef in the policy's namespace.
func (ix *index) policyTarget(ns string, t gwv1.LocalPolicyTargetReferenceWithSectionName) policyTarget {
	pt := policyTarget{svc: objKey{ns, string(t.Name)}}
	if t.SectionName != nil {
		pt.section = string(*t.SectionName)
	}
	if t.Group != "" || t.Kind != "Service" {
		pt.problem = &reason{string(gwv1.PolicyReasonInvalid), fmt.Sprintf("targetRef %s names kind %s in group %q; Weft applies BackendTLSPolicy to Services (group \"\", kind Service)", t.Name, t.Kind, t.Group)}
		return pt
	}
	svc := ix.service(pt.svc)
	switch {
	case svc == nil:
		pt.problem = &reason{string(gwv1.PolicyReasonTargetNotFound), fmt.Sprintf("Service %s does not exist; create it or fix targetRefs", pt.svc)}
	case pt.section != "" && !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == pt.section }):
		pt.problem = &reason{string(gwv1.PolicyReasonTargetNotFound), fmt.Sprintf("Service %s has no port named %q; fix targetRefs sectionName (it names a Service port)", pt.svc, pt.section)}
	}
	return pt
}

// forPort is the policy that applies to one port of a Service: the one
// that names the port, else the one for the whole Service.
func (ps *policies) forPort(svc objKey, port corev1.ServicePort) *policyState {
	if port.Name != "" {
		if p := ps.applies[svcSection{svc, port.Name}]; p != nil {
			return p
		}
	}
	return ps.applies[svcSection{svc, ""}]
}

// clusterName is the name the rule compiler gives the cluster of a
// Service port (resolve's serviceCluster); a test keeps the two in step.
func clusterName(svc objKey, port int32) string {
	return svc.ns + "/" + svc.name + ":" + strconv.Itoa(int(port))
}

// status is the policy's status, one entry per ancestor Gateway.
func (ps *policyState) status() resolve.ObjectStatus {
	st := resolve.ObjectStatus{Kind: KindBackendTLSPolicy, Namespace: ps.p.Namespace, Name: ps.p.Name, Generation: ps.p.Generation}
	accepted, resolved := ps.conditions()
	keys := make([]objKey, 0, len(ps.ancestors))
	for k := range ps.ancestors {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b objKey) int { return cmp.Or(strings.Compare(a.ns, b.ns), strings.Compare(a.name, b.name)) })
	for _, k := range keys {
		group, kind, ns := gwv1.Group(gwv1.GroupName), gwv1.Kind("Gateway"), gwv1.Namespace(k.ns)
		st.Parents = append(st.Parents, resolve.ParentStatus{
			Ref:        gwv1.ParentReference{Group: &group, Kind: &kind, Namespace: &ns, Name: gwv1.ObjectName(k.name)},
			Conditions: []metav1.Condition{accepted, resolved},
		})
	}
	return st
}

func (ps *policyState) conditions() (accepted, resolved metav1.Condition) {
	gen := ps.p.Generation
	resolved = cond(gwv1.BackendTLSPolicyConditionResolvedRefs, true, gwv1.BackendTLSPolicyReasonResolvedRefs, "all CA certificate references resolved", gen)
	if len(ps.refs) > 0 {
		rsn, msg := firstReason(ps.refs)
		resolved = cond(gwv1.BackendTLSPolicyConditionResolvedRefs, false, rsn, msg, gen)
	}
	var ok, bad []string
	var first *reason
	for _, t := range ps.targets {
		if t.problem == nil {
			ok = append(ok, t.svc.String()+sectionSuffix(t.section))
			continue
		}
		bad = append(bad, t.problem.msg)
		if first == nil {
			first = t.problem
		}
	}
	switch {
	case ps.invalid != nil:
		accepted = cond(gwv1.PolicyConditionAccepted, false, ps.invalid.reason, ps.invalid.msg, gen)
	case len(ok) == 0 && first != nil:
		accepted = cond(gwv1.PolicyConditionAccepted, false, first.reason, sentences(bad...), gen)
	case len(ps.tls.CACertificates) == 0 && !ps.tls.System:
		accepted = cond(gwv1.PolicyConditionAccepted, false, gwv1.BackendTLSPolicyReasonNoValidCACertificate, ps.tls.Invalid+"; requests to the targets fail until one is fixed", gen)
	default:
		msg := fmt.Sprintf("the gateway originates TLS (SNI %s) to Service %s", ps.tls.Hostname, strings.Join(ok, ", "))
		accepted = cond(gwv1.PolicyConditionAccepted, true, gwv1.PolicyReasonAccepted, sentences(append([]string{msg}, bad...)...), gen)
	}
	return accepted, resolved
}

func sectionSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " port " + s
}
