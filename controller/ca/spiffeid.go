package ca

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"k8s.io/apimachinery/pkg/util/validation"
)

// DefaultTrustDomain is the trust domain when Config sets none.
const DefaultTrustDomain = "cluster.local"

// ErrBadID: a SPIFFE ID that is not spiffe://<td>/ns/<namespace>/sa/<sa>.
var ErrBadID = errors.New("not a workload SPIFFE ID")

// WorkloadID returns spiffe://<td>/ns/<namespace>/sa/<serviceAccount>.
func WorkloadID(td spiffeid.TrustDomain, namespace, serviceAccount string) (spiffeid.ID, error) {
	if err := checkNames(namespace, serviceAccount); err != nil {
		return spiffeid.ID{}, err
	}
	return spiffeid.FromSegments(td, "ns", namespace, "sa", serviceAccount)
}

// ParseWorkloadID splits a workload SPIFFE ID of trust domain td into its
// namespace and service account.
func ParseWorkloadID(td spiffeid.TrustDomain, id spiffeid.ID) (namespace, serviceAccount string, err error) {
	if !id.MemberOf(td) {
		return "", "", fmt.Errorf("%w: %s is not in trust domain %q", ErrBadID, id, td.Name())
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
