package route

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	weftv1 "github.com/weft-mesh/weft/api/weft/v1"
)

type pathKind uint8

const (
	pathAny pathKind = iota // no path match: PathPrefix "/"
	pathExact
	pathPrefix
	pathRegex
)

type strKind uint8

const (
	strAny strKind = iota // gRPC service or method left empty
	strExact
	strRegex
)

// strMatch is a compiled header, query parameter, gRPC service or gRPC
// method match.
type strMatch struct {
	kind  strKind
	name  string // canonical header key, or query parameter name
	value string
	re    *weftv1.Regex
}

// matches reports whether v satisfies s; tooLong is the error that
// refuses the request when the regex matching of v is over a limit.
func (s *strMatch) matches(c *evalCtx, v string, tooLong error) bool {
	switch s.kind {
	case strExact:
		return v == s.value
	case strRegex:
		return c.regex(s.re, v, tooLong)
	}
	return true
}

// match is one compiled weftv1.Match.
type match struct {
	rule int32

	// HTTP
	pathKind pathKind
	path     string // exact path, or prefix without trailing "/" ("/" for root)
	pathRe   *weftv1.Regex
	pathLit  string // literal prefix every pathRe match starts with
	method   string
	headers  []strMatch
	query    []strMatch

	// gRPC (headers above are shared)
	grpc bool
	svc  strMatch
	meth strMatch
}

// evalCtx carries the per-request values computed once, and what bounds
// the request's regex matching.
type evalCtx struct {
	req       *Request
	path      string
	rawQuery  string
	query     url.Values
	queryDone bool
	svc, meth string

	ctx  context.Context
	done <-chan struct{}
	// maxInput is the longest value matched against a regex.
	maxInput int
	// budget is what is left of the request's regex budget, in
	// instruction-bytes (program size times value length).
	budget int
	// err stops the evaluation: a limit refused the request or ctx is
	// done.
	err error
}

// regex matches v against re within the request's bounds. RE2 runs in
// time linear in len(v) times the program size, so the cost charged is
// re.Size * (len(v)+1); a value over maxInput or a cost over what is left
// of the budget refuses the request with tooLong, and a done context
// stops it, checked before every regex.
func (c *evalCtx) regex(re *weftv1.Regex, v string, tooLong error) bool {
	if c.err != nil {
		return false
	}
	if len(v) > c.maxInput {
		c.err = fmt.Errorf("%w: a regular expression match needs a %d-byte value, over the limit %d", tooLong, len(v), c.maxInput)
		return false
	}
	cost := re.Size * (len(v) + 1)
	if cost > c.budget {
		c.err = fmt.Errorf("%w: the request's regular expression matching is over its budget of %d instruction-bytes", tooLong, c.budget)
		return false
	}
	c.budget -= cost
	if c.done != nil {
		select {
		case <-c.done:
			c.err = fmt.Errorf("select: %w", c.ctx.Err())
			return false
		default:
		}
	}
	return re.MatchString(v)
}

func (c *evalCtx) queryValues() url.Values {
	if !c.queryDone {
		c.queryDone = true
		if c.req.Query != nil {
			c.query = c.req.Query
		} else {
			// A malformed pair is skipped; the well-formed ones still count.
			c.query, _ = url.ParseQuery(c.rawQuery)
		}
	}
	return c.query
}

func (m *match) matchedPrefix() string {
	switch m.pathKind {
	case pathPrefix:
		return m.path
	case pathAny:
		if !m.grpc {
			return "/"
		}
	}
	return ""
}

// part names the condition of a match a request failed (partNone: it
// matched). The explainer reports it; Select only asks whether it is
// partNone.
type part uint8

const (
	partNone part = iota
	partGRPCService
	partGRPCMethod
	partPath
	partMethod
	partHeader // index: the header match
	partQuery  // index: the query parameter match
)

// miss says why a request failed a match: the first condition, in the
// order eval checks them, that did not hold.
type miss struct {
	part  part
	index int
}

func (m *match) eval(c *evalCtx) bool { return m.check(c).part == partNone }

// check evaluates the match and returns the first condition that failed
// (partNone when the request satisfies the match). It is the only
// implementation of matching: Select and Explain both call it.
func (m *match) check(c *evalCtx) miss {
	if m.grpc {
		if !m.svc.matches(c, c.svc, ErrURITooLong) {
			return miss{part: partGRPCService}
		}
		if !m.meth.matches(c, c.meth, ErrURITooLong) {
			return miss{part: partGRPCMethod}
		}
	} else {
		switch m.pathKind {
		case pathExact:
			if c.path != m.path {
				return miss{part: partPath}
			}
		case pathPrefix:
			if !prefixMatches(m.path, c.path) {
				return miss{part: partPath}
			}
		case pathRegex:
			if !strings.HasPrefix(c.path, m.pathLit) || !c.regex(m.pathRe, c.path, ErrURITooLong) {
				return miss{part: partPath}
			}
		}
		if m.method != "" && c.req.Method != m.method {
			return miss{part: partMethod}
		}
	}
	for i := range m.headers {
		h := &m.headers[i]
		vs := c.req.Header[h.name]
		if len(vs) == 0 {
			return miss{part: partHeader, index: i}
		}
		v := vs[0]
		if len(vs) > 1 {
			// Several field lines are one comma-separated value (RFC 9110 5.3).
			v = strings.Join(vs, ",")
		}
		if !h.matches(c, v, ErrHeaderTooLong) {
			return miss{part: partHeader, index: i}
		}
	}
	if len(m.query) > 0 {
		q := c.queryValues()
		for i := range m.query {
			qm := &m.query[i]
			// A repeated parameter is matched on its first value.
			vs := q[qm.name]
			if len(vs) == 0 || !qm.matches(c, vs[0], ErrURITooLong) {
				return miss{part: partQuery, index: i}
			}
		}
	}
	return miss{}
}

// prefixMatches implements PathPrefix element semantics: prefix (already
// without trailing "/") matches path equal to it or continuing with "/".
// The root prefix "/" matches every path.
func prefixMatches(prefix, path string) bool {
	if prefix == "/" {
		return true
	}
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/'
}

// normalisePrefix drops trailing slashes ("/foo/" -> "/foo"); "/" stays.
func normalisePrefix(p string) string {
	for len(p) > 1 && p[len(p)-1] == '/' {
		p = p[:len(p)-1]
	}
	return p
}

// regexDir is the longest path-element prefix every match of a regex with
// literal prefix lit has: lit up to its last "/" ("/a/b" for "/a/b/c"),
// or "/" when lit has no inner "/" (the regex is then a root candidate).
func regexDir(lit string) string {
	if len(lit) == 0 || lit[0] != '/' {
		return ""
	}
	i := strings.LastIndexByte(lit, '/')
	if i <= 0 {
		return "/"
	}
	return lit[:i]
}

// prefixNode is a trie of path prefixes by path element.
type prefixNode struct {
	children map[string]*prefixNode
	matches  []int32
}

func (n *prefixNode) insert(prefix string, pos int32) {
	cur := n
	if prefix != "/" {
		for _, seg := range strings.Split(prefix[1:], "/") {
			if cur.children == nil {
				cur.children = make(map[string]*prefixNode)
			}
			next := cur.children[seg]
			if next == nil {
				next = &prefixNode{}
				cur.children[seg] = next
			}
			cur = next
		}
	}
	cur.matches = append(cur.matches, pos)
}

// collect appends the match lists of every trie node whose prefix matches
// path.
func (n *prefixNode) collect(path string, lists [][]int32) [][]int32 {
	if n == nil {
		return lists
	}
	cur := n
	if len(cur.matches) > 0 {
		lists = append(lists, cur.matches)
	}
	if len(path) == 0 || path[0] != '/' {
		return lists
	}
	rest := path[1:]
	for cur.children != nil {
		seg, tail, more := strings.Cut(rest, "/")
		next := cur.children[seg]
		if next == nil {
			break
		}
		cur = next
		if len(cur.matches) > 0 {
			lists = append(lists, cur.matches)
		}
		if !more {
			break
		}
		rest = tail
	}
	return lists
}
