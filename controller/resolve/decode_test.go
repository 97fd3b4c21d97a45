package resolve

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	"sigs.k8s.io/yaml"

	policyv1a1 "github.com/weft-mesh/weft/api/policy/v1alpha1"
)

// caseOptions is the optional options document of a test case:
//
//	kind: ResolveOptions
//	include: [base/mesh.yaml]   # fixtures read before the case's objects
//	trustDomain: example.org
//	tunnelPort: 15009
//	maxNodeRegexProgramSize: 1000
type caseOptions struct {
	metav1.TypeMeta         `json:",inline"`
	Include                 []string `json:"include,omitempty"`
	TrustDomain             string   `json:"trustDomain,omitempty"`
	TunnelPort              uint32   `json:"tunnelPort,omitempty"`
	MaxNodeRegexProgramSize int      `json:"maxNodeRegexProgramSize,omitempty"`
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// loadCase reads a case file and the fixtures it includes into an Input.
func loadCase(path string) (Input, error) {
	var in Input
	data, err := expandCase(path)
	if err != nil {
		return in, err
	}
	return in, decodeInto(&in, data, true)
}

// expandCase returns the case file with its includes prepended, so the
// result decodes on its own (fuzz seeds use it).
func expandCase(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for _, doc := range docSep.Split(string(data), -1) {
		var tm caseOptions
		if yaml.Unmarshal([]byte(doc), &tm) != nil || tm.Kind != "ResolveOptions" {
			continue
		}
		for _, inc := range tm.Include {
			b, err := os.ReadFile(filepath.Join(filepath.Dir(path), inc))
			if err != nil {
				return nil, fmt.Errorf("include %s: %w", inc, err)
			}
			out.Write(b)
			out.WriteString("\n---\n")
		}
	}
	out.Write(data)
	return out.Bytes(), nil
}

// decodeInto appends every object of a multi-document YAML to in. strict
// rejects unknown fields (typos in fixtures).
func decodeInto(in *Input, data []byte, strict bool) error {
	unmarshal := func(b []byte, v any) error { return yaml.Unmarshal(b, v) }
	if strict {
		unmarshal = func(b []byte, v any) error { return yaml.UnmarshalStrict(b, v) }
	}
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return fmt.Errorf("document %d: %w", i, err)
		}
		var err error
		b := []byte(doc)
		switch tm.Kind {
		case "", "ResolveExpectations":
			// an all-comment document, or expectations (expect_test.go)
		case "ResolveOptions":
			var o caseOptions
			if err = unmarshal(b, &o); err == nil {
				if o.TrustDomain != "" {
					in.Options.TrustDomain = o.TrustDomain
				}
				if o.TunnelPort != 0 {
					in.Options.TunnelPort = o.TunnelPort
				}
				if o.MaxNodeRegexProgramSize != 0 {
					in.Options.MaxNodeRegexProgramSize = o.MaxNodeRegexProgramSize
				}
			}
		case "Namespace":
			var o corev1.Namespace
			if err = unmarshal(b, &o); err == nil {
				in.Namespaces = append(in.Namespaces, o)
			}
		case "Node":
			var o corev1.Node
			if err = unmarshal(b, &o); err == nil {
				in.Nodes = append(in.Nodes, o)
			}
		case "Service":
			var o corev1.Service
			if err = unmarshal(b, &o); err == nil {
				in.Services = append(in.Services, o)
			}
		case "EndpointSlice":
			var o discoveryv1.EndpointSlice
			if err = unmarshal(b, &o); err == nil {
				in.EndpointSlices = append(in.EndpointSlices, &o)
			}
		case "Pod":
			var o corev1.Pod
			if err = unmarshal(b, &o); err == nil {
				in.Pods = append(in.Pods, PodOf(&o))
			}
		case "HTTPRoute":
			var o gwv1.HTTPRoute
			if err = unmarshal(b, &o); err == nil {
				in.HTTPRoutes = append(in.HTTPRoutes, &o)
			}
		case "GRPCRoute":
			var o gwv1.GRPCRoute
			if err = unmarshal(b, &o); err == nil {
				in.GRPCRoutes = append(in.GRPCRoutes, &o)
			}
		case "TCPRoute":
			var o gwv1.TCPRoute
			if err = unmarshal(b, &o); err == nil {
				in.TCPRoutes = append(in.TCPRoutes, &o)
			}
		case "XBackendTrafficPolicy":
			var o gwxv1a1.XBackendTrafficPolicy
			if err = unmarshal(b, &o); err == nil {
				in.BackendTrafficPolicies = append(in.BackendTrafficPolicies, o)
			}
		case "XBackend":
			var o gwxv1a1.XBackend
			if err = unmarshal(b, &o); err == nil {
				in.Backends = append(in.Backends, o)
			}
		case "AuthorizationPolicy":
			var o policyv1a1.AuthorizationPolicy
			if err = unmarshal(b, &o); err == nil {
				in.AuthorizationPolicies = append(in.AuthorizationPolicies, o)
			}
		case "ServiceAccount":
			var o corev1.ServiceAccount
			if err = unmarshal(b, &o); err == nil {
				in.ServiceAccounts = append(in.ServiceAccounts, o)
			}
		default:
			return fmt.Errorf("document %d: kind %q is not an input of resolve", i, tm.Kind)
		}
		if err != nil {
			return fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
	}
	return nil
}
