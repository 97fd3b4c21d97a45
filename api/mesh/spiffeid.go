package mesh

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
)

// ErrBadID: a SPIFFE ID that is not spiffe://<td>/ns/<namespace>/sa/<sa>, or
// names that cannot form one.
var ErrBadID = errors.New("not a workload SPIFFE ID")

// WorkloadID returns the identity of a service account:
// spiffe://<td>/ns/<namespace>/sa/<serviceAccount>. The namespace must be a
// DNS-1123 label and the service account a DNS-1123 subdomain (what the API
// server accepts); anything else is ErrBadID.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if td.IsZero() {
		return spiffeid.ID{}, fmt.Errorf("%w: no trust domain", ErrBadID)
	}
	if err := checkNames(namespace, serviceAccount); err != nil {
		return spiffeid.ID{}, err
	}
	id, err := spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrBadID, err)
	}
	return id, nil
}

// ParseWorkloadID splits a workload SPIFFE ID of trust domain td into its
// namespace and service account; the inverse of WorkloadID.
func ParseWorkloadID(td spiffeid.TrustDomain, id spiffeid.ID) (namespace, serviceAccount string, err error) {
	if id.IsZero() || !id.MemberOf(td) {
		return "", "", fmt.Errorf("%w: %q is not in trust domain %q", ErrBadID, id.String(), td.Name())
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" {
		return "", "", fmt.Errorf("%w: path of %s is not /ns/<namespace>/sa/<serviceaccount>", ErrBadID, id)
	}
	if err := checkNames(seg[1], seg[3]); err != nil {
		return "", "", fmt.Errorf("%s: %w", id, err)
	}
	return seg[1], seg[3], nil
}

func checkNames(namespace, serviceAccount string) error {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("%w: namespace %q: %s", ErrBadID, namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(serviceAccount); len(errs) > 0 {
		return fmt.Errorf("%w: service account %q: %s", ErrBadID, serviceAccount, strings.Join(errs, "; "))
	}
	return nil
}

// ParseTrustDomain parses a configured trust domain name; "" is
// DefaultTrustDomain.
func ParseTrustDomain(name string) (spiffeid.TrustDomain, error) {
	if name == "" {
		name = DefaultTrustDomain
	}
	td, err := spiffeid.TrustDomainFromString(name)
	if err == nil && td.Name() != name {
		// go-spiffe also accepts a whole SPIFFE ID; a setting must be a name.
		err = errors.New("not a bare trust domain name")
	}
	if err != nil {
		return spiffeid.TrustDomain{}, fmt.Errorf("trust domain %q: %w", name, err)
	}
	return td, nil
}
