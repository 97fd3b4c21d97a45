package resolve

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// convertSession validates a sessionPersistence and converts it. owner is a
// stable name of the object that carries it; a cookie name is generated
// from it when none is set.
func (r *resolver) convertSession(sp *gwv1.SessionPersistence, owner string) (*weftv1.SessionPersistence, error) {
	out := &weftv1.SessionPersistence{Type: weftv1.SessionPersistence_TYPE_COOKIE}
	typ := gwv1.CookieBasedSessionPersistence
	if sp.Type != nil && *sp.Type != "" {
		typ = *sp.Type
	}
	if sp.AbsoluteTimeout != nil {
		d, err := parseDuration(*sp.AbsoluteTimeout)
		if err != nil {
			return nil, fmt.Errorf("absoluteTimeout %w", err)
		}
		if d <= 0 {
			return nil, errors.New("absoluteTimeout must be greater than zero")
		}
		out.AbsoluteTimeout = durationProto(d)
	}
	switch typ {
	case gwv1.CookieBasedSessionPersistence:
		if sp.Header != nil {
			return nil, errors.New("header must not be set when type is Cookie")
		}
		out.CookiePath = "/"
		out.Lifetime = weftv1.SessionPersistence_LIFETIME_SESSION
		if c := sp.Cookie; c != nil {
			if c.Name != nil && *c.Name != "" {
				if err := weftv1.ValidateCookieName(string(*c.Name)); err != nil {
					return nil, err
				}
				out.Name = string(*c.Name)
			}
			if c.Path != nil && *c.Path != "" {
				if err := weftv1.ValidateCookiePath(*c.Path); err != nil {
					return nil, err
				}
				out.CookiePath = *c.Path
			}
			if c.LifetimeType != nil {
				switch *c.LifetimeType {
				case gwv1.SessionCookieLifetimeType, "":
				case gwv1.PermanentCookieLifetimeType:
					if out.AbsoluteTimeout == nil || out.AbsoluteTimeout.AsDuration() < time.Second {
						return nil, errors.New("cookie lifetimeType Permanent requires an absoluteTimeout of at least 1s (it sets the cookie's Max-Age)")
					}
					out.Lifetime = weftv1.SessionPersistence_LIFETIME_PERMANENT
				default:
					return nil, fmt.Errorf("cookie lifetimeType %q is unknown; use Session or Permanent", *c.LifetimeType)
				}
			}
		}
		if out.Name == "" {
			out.Name = generatedCookieName(owner)
		}
	case gwv1.HeaderBasedSessionPersistence:
		if sp.Cookie != nil {
			return nil, errors.New("cookie must not be set when type is Header")
		}
		if sp.Header == nil || sp.Header.Name == "" {
			return nil, errors.New("type Header requires header.name")
		}
		if err := weftv1.ValidateHeaderName(string(sp.Header.Name)); err != nil {
			return nil, fmt.Errorf("header: %w", err)
		}
		out.Type = weftv1.SessionPersistence_TYPE_HEADER
		out.Name = strings.ToLower(string(sp.Header.Name))
	default:
		return nil, fmt.Errorf("type %q is unknown; use Cookie or Header", typ)
	}
	return out, nil
}

// generatedCookieName is stable for an owner and unique across owners.
func generatedCookieName(owner string) string {
	h := sha256.Sum256([]byte(owner))
	return "weft-session-" + hex.EncodeToString(h[:5])
}

// affinityConflict is the GEP-1619 rule: a Service with ClientIP session
// affinity cannot also get Gateway API session persistence.
func affinityConflict(svc *corev1.Service) error {
	if svc != nil && svc.Spec.SessionAffinity == corev1.ServiceAffinityClientIP {
		//lint:ignore ST1005 a status message that starts with the Kind it names
		return fmt.Errorf("Service %s/%s has sessionAffinity ClientIP, which cannot be combined with sessionPersistence (GEP-1619); remove one of them", svc.Namespace, svc.Name)
	}
	return nil
}

// policyEntry is one XBackendTrafficPolicy and what it resolved to.
type policyEntry struct {
	p       *gwxv1a1.XBackendTrafficPolicy
	session *weftv1.SessionPersistence
	// invalid says why the policy cannot apply at all.
	invalid   string
	notes     []string
	ancestors []ParentStatus
	// plain lists the Service ports whose plain traffic (no producer
	// route) the policy makes sticky.
	plain []string
}

// policyIndex holds XBackendTrafficPolicies by the Service they target.
type policyIndex struct {
	entries   []*policyEntry
	byService map[objKey]*policyEntry
}

func (pi *policyIndex) sessionFor(svc objKey) *weftv1.SessionPersistence {
	if e := pi.entryFor(svc); e != nil {
		return e.session
	}
	return nil
}

// entryFor is the policy that applies to a Service, nil when none does.
func (pi *policyIndex) entryFor(svc objKey) *policyEntry {
	if pi == nil {
		return nil
	}
	return pi.byService[svc]
}

// indexPolicies validates XBackendTrafficPolicies and picks, for each
// Service, the one that applies: the oldest, then by namespace/name.
func (r *resolver) indexPolicies(ps []gwxv1a1.XBackendTrafficPolicy) *policyIndex {
	pi := &policyIndex{byService: map[objKey]*policyEntry{}}
	for i := range ps {
		e := &policyEntry{p: &ps[i]}
		//lint:ignore SA1019 inline session persistence (GEP-1619) is part of v1.7.0 and Weft implements it beside XBackend
		if sp := e.p.Spec.SessionPersistence; sp != nil {
			s, err := r.convertSession(sp, "XBackendTrafficPolicy/"+e.p.Namespace+"/"+e.p.Name)
			if err != nil {
				e.invalid = "sessionPersistence: " + err.Error()
			} else {
				e.session = s
			}
		} else {
			e.notes = append(e.notes, "it sets no sessionPersistence, so it changes nothing")
		}
		if e.p.Spec.RetryConstraint != nil {
			e.notes = append(e.notes, "the retryConstraint field (retry budget) is not supported by Weft yet and is ignored")
		}
		pi.entries = append(pi.entries, e)
	}
	slices.SortStableFunc(pi.entries, func(a, b *policyEntry) int {
		if c := a.p.CreationTimestamp.Compare(b.p.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.p.Namespace, b.p.Namespace), strings.Compare(a.p.Name, b.p.Name))
	})
	for _, e := range pi.entries {
		seen := map[string]bool{}
		for _, t := range e.p.Spec.TargetRefs {
			if t.Group != "" || t.Kind != "Service" || seen[string(t.Name)] {
				continue
			}
			seen[string(t.Name)] = true
			key := objKey{e.p.Namespace, string(t.Name)}
			ns := gwv1.Namespace(e.p.Namespace)
			group, kind := gwv1.Group(""), gwv1.Kind("Service")
			ref := gwv1.ParentReference{Group: &group, Kind: &kind, Namespace: &ns, Name: t.Name}
			var c *metav1.Condition
			svc := r.ix.services[key]
			switch {
			case svc == nil:
				c = condFalse(condAccepted, policyReasonTargetNotFound, fmt.Sprintf("Service %s does not exist", key))
			case e.invalid != "":
				c = condFalse(condAccepted, policyReasonInvalid, e.invalid)
			case e.session != nil && affinityConflict(svc) != nil:
				c = condFalse(condAccepted, policyReasonInvalid, affinityConflict(svc).Error())
			case pi.byService[key] != nil:
				o := pi.byService[key].p
				c = condFalse(condAccepted, policyReasonConflicted, fmt.Sprintf("XBackendTrafficPolicy %s/%s is older and already applies to Service %s; only one policy per Service takes effect", o.Namespace, o.Name, key))
			default:
				pi.byService[key] = e
				msg := fmt.Sprintf("applies to every route backendRef that names Service %s", key)
				c = condTrue(condAccepted, policyReasonAccepted, joinMessages(append([]string{msg}, e.notes...)))
			}
			c.ObservedGeneration = e.p.Generation
			e.ancestors = append(e.ancestors, ParentStatus{Ref: ref, Conditions: []metav1.Condition{*c}})
		}
	}
	return pi
}

func (pi *policyIndex) statuses() []ObjectStatus {
	var out []ObjectStatus
	for _, e := range pi.entries {
		if len(e.ancestors) == 0 {
			continue
		}
		if len(e.plain) > 0 {
			for i := range e.ancestors {
				c := &e.ancestors[i].Conditions[0]
				if c.Status == metav1.ConditionTrue {
					c.Message = joinMessages([]string{c.Message, "Plain traffic to " + strings.Join(e.plain, ", ") + " (ports with an HTTP, h2c or gRPC appProtocol and no producer route) is sticky too"})
				}
			}
		}
		out = append(out, ObjectStatus{
			Kind: KindXBackendTrafficPolicy, Namespace: e.p.Namespace, Name: e.p.Name,
			Generation: e.p.Generation, Parents: e.ancestors,
		})
	}
	return out
}
