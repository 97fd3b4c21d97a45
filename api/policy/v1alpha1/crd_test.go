package v1alpha1

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The CRD is written by hand from these types: every JSON field of the
// package's own types must be in its schema, and the schema must have no
// property the types lack (a field the apiserver keeps and Weft ignores).
func TestCRDSchemaMatchesTypes(t *testing.T) {
	b, err := os.ReadFile("../../../manifests/chart/crds/policy.weft.dev_authorizationpolicies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Group string `json:"group"`
			Names struct {
				Kind   string `json:"kind"`
				Plural string `json:"plural"`
			} `json:"names"`
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema jsonSchema `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatal(err)
	}
	if crd.Spec.Group != Group || crd.Spec.Names.Kind != Kind || crd.Spec.Names.Plural != Resource || len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != Version {
		t.Fatalf("CRD names %+v", crd.Spec)
	}
	root := crd.Spec.Versions[0].Schema.OpenAPIV3Schema
	compare(t, "spec", reflect.TypeFor[AuthorizationPolicySpec](), root.Properties["spec"])
	compare(t, "status", reflect.TypeFor[PolicyStatus](), root.Properties["status"])
}

type jsonSchema struct {
	Type                  string                `json:"type"`
	Properties            map[string]jsonSchema `json:"properties"`
	Items                 *jsonSchema           `json:"items"`
	Required              []string              `json:"required"`
	PreserveUnknownFields bool                  `json:"x-kubernetes-preserve-unknown-fields"`
	AdditionalProperties  *jsonSchema           `json:"additionalProperties"`
}

func compare(t *testing.T, path string, typ reflect.Type, s jsonSchema) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if typ.Kind() == reflect.Slice {
		if s.Type != "array" || s.Items == nil {
			t.Errorf("%s: schema type %q, want an array", path, s.Type)
			return
		}
		compare(t, path+"[]", typ.Elem(), *s.Items)
		return
	}
	if typ.Kind() != reflect.Struct || typ.PkgPath() != reflect.TypeFor[AuthorizationPolicy]().PkgPath() {
		return // upstream types (HTTPRouteMatch, LabelSelector, Condition): their own schemas
	}
	if s.PreserveUnknownFields && len(s.Properties) == 0 {
		return
	}
	fields := map[string]reflect.StructField{}
	for f := range typ.Fields() {
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		fields[name] = f
		p, ok := s.Properties[name]
		if !ok {
			t.Errorf("%s.%s: not in the CRD schema", path, name)
			continue
		}
		required := !strings.Contains(opts, "omitempty")
		if required != slices.Contains(s.Required, name) && name != "status" {
			t.Errorf("%s.%s: required in the jsonSchema %v, in the type %v", path, name, !required, required)
		}
		compare(t, path+"."+name, f.Type, p)
	}
	for name := range s.Properties {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s.%s: in the CRD jsonSchema, not in the type", path, name)
		}
	}
}
