package weftv1

import (
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Sentinel errors of authorization policy validation.
var (
	ErrInvalidAuthz       = errors.New("invalid authorization policy")
	ErrInvalidAuthzSource = errors.New("invalid authorization source")
)

// Bounds on one authorization policy: what a CRD's schema allows, so that
// a policy the apiserver accepted is never refused for its size.
const (
	MaxAuthzRules       = 64
	MaxAuthzSources     = 64
	MaxAuthzPorts       = 64
	MaxAuthzHTTPMatches = 16
)

// ValidateAuthz checks the authorization policies alone, within
// DefaultLimits (Validate checks them too).
func (p *NodePolicy) ValidateAuthz() error { return p.validateAuthz(DefaultLimits) }

// validateAuthz checks the policy's authorization policies: each names an
// action, selects workloads of this policy, and has well-formed rules
// (http matches only at application level, no query parameter matches).
// Their regular expressions count toward the route budget (per policy) and
// the node budget.
func (p *NodePolicy) validateAuthz(l Limits) error {
	workloads := map[string]bool{}
	for _, w := range p.GetWorkloads() {
		workloads[w.GetNamespace()+"/"+w.GetName()] = true
	}
	var errs []error
	seen := map[string]bool{}
	for i, a := range p.GetAuthz() {
		where := fmt.Sprintf("authz[%d] %s", i, a.GetName())
		if seen[a.GetName()] {
			errs = append(errs, fmt.Errorf("%s: %w: duplicate name", where, ErrInvalidAuthz))
		}
		seen[a.GetName()] = true
		errs = append(errs, at(where, a.validate(l, workloads)))
	}
	return errors.Join(errs...)
}

// ValidateAuthz checks one authorization policy against DefaultLimits,
// with the workloads it may select ("namespace/name"). With nil workloads
// its workloads are not checked (the controller checks a compiled policy
// before it selects any).
func (a *AuthzPolicy) ValidateAuthz(workloads map[string]bool) error {
	return a.validate(DefaultLimits, workloads)
}

func (a *AuthzPolicy) validate(l Limits, workloads map[string]bool) error {
	if a == nil {
		return fmt.Errorf("%w: nil", ErrInvalidAuthz)
	}
	var errs []error
	if a.GetName() == "" {
		errs = append(errs, fmt.Errorf("%w: no name", ErrInvalidAuthz))
	}
	switch a.GetAction() {
	case AuthzAction_AUTHZ_ACTION_ALLOW, AuthzAction_AUTHZ_ACTION_DENY:
	default:
		errs = append(errs, fmt.Errorf("%w: action %v", ErrInvalidAuthz, a.GetAction()))
	}
	if workloads != nil && len(a.GetWorkloads()) == 0 {
		errs = append(errs, fmt.Errorf("%w: selects no workload", ErrInvalidAuthz))
	}
	for _, w := range a.GetWorkloads() {
		if workloads != nil && !workloads[w] {
			errs = append(errs, fmt.Errorf("%w: workload %q is not in the policy", ErrInvalidAuthz, w))
		}
	}
	if n := len(a.GetRules()); n > MaxAuthzRules {
		errs = append(errs, fmt.Errorf("%w: %d rules, at most %d", ErrInvalidAuthz, n, MaxAuthzRules))
	}
	regex := 0
	for i, r := range a.GetRules() {
		errs = append(errs, at(fmt.Sprintf("rule %d", i), r.validate(l, a.GetApplication())))
		for _, m := range r.GetHttp() {
			regex += (&Match{Http: m}).RegexProgramSize(l)
		}
	}
	if regex > l.MaxRouteRegexProgramSize {
		errs = append(errs, fmt.Errorf("%w: program sizes sum to %d, over %d", ErrRouteRegexTooLarge, regex, l.MaxRouteRegexProgramSize))
	}
	return errors.Join(errs...)
}

func (r *AuthzRule) validate(l Limits, application bool) error {
	if r == nil {
		return fmt.Errorf("%w: nil rule", ErrInvalidAuthz)
	}
	var errs []error
	if r.GetAnySource() && len(r.GetSources()) > 0 {
		errs = append(errs, fmt.Errorf("%w: any_source with sources", ErrInvalidAuthz))
	}
	if n := len(r.GetSources()); n > MaxAuthzSources {
		errs = append(errs, fmt.Errorf("%w: %d sources, at most %d", ErrInvalidAuthz, n, MaxAuthzSources))
	}
	for _, s := range r.GetSources() {
		errs = append(errs, s.Validate())
	}
	if n := len(r.GetPorts()); n > MaxAuthzPorts {
		errs = append(errs, fmt.Errorf("%w: %d ports, at most %d", ErrInvalidAuthz, n, MaxAuthzPorts))
	}
	for _, p := range r.GetPorts() {
		if p == 0 || p > 65535 {
			errs = append(errs, fmt.Errorf("%w: port %d", ErrInvalidAuthz, p))
		}
	}
	if len(r.GetHttp()) > 0 && !application {
		errs = append(errs, fmt.Errorf("%w: http matches in a network-level policy", ErrInvalidAuthz))
	}
	if n := len(r.GetHttp()); n > MaxAuthzHTTPMatches {
		errs = append(errs, fmt.Errorf("%w: %d http matches, at most %d", ErrInvalidAuthz, n, MaxAuthzHTTPMatches))
	}
	for i, m := range r.GetHttp() {
		if m == nil {
			errs = append(errs, fmt.Errorf("%w: http match %d is nil", ErrInvalidMatch, i))
			continue
		}
		if len(m.GetQueryParams()) > 0 {
			errs = append(errs, fmt.Errorf("%w: http match %d: query parameter matches are not supported in authorization", ErrInvalidMatch, i))
		}
		errs = append(errs, at(fmt.Sprintf("http match %d", i), m.validate(l)))
	}
	return errors.Join(errs...)
}

// Validate checks that exactly one of identity (a SPIFFE ID) and namespace
// (a DNS-1123 label) is set.
func (s *AuthzSource) Validate() error {
	if s == nil {
		return fmt.Errorf("%w: nil", ErrInvalidAuthzSource)
	}
	switch id, ns := s.GetIdentity(), s.GetNamespace(); {
	case id != "" && ns != "":
		return fmt.Errorf("%w: both identity and namespace", ErrInvalidAuthzSource)
	case id != "":
		if _, err := spiffeid.FromString(id); err != nil {
			return fmt.Errorf("%w: identity %q: %v", ErrInvalidAuthzSource, id, err)
		}
	case ns != "":
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("%w: namespace %q: %v", ErrInvalidAuthzSource, ns, errs)
		}
	default:
		return fmt.Errorf("%w: neither identity nor namespace", ErrInvalidAuthzSource)
	}
	return nil
}
