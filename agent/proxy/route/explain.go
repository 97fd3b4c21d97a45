package route

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

// Verdict is one match of a table judged against a request: what the
// match asks for and, when the request fails it, the first condition that
// did not hold. weftctl explain prints them.
type Verdict struct {
	// Rule is the match's rule; Position its place in precedence order.
	Rule     *Rule
	Position int
	// Conditions is the match as configured ("PathPrefix /api, method GET,
	// header X-Canary = \"on\""); "any request" when it has none.
	Conditions string
	Matched    bool
	// Why the request failed the match (empty when it matched).
	Why string
}

// Explain judges every match of the table, in precedence order, against
// req with the code Select runs (match.check), and returns the verdicts
// with Select's own decision (or its error). Each match is judged with a
// fresh regex budget, so a match Select never reached is still explained;
// the decision is SelectContext's, never recomputed here.
func (t *Table) Explain(req *Request) ([]Verdict, Decision, error) {
	dec, err := t.SelectContext(context.Background(), req)
	if t == nil || req == nil {
		return nil, dec, err
	}
	out := make([]Verdict, 0, len(t.matches))
	for i := range t.matches {
		m := &t.matches[i]
		c := t.newEval(context.Background(), req)
		ms := m.check(&c)
		v := Verdict{Rule: &t.rules[m.rule], Position: i, Conditions: m.describe(), Matched: ms.part == partNone && c.err == nil}
		switch {
		case c.err != nil:
			v.Why = c.err.Error()
		case !v.Matched:
			v.Why = m.why(&c, ms)
		}
		out = append(out, v)
	}
	return out, dec, err
}

// describe writes the match's conditions as a user configured them.
func (m *match) describe() string {
	var parts []string
	if m.grpc {
		if m.svc.kind != strAny {
			parts = append(parts, "service "+m.svc.describe())
		}
		if m.meth.kind != strAny {
			parts = append(parts, "method "+m.meth.describe())
		}
	} else {
		switch m.pathKind {
		case pathExact:
			parts = append(parts, "Exact "+m.path)
		case pathPrefix:
			parts = append(parts, "PathPrefix "+m.path)
		case pathRegex:
			parts = append(parts, "RegularExpression "+pattern(m.pathRe))
		}
		if m.method != "" {
			parts = append(parts, "method "+m.method)
		}
	}
	for i := range m.headers {
		parts = append(parts, "header "+m.headers[i].name+" "+m.headers[i].describe())
	}
	for i := range m.query {
		parts = append(parts, "query "+m.query[i].name+" "+m.query[i].describe())
	}
	if len(parts) == 0 {
		return "any request"
	}
	return strings.Join(parts, ", ")
}

func (s *strMatch) describe() string {
	switch s.kind {
	case strExact:
		return "= " + strconv.Quote(s.value)
	case strRegex:
		return "~ " + pattern(s.re)
	}
	return "any"
}

// pattern is the pattern a user wrote (Regex holds it anchored).
func pattern(re *weftv1.Regex) string {
	p := re.String()
	p = strings.TrimPrefix(p, "^(?:")
	return strconv.Quote(strings.TrimSuffix(p, ")$"))
}

// why says in words which condition of m the request failed.
func (m *match) why(c *evalCtx, ms miss) string {
	switch ms.part {
	case partGRPCService:
		return fmt.Sprintf("service %q is not %s", c.svc, m.svc.describe())
	case partGRPCMethod:
		return fmt.Sprintf("method %q is not %s", c.meth, m.meth.describe())
	case partPath:
		switch m.pathKind {
		case pathExact:
			return fmt.Sprintf("path %s is not %s", c.path, m.path)
		case pathPrefix:
			return fmt.Sprintf("path %s is not under %s", c.path, m.path)
		}
		return fmt.Sprintf("path %s does not match %s", c.path, pattern(m.pathRe))
	case partMethod:
		return fmt.Sprintf("method is %s, not %s", c.req.Method, m.method)
	case partHeader:
		h := &m.headers[ms.index]
		vs := c.req.Header[h.name]
		if len(vs) == 0 {
			return "no header " + h.name
		}
		return fmt.Sprintf("header %s is %q, not %s", h.name, strings.Join(vs, ","), h.describe())
	case partQuery:
		q := &m.query[ms.index]
		vs := c.queryValues()[q.name]
		if len(vs) == 0 {
			return "no query parameter " + q.name
		}
		return fmt.Sprintf("query parameter %s is %q, not %s", q.name, vs[0], q.describe())
	}
	return ""
}

// String describes the filter as configured (weftctl explain).
func (f *Filter) String() string {
	switch f.Kind {
	case FilterRequestHeaders:
		return "RequestHeaderModifier " + f.Headers.String()
	case FilterResponseHeaders:
		return "ResponseHeaderModifier " + f.Headers.String()
	case FilterRedirect:
		r := f.Redirect
		var b []string
		if r.Scheme != "" {
			b = append(b, "scheme "+r.Scheme)
		}
		if r.Hostname != "" {
			b = append(b, "hostname "+r.Hostname)
		}
		if r.Port != 0 {
			b = append(b, fmt.Sprintf("port %d", r.Port))
		}
		if r.Path != nil {
			b = append(b, r.Path.String())
		}
		return fmt.Sprintf("RequestRedirect %d %s", r.StatusCode, strings.Join(b, ", "))
	case FilterRewrite:
		var b []string
		if f.Rewrite.Hostname != "" {
			b = append(b, "hostname "+f.Rewrite.Hostname)
		}
		if f.Rewrite.Path != nil {
			b = append(b, f.Rewrite.Path.String())
		}
		return "URLRewrite " + strings.Join(b, ", ")
	case FilterMirror:
		return fmt.Sprintf("RequestMirror to %s (%d/%d of requests)", f.Mirror.Cluster, f.Mirror.Numerator, f.Mirror.Denominator)
	case FilterCORS:
		return "CORS origins " + strings.Join(f.CORS.AllowOrigins, " ")
	}
	return "unknown filter"
}

// String lists the modifier's edits: set, add, remove.
func (m *HeaderModifier) String() string {
	var b []string
	for _, h := range m.Set {
		b = append(b, fmt.Sprintf("set %s: %s", h.Name, h.Value))
	}
	for _, h := range m.Add {
		b = append(b, fmt.Sprintf("add %s: %s", h.Name, h.Value))
	}
	for _, h := range m.Remove {
		b = append(b, "remove "+h)
	}
	return strings.Join(b, ", ")
}

// String names the path modification.
func (m *PathModifier) String() string {
	if m.Kind == PathFull {
		return "path ReplaceFullPath " + m.Value
	}
	return "path ReplacePrefixMatch " + m.Value
}
