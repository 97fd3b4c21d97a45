package resolve

import (
	"fmt"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// regexBudget is the node budget this resolution keeps to.
func (o Options) regexBudget() int {
	b := weftv1.DefaultLimits.MaxNodeRegexProgramSize
	if o.MaxNodeRegexProgramSize > 0 {
		b = min(b, o.MaxNodeRegexProgramSize)
	}
	return b
}

// programmed reports whether a parentRef of the route won a Service port.
func (rt *route) programmed() bool {
	for _, pr := range rt.parents {
		if len(pr.won) > 0 {
			return true
		}
	}
	return false
}

// fitRegexBudget keeps every node's policy within the node budget of
// compiled regular expressions (weftv1.Limits.MaxNodeRegexProgramSize,
// which the agent enforces by NACKing the whole policy): it sums the
// program sizes of the distinct patterns of the programmed routes in route
// precedence order (oldest first), and drops, with a status, each rule
// whose new patterns would go over (authorization policies' patterns are
// counted first, see AuthzRegexBudget). Older routes keep their rules; the
// route that arrives last is the one cut. Every node gets the same
// Services (and so the same patterns), so one sum holds for every node.
// It reports whether it dropped a rule; attachment must then be redone
// (a route may have lost its last rule).
func (r *resolver) fitRegexBudget(routes []*route) bool {
	budget := r.ix.opts.regexBudget() - r.authzRegex
	seen := map[string]bool{}
	total, dropped := 0, false
	for _, rt := range routes {
		if !rt.programmed() {
			continue
		}
		// copy on the first drop: rules may be the compiled route's own
		var kept []*compiledRule
		for i, cr := range rt.rules {
			pats := cr.patterns
			add := 0
			for p, n := range pats {
				if !seen[p] {
					add += n
				}
			}
			if add > 0 && total+add > budget {
				var name *gwv1.SectionName
				if cr.rule.Name != "" {
					n := gwv1.SectionName(cr.rule.Name)
					name = &n
				}
				rt.drop(int(cr.rule.Index), name, fmt.Sprintf("its regular expressions (program size %d) would bring the node policy's distinct regular expressions to a program size of %d, over the node budget %d; older routes keep theirs", add, total+add, budget))
				if kept == nil {
					kept = append(make([]*compiledRule, 0, len(rt.rules)), rt.rules[:i]...)
				}
				dropped = true
				continue
			}
			for p := range pats {
				seen[p] = true
			}
			total += add
			if kept != nil {
				kept = append(kept, cr)
			}
		}
		if kept != nil {
			rt.rules = kept
		}
	}
	return dropped
}

// attachWithinBudget attaches the routes, then drops what would take the
// node policy over its regex budget and attaches again until nothing more
// is dropped (each round only drops rules, so it ends). dropped reports
// whether the budget dropped a rule.
func (r *resolver) attachWithinBudget(routes []*route) (ports map[portKey]*portState, claims portClaims, dropped bool) {
	ports, claims = r.attach(routes, r.prevPorts.len())
	for r.fitRegexBudget(routes) {
		dropped = true
		for _, rt := range routes {
			rt.parents = nil
		}
		ports, claims = r.attach(routes, len(claims))
	}
	return ports, claims, dropped
}
