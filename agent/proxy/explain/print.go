package explain

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/weft-mesh/weft/agent/proxy/outbound"
	"github.com/weft-mesh/weft/agent/proxy/route"
	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// printer writes the explanation and keeps the first write error.
type printer struct {
	w   io.Writer
	err error
}

func (e *printer) printf(format string, a ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, a...)
	}
}

// line writes one labelled line.
func (e *printer) line(label, format string, a ...any) {
	e.printf("%-9s %s\n", label, fmt.Sprintf(format, a...))
}

func ruleName(r *route.Rule) string {
	s := fmt.Sprintf("%s rule %d", r.Route, r.Index)
	if r.Name != "" {
		s += fmt.Sprintf(" (%s)", r.Name)
	}
	return s
}

// verdicts lists every match in precedence order with its outcome.
func (e *printer) verdicts(vs []route.Verdict, dec route.Decision) {
	e.line("matches", "in precedence order:")
	for _, v := range vs {
		outcome := "no: " + v.Why
		switch {
		case v.Matched && dec.Rule != nil && v.Position == dec.Match:
			outcome = "MATCH: decides"
		case v.Matched:
			outcome = "matches, but a match above decides"
		case dec.Rule != nil && v.Position > dec.Match:
			outcome = "not reached (" + v.Why + ")"
		}
		e.printf("  %2d. %s: %s\n      %s\n", v.Position+1, ruleName(v.Rule), v.Conditions, outcome)
	}
}

// rule describes the deciding rule: filters, backends, sessions, timeouts.
func (e *printer) rule(snap *outbound.Snapshot, r *route.Rule) {
	e.line("decision", "%s", ruleName(r))
	e.filters("filters", r.Filters)
	if r.RequestTimeout > 0 || r.BackendRequestTimeout > 0 {
		e.line("timeouts", "request %v, per backend attempt %v (0: none)", r.RequestTimeout, r.BackendRequestTimeout)
	}
	if r.Retry != nil {
		e.line("retry", "up to %d retries on status %v, backoff from %v", r.Retry.Attempts, r.Retry.Codes, r.Retry.Backoff)
	}
	total := uint32(0)
	for _, b := range r.Backends {
		total += b.Weight
	}
	e.line("backends", "chosen by weight (%d in all):", total)
	for _, b := range r.Backends {
		share := 0.0
		if total > 0 {
			share = 100 * float64(b.Weight) / float64(total)
		}
		name := b.Cluster
		if b.Invalid != "" {
			name = "invalid backend (" + b.Invalid + "): requests that pick it get 500"
		}
		e.printf("  weight %d (%.0f%%) %s\n", b.Weight, share, name)
		e.filters("    filters", b.Filters)
		e.session(b.Session)
		if b.Invalid == "" {
			e.cluster(snap, b.Cluster, "    ")
		}
	}
}

func (e *printer) filters(label string, fs []route.Filter) {
	if len(fs) == 0 {
		if label == "filters" {
			e.line(label, "none")
		}
		return
	}
	for i := range fs {
		e.printf("%-9s %s\n", label, fs[i].String())
	}
}

// session describes the backend's session persistence.
func (e *printer) session(s *weftv1.SessionPersistence) {
	if s == nil {
		e.printf("    session persistence: none (each request is balanced)\n")
		return
	}
	kind, where := "cookie", "the answer sets the cookie"
	if s.GetType() == weftv1.SessionPersistence_TYPE_HEADER {
		kind, where = "header", "the answer carries the header"
	}
	where = "a request carrying it goes to the endpoint it names; one without it goes where the weights send it and " + where
	var attrs []string
	if s.GetCookiePath() != "" {
		attrs = append(attrs, "path "+s.GetCookiePath())
	}
	if l := s.GetLifetime(); l != weftv1.SessionPersistence_LIFETIME_UNSPECIFIED {
		attrs = append(attrs, "lifetime "+strings.ToLower(strings.TrimPrefix(l.String(), "LIFETIME_")))
	}
	if d := s.GetAbsoluteTimeout(); d != nil {
		attrs = append(attrs, "absolute timeout "+d.AsDuration().String())
	}
	e.printf("    session persistence: %s %q %s: %s\n",
		kind, s.GetName(), strings.Join(attrs, ", "), where)
}

// cluster lists a cluster's endpoints.
func (e *printer) cluster(snap *outbound.Snapshot, name, indent string) {
	c, ok := snap.Clusters[name]
	if !ok {
		e.printf("%sendpoints of %s: the cluster is not in the policy (answer 503)\n", indent, name)
		return
	}
	if len(c.Endpoints) == 0 {
		e.printf("%sendpoints of %s: none (answer 503)\n", indent, name)
		return
	}
	e.printf("%sendpoints of %s:\n", indent, name)
	for i, ep := range c.Endpoints {
		state := "ready"
		switch {
		case !slices.Contains(c.Pickable, i):
			state = "not ready: gets no new request"
		case !ep.Ready:
			state = "serving while terminating (no ready endpoint left)"
		}
		how := "mTLS as " + ep.Identity.String()
		if ep.Plaintext {
			how = "plaintext (the pod is not in the mesh)"
		}
		e.printf("%s  %s pod %s node %s, %s, %s\n", indent, ep.Addr, ep.Pod, ep.Node, how, state)
	}
}
