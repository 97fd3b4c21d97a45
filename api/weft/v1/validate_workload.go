package weftv1

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrInvalidWorkload: a workload the agent could not act on as written.
var ErrInvalidWorkload = errors.New("invalid workload")

// validateWorkloads checks what the agent's datapath trusts about a
// workload: a strict one (MtlsStrict) has at least one address and every
// address parses, so the datapath can never be asked to protect a pod it
// cannot name (which would leave it open while the policy says strict).
func (p *NodePolicy) validateWorkloads() error {
	var errs []error
	for i, w := range p.GetWorkloads() {
		if !w.GetMtlsStrict() {
			continue
		}
		where := fmt.Sprintf("workload[%d] %s/%s", i, w.GetNamespace(), w.GetName())
		if w.GetUid() == "" {
			errs = append(errs, fmt.Errorf("%s: %w: strict workload without a uid", where, ErrInvalidWorkload))
		}
		if len(w.GetIps()) == 0 {
			errs = append(errs, fmt.Errorf("%s: %w: strict workload without an address", where, ErrInvalidWorkload))
		}
		for _, ip := range w.GetIps() {
			if a, err := netip.ParseAddr(ip); err != nil || a.Zone() != "" || a.IsUnspecified() {
				errs = append(errs, fmt.Errorf("%s: %w: address %q", where, ErrInvalidWorkload, ip))
			}
		}
	}
	return errors.Join(errs...)
}
