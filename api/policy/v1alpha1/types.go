// Package v1alpha1 is Weft's AuthorizationPolicy (policy.weft.dev/v1alpha1):
// identity-based east-west authorization shaped after Gateway API GEP-3779
// ("Identity Based Authz for East-West Traffic"), so that a policy written
// for it moves to the upstream type by changing its apiVersion once
// upstream ships one. Field names and meanings are the GEP's; Weft adds
// action DENY (a matching DENY rule wins over every ALLOW) and enforcement
// level Application with httpMatches (HTTPRoute match types) on rules.
//
// The CRD (manifests/chart/crds/policy.weft.dev_authorizationpolicies.yaml)
// is written by hand from these types: the project has no CRD generator for
// its own types. The kubebuilder markers say what its schema enforces; an
// integration test (controller/authz_apiserver_test.go) applies it to a real
// apiserver.
//
// +groupName=policy.weft.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Group, Version and the resource of AuthorizationPolicy.
const (
	Group    = "policy.weft.dev"
	Version  = "v1alpha1"
	Kind     = "AuthorizationPolicy"
	Resource = "authorizationpolicies"
)

// GroupVersionResource of AuthorizationPolicy, for dynamic clients.
var GroupVersionResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: Resource}

// AuthorizationPolicy says which identities may reach a set of pods of its
// namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=authzpolicy
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AuthorizationPolicySpec `json:"spec"`
	Status PolicyStatus            `json:"status,omitempty"`
}

// Action is what a policy does to the requests its rules match.
//
// +kubebuilder:validation:Enum=ALLOW;DENY
type Action string

const (
	// ActionAllow: when a workload has any ALLOW policy, a request is
	// allowed only if it matches a rule of one of them (GEP-3779).
	ActionAllow Action = "ALLOW"
	// ActionDeny (Weft): a request that matches a rule of a DENY policy is
	// refused, whatever ALLOW policies say.
	ActionDeny Action = "DENY"
)

// EnforcementLevel says where a policy is enforced and which attributes its
// rules may use.
//
// +kubebuilder:validation:Enum=Network;Application
type EnforcementLevel string

const (
	// LevelNetwork: connections, by source identity and destination port;
	// a refused connection is closed before any byte reaches the pod.
	LevelNetwork EnforcementLevel = "Network"
	// LevelApplication (Weft): also HTTP and gRPC requests, by method, path
	// and headers (httpMatches); a refused request is answered 403 (gRPC:
	// PERMISSION_DENIED) and its connection stays usable.
	LevelApplication EnforcementLevel = "Application"
)

// AuthorizationPolicySpec is the desired state.
type AuthorizationPolicySpec struct {
	// TargetRefs select the pods of the policy's namespace it applies to:
	// group "" and kind Pod, with a label selector (an empty selector
	// selects every pod of the namespace).
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	TargetRefs []PolicyTargetReferenceWithLabelSelectors `json:"targetRefs"`

	// Action applies to the requests that match any rule.
	Action Action `json:"action"`

	// Rules: a request matches the policy when it matches any rule. No
	// rules: an ALLOW policy allows nothing, a DENY policy denies nothing.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Rules []AuthorizationRule `json:"rules,omitempty"`

	// EnforcementLevel: Network, or Application for rules with httpMatches.
	EnforcementLevel EnforcementLevel `json:"enforcementLevel"`
}

// PolicyTargetReferenceWithLabelSelectors is GEP-3779's target: pods of the
// policy's namespace by label selector.
type PolicyTargetReferenceWithLabelSelectors struct {
	// Group must be "" (or "core").
	Group gwv1.Group `json:"group"`
	// Kind must be Pod.
	Kind gwv1.Kind `json:"kind"`
	// Selector of the target pods; empty: every pod of the namespace.
	Selector *metav1.LabelSelector `json:"selector"`
}

// AuthorizationRule matches a request when the request matches all of its
// criteria.
type AuthorizationRule struct {
	// Sources: the request's verified identity must match one. Omitted:
	// any source; an empty list: no source.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Sources []AuthorizationSource `json:"sources,omitempty"`

	// NetworkAttributes narrow the rule to some destination ports.
	//
	// +optional
	NetworkAttributes *AuthorizationNetworkAttributes `json:"networkAttributes,omitempty"`

	// HTTPMatches (Weft, enforcementLevel Application only): the request
	// must match one, with HTTPRoute match semantics (path, method,
	// headers; query parameters are not supported). Omitted: any request.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=16
	HTTPMatches []gwv1.HTTPRouteMatch `json:"httpMatches,omitempty"`
}

// AuthorizationSourceType names the kind of an AuthorizationSource.
//
// +kubebuilder:validation:Enum=ServiceAccount;SPIFFE
type AuthorizationSourceType string

const (
	// SourceServiceAccount: a Kubernetes ServiceAccount of the cluster's
	// trust domain, or "*" for every ServiceAccount of a namespace.
	SourceServiceAccount AuthorizationSourceType = "ServiceAccount"
	// SourceSPIFFE: a SPIFFE ID, compared exactly.
	SourceSPIFFE AuthorizationSourceType = "SPIFFE"
)

// AuthorizationSource is one identity (or set of identities) a rule matches.
type AuthorizationSource struct {
	// Type says which of the other fields is set.
	Type AuthorizationSourceType `json:"type"`
	// SPIFFE ID: spiffe://<trust domain>/<path>.
	//
	// +optional
	SPIFFE *string `json:"spiffe,omitempty"`
	// ServiceAccount of the cluster.
	//
	// +optional
	ServiceAccount *AuthorizationSourceServiceAccount `json:"serviceAccount,omitempty"`
}

// AuthorizationSourceServiceAccount names a ServiceAccount.
type AuthorizationSourceServiceAccount struct {
	// Namespace of the ServiceAccount; the policy's when unset.
	//
	// +optional
	Namespace *gwv1.Namespace `json:"namespace,omitempty"`
	// Name of the ServiceAccount; "*" for every ServiceAccount of the
	// namespace.
	Name string `json:"name"`
}

// AuthorizationNetworkAttributes are L4 properties of the destination.
type AuthorizationNetworkAttributes struct {
	// Ports of the destination pod; omitted: every port.
	//
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Ports []gwv1.PortNumber `json:"ports,omitempty"`
}

// PolicyStatus is the observed state.
type PolicyStatus struct {
	// Conditions: Accepted.
	//
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// InForce (Weft) is the spec Weft enforces: the current one when it is
	// accepted, else the last accepted one (a policy that stops compiling
	// changes nothing in force). Written by the controller, read back by
	// every replica, so what is in force survives restarts.
	//
	// +optional
	InForce *PolicyInForce `json:"inForce,omitempty"`
}

// PolicyInForce is an accepted generation of a policy's spec.
type PolicyInForce struct {
	Generation int64                   `json:"generation"`
	Spec       AuthorizationPolicySpec `json:"spec"`
}

// Condition type and reasons of a policy's status.
const (
	// ConditionAccepted: True when the policy is in force as written.
	ConditionAccepted = "Accepted"

	// ReasonAccepted: the policy is valid and in force.
	ReasonAccepted = "Accepted"
	// ReasonInvalidSelector: a target's label selector cannot be parsed.
	ReasonInvalidSelector = "InvalidSelector"
	// ReasonInvalidTarget: a target is not group "" kind Pod.
	ReasonInvalidTarget = "InvalidTarget"
	// ReasonUnknownServiceAccount: a source names a ServiceAccount that
	// does not exist.
	ReasonUnknownServiceAccount = "UnknownServiceAccount"
	// ReasonInvalidSource: a source is malformed (a bad SPIFFE ID, a type
	// without its field, a namespace or name that cannot be one).
	ReasonInvalidSource = "InvalidSource"
	// ReasonUnsupportedValue: an attribute Weft does not support, or one
	// the enforcement level does not allow (httpMatches at Network level,
	// query parameter matches, regular expressions over the limits).
	ReasonUnsupportedValue = "UnsupportedValue"
)
