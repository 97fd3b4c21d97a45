package v1alpha1

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// FromUnstructured converts an AuthorizationPolicy read by a dynamic client
// (the project generates no clientset for its own kind).
func FromUnstructured(u *unstructured.Unstructured) (*AuthorizationPolicy, error) {
	var p AuthorizationPolicy
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ToUnstructured converts p for a dynamic client, with its apiVersion and
// kind set.
func ToUnstructured(p *AuthorizationPolicy) (*unstructured.Unstructured, error) {
	c := *p
	c.APIVersion, c.Kind = Group+"/"+Version, Kind
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&c)
	if err != nil {
		return nil, err
	}
	return &unstructured.Unstructured{Object: m}, nil
}
