package gateway

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwxv1a1 "sigs.k8s.io/gateway-api/apisx/v1alpha1"
	"sigs.k8s.io/yaml"

	"github.com/weft-mesh/weft/controller/resolve"
)

// caseOptions is the optional options document of a test case:
//
//	kind: GatewayOptions
//	include: [base/conformance.yaml]   # fixtures read before the case's objects
//	bundleVersions: {gateways.gateway.networking.k8s.io: v1.6.0}
//	supportedFeatures: [Gateway, HTTPRoute]
//	reservedPorts: [15021]
//	addresses: [192.0.2.10]            # given to every Gateway not listed below
//	provisioned:                       # what provisioning reports, per Gateway
//	- {namespace: ns, name: gw, addresses: [{type: IPAddress, value: 10.0.0.1}], unusable: {10.0.0.2: in use}}
//	pending: [ns/gw]                   # Gateways provisioning reports nothing about
//
// Without bundleVersions every CRD is bundle v1.7.0; without addresses
// every Gateway gets 192.0.2.10.
type caseOptions struct {
	metav1.TypeMeta   `json:",inline"`
	Include           []string           `json:"include,omitempty"`
	BundleVersions    map[string]string  `json:"bundleVersions,omitempty"`
	SupportedFeatures []gwv1.FeatureName `json:"supportedFeatures,omitempty"`
	ReservedPorts     []int32            `json:"reservedPorts,omitempty"`
	Addresses         []string           `json:"addresses,omitempty"`
	Provisioned       []caseProvisioned  `json:"provisioned,omitempty"`
	Pending           []string           `json:"pending,omitempty"`
}

type caseProvisioned struct {
	Namespace string                      `json:"namespace"`
	Name      string                      `json:"name"`
	Addresses []gwv1.GatewayStatusAddress `json:"addresses,omitempty"`
	Unusable  map[string]string           `json:"unusable,omitempty"`
	// NotReady: no pod of the data plane is Ready (else one is)
	NotReady bool   `json:"notReady,omitempty"`
	Workload string `json:"workload,omitempty"`
	Refused  string `json:"refused,omitempty"`
}

// defaultBundle is the CRDs of the standard channel at the pinned version.
var defaultBundle = map[string]string{
	"gatewayclasses.gateway.networking.k8s.io":     "v1.7.0",
	"gateways.gateway.networking.k8s.io":           "v1.7.0",
	"httproutes.gateway.networking.k8s.io":         "v1.7.0",
	"grpcroutes.gateway.networking.k8s.io":         "v1.7.0",
	"referencegrants.gateway.networking.k8s.io":    "v1.7.0",
	"backendtlspolicies.gateway.networking.k8s.io": "v1.7.0",
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// loadCase reads a case file and the fixtures it includes into an Input.
func loadCase(path string) (Input, error) {
	data, err := expandCase(path)
	if err != nil {
		return Input{}, err
	}
	return decode(data, true)
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
		var o caseOptions
		if yaml.Unmarshal([]byte(doc), &o) != nil || o.Kind != "GatewayOptions" {
			continue
		}
		for _, inc := range o.Include {
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

// decode turns a multi-document YAML into an Input. strict rejects
// unknown fields (typos in fixtures).
func decode(data []byte, strict bool) (Input, error) {
	var in Input
	unmarshal := func(b []byte, v any) error { return yaml.Unmarshal(b, v) }
	if strict {
		unmarshal = func(b []byte, v any) error { return yaml.UnmarshalStrict(b, v) }
	}
	opts := caseOptions{}
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			return in, fmt.Errorf("document %d: %w", i, err)
		}
		var err error
		if tm.Kind == "GatewayOptions" {
			var o caseOptions
			if err = unmarshal([]byte(doc), &o); err == nil {
				opts = mergeOptions(opts, o)
			}
		} else {
			err = decodeObject(&in, tm.Kind, []byte(doc), unmarshal)
		}
		if err != nil {
			return in, fmt.Errorf("document %d (%s): %w", i, tm.Kind, err)
		}
	}
	applyOptions(&in, opts)
	return in, nil
}

func mergeOptions(a, b caseOptions) caseOptions {
	if b.BundleVersions != nil {
		a.BundleVersions = b.BundleVersions
	}
	a.SupportedFeatures = append(a.SupportedFeatures, b.SupportedFeatures...)
	a.ReservedPorts = append(a.ReservedPorts, b.ReservedPorts...)
	a.Addresses = append(a.Addresses, b.Addresses...)
	a.Provisioned = append(a.Provisioned, b.Provisioned...)
	a.Pending = append(a.Pending, b.Pending...)
	return a
}

func applyOptions(in *Input, o caseOptions) {
	in.Options.BundleVersions = o.BundleVersions
	if in.Options.BundleVersions == nil {
		in.Options.BundleVersions = defaultBundle
	}
	in.Options.SupportedFeatures = o.SupportedFeatures
	in.Options.ReservedPorts = o.ReservedPorts
	addrs := o.Addresses
	if len(addrs) == 0 {
		addrs = []string{"192.0.2.10"}
	}
	listed := map[string]bool{}
	for _, p := range o.Provisioned {
		listed[p.Namespace+"/"+p.Name] = true
		ready := 1
		if p.NotReady {
			ready = 0
		}
		in.Provisioned = append(in.Provisioned, Provisioned{Namespace: p.Namespace, Name: p.Name, Addresses: p.Addresses, Unusable: p.Unusable, ReadyPods: ready, Workload: p.Workload, Refused: p.Refused})
	}
	for _, gw := range in.Gateways {
		k := gw.Namespace + "/" + gw.Name
		if listed[k] || slices.Contains(o.Pending, k) {
			continue
		}
		p := Provisioned{Namespace: gw.Namespace, Name: gw.Name, ReadyPods: 1}
		for _, a := range addrs {
			t := gwv1.IPAddressType
			p.Addresses = append(p.Addresses, gwv1.GatewayStatusAddress{Type: &t, Value: a})
		}
		in.Provisioned = append(in.Provisioned, p)
	}
}

// decodeObject appends one Kubernetes object to in.
func decodeObject(in *Input, kind string, b []byte, unmarshal func([]byte, any) error) error {
	switch kind {
	case "", "GatewayExpectations":
		// an all-comment document, or expectations (expect_test.go)
		return nil
	case "GatewayClass":
		return add(&in.GatewayClasses, b, unmarshal)
	case "Gateway":
		return add(&in.Gateways, b, unmarshal)
	case "HTTPRoute":
		return add(&in.HTTPRoutes, b, unmarshal)
	case "GRPCRoute":
		return add(&in.GRPCRoutes, b, unmarshal)
	case "TLSRoute":
		return add(&in.TLSRoutes, b, unmarshal)
	case "TCPRoute":
		return add(&in.TCPRoutes, b, unmarshal)
	case "ReferenceGrant":
		return add(&in.ReferenceGrants, b, unmarshal)
	case "BackendTLSPolicy":
		return add(&in.BackendTLSPolicies, b, unmarshal)
	case "Namespace":
		return add(&in.Namespaces, b, unmarshal)
	case "Secret":
		return add(&in.Secrets, b, unmarshal)
	case "ConfigMap":
		return add(&in.ConfigMaps, b, unmarshal)
	case "Service":
		return add(&in.Services, b, unmarshal)
	case "EndpointSlice":
		return add[*discoveryv1.EndpointSlice](&in.EndpointSlices, b, unmarshal)
	case "Pod":
		var p corev1.Pod
		if err := unmarshal(b, &p); err != nil {
			return err
		}
		in.Pods = append(in.Pods, resolve.PodOf(&p))
		return nil
	case "XBackend":
		return add[gwxv1a1.XBackend](&in.Backends, b, unmarshal)
	case "XBackendTrafficPolicy":
		return add[gwxv1a1.XBackendTrafficPolicy](&in.BackendTrafficPolicies, b, unmarshal)
	}
	return fmt.Errorf("kind %q is not an input of controller/gateway", kind)
}

func add[T any](list *[]T, b []byte, unmarshal func([]byte, any) error) error {
	var o T
	if err := unmarshal(b, &o); err != nil {
		return err
	}
	*list = append(*list, o)
	return nil
}
